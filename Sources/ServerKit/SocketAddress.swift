#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 socket address.
public struct SocketAddress: Sendable, CustomStringConvertible, Equatable {
    public enum Family: Sendable { case ipv4, ipv6 }

    public let family: Family
    /// Network-order bytes: 4 for IPv4, 16 for IPv6.
    public let addressBytes: [UInt8]
    public let port: UInt16

    /// Parses a numeric IPv4 or IPv6 host (brackets allowed around IPv6) or `localhost`.
    public init(host rawHost: String, port: Int) throws(UsageError) {
        guard (0...65535).contains(port) else {
            throw UsageError("port \(port) is out of range: use 0 to 65535 (0 picks a free port)")
        }
        var host = rawHost
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host == "localhost" { host = "127.0.0.1" }
        self.port = UInt16(port)
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            family = .ipv4
            addressBytes = withUnsafeBytes(of: &v4) { Array($0) }
        } else if inet_pton(AF_INET6, host, &v6) == 1 {
            family = .ipv6
            addressBytes = withUnsafeBytes(of: &v6) { Array($0) }
        } else if host.isEmpty {
            throw UsageError("the host is empty: give an IPv4 or IPv6 address such as 127.0.0.1 or ::1")
        } else {
            throw UsageError("host '\(rawHost)' is not an IPv4 or IPv6 address: use a numeric address such as 127.0.0.1 or ::1, or localhost")
        }
    }

    /// Parses `HOST:PORT`, with IPv6 hosts in brackets (`[::1]:7000`).
    public init(parsing text: String) throws(UsageError) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw UsageError("'\(text)' has an unclosed '[': write IPv6 addresses as [::1]:7000")
            }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else {
                throw UsageError("'\(text)' has no port: write it as HOST:PORT, for example [::1]:7000")
            }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw UsageError("'\(text)' has no port: write it as HOST:PORT, for example 127.0.0.1:7000")
            }
            host = text[..<colon]
            if host.contains(":") {
                throw UsageError("'\(text)' is ambiguous: put IPv6 addresses in brackets, for example [::1]:7000")
            }
            portText = text[text.index(after: colon)...]
        }
        guard let port = Int(portText) else {
            throw UsageError("port '\(portText)' in '\(text)' is not a number: use 0 to 65535")
        }
        try self.init(host: String(host), port: port)
    }

    /// Reads the address out of a `sockaddr_storage` filled by the kernel.
    public init?(storage: sockaddr_storage) {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            let sin = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in.self) }
            var addr = sin.sin_addr
            family = .ipv4
            addressBytes = withUnsafeBytes(of: &addr) { Array($0) }
            port = UInt16(bigEndian: sin.sin_port)
        case AF_INET6:
            let sin6 = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in6.self) }
            var addr = sin6.sin6_addr
            family = .ipv6
            addressBytes = withUnsafeBytes(of: &addr) { Array($0) }
            port = UInt16(bigEndian: sin6.sin6_port)
        default:
            return nil
        }
    }

    public func withPort(_ port: UInt16) -> SocketAddress {
        var copy = self
        copy = SocketAddress(family: family, addressBytes: addressBytes, port: port)
        return copy
    }

    private init(family: Family, addressBytes: [UInt8], port: UInt16) {
        self.family = family
        self.addressBytes = addressBytes
        self.port = port
    }

    public var domain: Int32 { family == .ipv4 ? AF_INET : AF_INET6 }

    /// Calls `body` with this address as a `sockaddr` and its length.
    public func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        switch family {
        case .ipv4:
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: addressBytes) }
            return try withUnsafePointer(to: &sin) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .ipv6:
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: addressBytes) }
            return try withUnsafePointer(to: &sin6) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
    }

    /// The host part as text, without brackets.
    public var hostText: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        addressBytes.withUnsafeBytes { bytes in
            _ = inet_ntop(domain, bytes.baseAddress, &buffer, socklen_t(buffer.count))
        }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var description: String {
        family == .ipv4 ? "\(hostText):\(port)" : "[\(hostText)]:\(port)"
    }
}
