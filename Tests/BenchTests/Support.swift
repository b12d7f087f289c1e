import BenchRunner
import LoadGeneration
import ResultAnalysis
import ResultReporting
import ServerKit
import Protocols
import BackendKit
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A deliberately wrong echo server on 127.0.0.1, one thread per connection, for proving that
/// the load generator notices.
final class BrokenServer: @unchecked Sendable {
    enum Mode: Sendable {
        /// Echo, but invert the byte at this stream offset.
        case flipByte(at: Int)
        /// Echo, but leave out the byte at this stream offset.
        case dropByte(at: Int)
        /// Send each of the first two connections' bytes to the other one.
        case crossed
        /// Echo, but leave out `length` bytes from stream offset `at`.
        case dropBlock(at: Int, length: Int)
        /// Echo the first `bytes` bytes, then swallow the rest.
        case stallAfter(bytes: Int)
    }

    let address: SocketAddress
    private let listener: Int32
    private let mode: Mode
    private let sockets = Mutex<[Int32]>([])
    private var acceptor: OSThread?

    init(mode: Mode) throws {
        self.mode = mode
        let (fds, bound) = try Socket.listenOnEachLoop(try SocketAddress(host: "127.0.0.1", port: 0), count: 1, nonBlocking: false)
        listener = fds.take(0)!.release()  // this test server closes it in stop()
        address = bound
        acceptor = try OSThread(name: "broken-accept") { [self] in acceptLoop() }
    }

    private func acceptLoop() {
        var pending: Int32 = -1
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { return }
            sockets.withLock { $0.append(fd) }
            switch mode {
            case .crossed:
                if pending < 0 { pending = fd; continue }
                let (a, b) = (pending, fd)
                spawn { Self.pump(from: a, to: b) { _, _ in } }
                spawn { Self.pump(from: b, to: a) { _, _ in } }
                pending = -1
            case .flipByte(let at):
                spawn {
                    Self.pump(from: fd, to: fd) { bytes, offset in
                        if (offset..<(offset + bytes.count)).contains(at) { bytes[at - offset] ^= 0xFF }
                    }
                }
            case .dropByte(let at):
                spawn {
                    Self.pump(from: fd, to: fd) { bytes, offset in
                        if (offset..<(offset + bytes.count)).contains(at) { bytes.remove(at: at - offset) }
                    }
                }
            case .dropBlock(let at, let length):
                spawn {
                    Self.pump(from: fd, to: fd) { bytes, offset in
                        // Keep the bytes of this chunk outside [at, at + length).
                        let lower = max(at - offset, 0), upper = min(at + length - offset, bytes.count)
                        if lower < upper { bytes.removeSubrange(lower..<upper) }
                    }
                }
            case .stallAfter(let limit):
                spawn {
                    Self.pump(from: fd, to: fd) { bytes, offset in
                        if offset + bytes.count > limit { bytes.removeSubrange(max(limit - offset, 0)...) }
                    }
                }
            }
        }
    }

    private func spawn(_ body: @escaping @Sendable () -> Void) {
        (try? OSThread(name: "broken-conn", body))?.detach()
    }

    private static func pump(from source: Int32, to destination: Int32, alter: (inout [UInt8], Int) -> Void) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var offset = 0
        while true {
            let n = recv(source, &buffer, buffer.count, 0)
            if n <= 0 { return }
            var chunk = Array(buffer[..<n])
            alter(&chunk, offset)
            offset += n
            var sent = 0
            while sent < chunk.count {
                let w = chunk.withUnsafeBytes { send(destination, $0.baseAddress! + sent, chunk.count - sent, Int32(MSG_NOSIGNAL)) }
                if w <= 0 { return }
                sent += w
            }
        }
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        acceptor?.join()
        close(listener)
        for fd in sockets.withLock({ $0 }) { shutdown(fd, Int32(SHUT_RDWR)) }
        usleep(20_000)
        for fd in sockets.withLock({ $0 }) { close(fd) }
    }
}

