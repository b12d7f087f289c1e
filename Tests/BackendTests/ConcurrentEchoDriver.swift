import ServerKit
import Protocols
import BackendKit
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Drives many connections at once from one thread with poll(2): each connection sends
/// `rounds` messages of its own pattern and verifies each echo before sending the next.
enum ConcurrentEchoDriver {
    struct Report { var completed = 0; var mismatches = 0 }

    private struct Connection {
        var fd: Int32
        var pattern: PatternStream
        var message: [UInt8] = []
        var sent = 0
        var received = 0
        var round = 0
        var broken = false
        var done = false
    }

    static func run(address: SocketAddress, connections count: Int, rounds: Int, maxMessage: Int, timeout: Double) throws -> Report {
        var conns: [Connection] = []
        defer { for c in conns { close(c.fd) } }
        for i in 0..<count {
            let fd = try Socket.connect(to: address)
            Socket.setNonBlocking(fd)
            var c = Connection(fd: fd, pattern: PatternStream(seed: UInt64(i) &+ 1000))
            c.message = c.pattern.bytes(Int.random(in: 1...maxMessage))
            conns.append(c)
        }
        var buffer = [UInt8](repeating: 0, count: 65536)
        var pfds = conns.map { pollfd(fd: $0.fd, events: Int16(POLLIN | POLLOUT), revents: 0) }
        let deadline = Date().addingTimeInterval(timeout)
        var report = Report()
        while report.completed + report.mismatches < count && Date() < deadline {
            for i in pfds.indices {
                let c = conns[i]
                pfds[i].fd = (c.done || c.broken) ? -1 : c.fd
                pfds[i].events = Int16(POLLIN) | (c.sent < c.message.count ? Int16(POLLOUT) : 0)
            }
            guard poll(&pfds, nfds_t(pfds.count), 200) >= 0 else { continue }
            for i in pfds.indices where pfds[i].revents != 0 {
                if pfds[i].revents & Int16(POLLOUT) != 0 && conns[i].sent < conns[i].message.count {
                    let n = conns[i].message.withUnsafeBytes {
                        send(conns[i].fd, $0.baseAddress! + conns[i].sent, conns[i].message.count - conns[i].sent, Int32(MSG_NOSIGNAL))
                    }
                    if n > 0 { conns[i].sent += n }
                }
                if pfds[i].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                    let n = recv(conns[i].fd, &buffer, buffer.count, 0)
                    if n <= 0 {
                        if n == 0 || (errno != EAGAIN && errno != EINTR) { conns[i].broken = true; report.mismatches += 1 }
                        continue
                    }
                    let start = conns[i].received
                    if start + n > conns[i].sent || buffer[..<n].elementsEqual(conns[i].message[start..<(start + n)]) == false {
                        conns[i].broken = true
                        report.mismatches += 1
                        continue
                    }
                    conns[i].received += n
                    if conns[i].received == conns[i].message.count {
                        conns[i].round += 1
                        if conns[i].round == rounds {
                            conns[i].done = true
                            report.completed += 1
                        } else {
                            conns[i].message = conns[i].pattern.bytes(Int.random(in: 1...maxMessage))
                            conns[i].sent = 0
                            conns[i].received = 0
                        }
                    }
                }
            }
        }
        return report
    }
}
