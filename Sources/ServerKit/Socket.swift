#if canImport(Glibc)
import Glibc
#endif

/// Socket set-up shared by the backends and the harness. These run once per listener or
/// connection, not per message, so they report errors as sentences a person can act on.
public enum Socket {
    /// Creates a listening TCP socket bound to `address`.
    /// - Parameters:
    ///   - reusePort: set `SO_REUSEPORT` so several loops can each own a listener on one port.
    ///   - nonBlocking: make accept non-blocking (event-loop backends).
    public static func listen(on address: SocketAddress, reusePort: Bool, nonBlocking: Bool, backlog: Int32 = 4096) throws -> OwnedDescriptor {
        var type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        if nonBlocking { type |= Int32(SOCK_NONBLOCK.rawValue) }
        let made = socket(address.domain, type, 0)
        guard made >= 0 else { throw describe(SystemError("socket", .current), address) }
        let fd = OwnedDescriptor(adopting: made)  // closed if anything below throws
        try setOption(fd.raw, SOL_SOCKET, SO_REUSEADDR, 1)
        if reusePort { try setOption(fd.raw, SOL_SOCKET, SO_REUSEPORT, 1) }
        let rc = address.withSockAddr { bind(fd.raw, $0, $1) }
        if rc != 0 { throw describe(SystemError("bind", .current), address) }
        if Glibc.listen(fd.raw, backlog) != 0 { throw describe(SystemError("listen", .current), address) }
        return fd
    }

    /// Turns a bind/listen failure into a sentence that names the address and the fix.
    static func describe(_ error: SystemError, _ address: SocketAddress) -> Error {
        switch error.errno {
        case .addressInUse:
            return UsageError("port \(address.port) on \(address.hostText) is already in use: pick another port, or 0 for a free one")
        case .accessDenied:
            return UsageError("port \(address.port) needs root: pick a port above 1023 or run as root")
        case .addressNotAvailable:
            return UsageError("address \(address.hostText) is not on this machine: bind 127.0.0.1, ::1 or one of this host's addresses")
        case .tooManyOpenFiles, .tooManyOpenFilesInSystem:
            return UsageError("no file descriptor is free for the listening socket: raise the limit (ulimit -n)")
        default:
            return UsageError("cannot listen on \(address): \(error)")
        }
    }

    public static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws(SystemError) {
        var v = value
        if setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            throw SystemError("setsockopt", .current)
        }
    }

    /// Disables Nagle's algorithm: an echo must leave at once, not wait for more bytes.
    public static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    public static func setNonBlocking(_ fd: Int32, _ enabled: Bool = true) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, enabled ? flags | O_NONBLOCK : flags & ~O_NONBLOCK)
    }

    /// The address a socket is bound to.
    public static func localAddress(_ fd: Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return rc == 0 ? SocketAddress(storage: storage) : nil
    }

    /// Connects a blocking TCP socket to `address` (used by clients and tests).
    /// `receiveBuffer` sets `SO_RCVBUF` before connecting: set later, a small one leaves the
    /// window scale negotiated for the default, and the sender may stall on zero-window probes.
    public static func connect(to address: SocketAddress, noDelay: Bool = true, receiveBuffer: Int32? = nil) throws(SystemError) -> Int32 {
        let made = socket(address.domain, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard made >= 0 else { throw SystemError("socket", .current) }
        let fd = OwnedDescriptor(adopting: made)  // closed if the connect fails
        if var size = receiveBuffer {
            setsockopt(fd.raw, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        while true {
            let rc = address.withSockAddr { Glibc.connect(fd.raw, $0, $1) }
            if rc == 0 { break }
            let error = Errno.current
            if error == .interrupted { continue }
            throw SystemError("connect", error)
        }
        if noDelay { setNoDelay(fd.raw) }
        return fd.release()
    }
}

extension Socket {
    /// Binds `count` listeners on one port (one per event loop; with several, `SO_REUSEPORT`
    /// lets the kernel spread new connections across them). Port 0 is resolved by the first
    /// bind. Returns the descriptors and the address actually bound.
    ///
    /// `SO_REUSEPORT` would also let this server silently share a port with another process of
    /// the same user, so a probe socket without it holds the port first: if anything else is
    /// listening there, the probe's bind fails with "already in use".
    public static func listenOnEachLoop(_ address: SocketAddress, count: Int, nonBlocking: Bool) throws -> (DescriptorHandoff, SocketAddress) {
        if count <= 1 {
            let listener = try listen(on: address, reusePort: false, nonBlocking: nonBlocking)
            guard let bound = localAddress(listener.raw) else { throw SystemError("getsockname", .current) }
            return (DescriptorHandoff(adopting: [listener.release()]), bound)
        }
        let made = socket(address.domain, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard made >= 0 else { throw describe(SystemError("socket", .current), address) }
        let probe = OwnedDescriptor(adopting: made)
        try setOption(probe.raw, SOL_SOCKET, SO_REUSEADDR, 1)
        if address.withSockAddr({ bind(probe.raw, $0, $1) }) != 0 {
            throw describe(SystemError("bind", .current), address)
        }
        guard let bound = localAddress(probe.raw) else { throw SystemError("getsockname", .current) }
        var fds: [Int32] = []
        do {
            for _ in 0..<count {
                fds.append(try listen(on: bound, reusePort: true, nonBlocking: nonBlocking).release())
            }
        } catch {
            _ = DescriptorHandoff(adopting: fds)  // taken by nobody: closes the ones made
            throw error
        }
        return (DescriptorHandoff(adopting: fds), bound)
    }
}
