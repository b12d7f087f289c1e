import BenchRunner
import LoadGeneration
import ResultAnalysis
import ResultReporting
import ServerKit
import Protocols
import BackendKit
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Starts `iobench serve --backend kind --port 0 extra…`, optionally under a lower fd limit.
func startServer(_ kind: BackendKind, _ extra: [String] = [], fdLimit: Int? = nil) throws -> ServerProcess {
    let serve = ["serve", "--backend", kind.rawValue, "--port", "0", "--quit-on-eof"] + extra
    if let fdLimit {
        return try ServerProcess(executable: "/bin/sh",
                                 arguments: ["-c", "ulimit -n \(fdLimit) && exec \"$0\" \"$@\"", iobenchPath] + serve)
    }
    return try ServerProcess(executable: iobenchPath, arguments: serve)
}

/// A deterministic byte stream per connection, so lost, duplicated, reordered or crossed bytes
/// show up as mismatches.
struct PatternStream {
    var state: UInt64
    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }

    mutating func next() -> UInt8 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return UInt8(truncatingIfNeeded: state >> 24)
    }

    mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in next() } }
}

/// A blocking client socket whose every wait is bounded.
final class Client: @unchecked Sendable {
    let fd: Int32

    init(_ address: SocketAddress, timeoutSeconds: Int = 15, receiveBuffer: Int32? = nil) throws {
        fd = try Socket.connect(to: address, receiveBuffer: receiveBuffer)
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("send", .current)
            }
            offset += n
        }
    }

    /// Reads exactly `count` bytes (throws on timeout or early end of stream).
    func receive(_ count: Int) throws -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = result.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, count - got, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("recv", .current)
            }
            if n == 0 { throw SystemError("recv (end of stream after \(got) of \(count) bytes)", Errno(rawValue: 0)) }
            got += n
        }
        return result
    }

    /// Reads until the server closes; returns everything read.
    func receiveToEnd(limit: Int = 64 << 20) throws -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while result.count <= limit {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("recv", .current)
            }
            if n == 0 { return result }
            result.append(contentsOf: chunk[..<n])
        }
        return result
    }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// Closes with an RST instead of a FIN (SO_LINGER with a zero timeout).
    func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        shutdown(fd, Int32(SHUT_RD))
    }

    /// One round trip of `bytes`, verified.
    func echo(_ bytes: [UInt8]) throws -> Bool {
        try send(bytes)
        return try receive(bytes.count) == bytes
    }
}

/// Server CPU time (user + system) in seconds, from /proc/PID/stat.
func cpuSeconds(pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return -1 }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // After the command: state is field 3, so utime (14) and stime (15) are at offsets 11 and 12.
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return -1 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Resident memory of a process in bytes, from /proc/PID/status.
func residentBytes(pid: Int32) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return -1 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kb = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? -1
        return kb * 1024
    }
    return -1
}

