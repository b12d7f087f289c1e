import NIOPeer
import IoUring
import Epoll
import Blocking
import Backends
import BenchRunner
import LoadGeneration
import ResultAnalysis
import ResultReporting
import ServerKit
import Protocols
import BackendKit
import Foundation
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// One conformance suite, run against every backend through a real `iobench serve` child
/// process on loopback. Serialized: several tests measure the server's CPU and memory.
@Suite(.serialized)
struct EchoConformanceTests {
    static let backends = Backends.kinds
    /// The three models. SwiftNIO 2.101 (the peer) is left out of one promise it does not keep
    /// and that is not ours to fix, seen here: out of descriptors it spins a core at 100%. (The 3
    /// descriptors it seemed to leave after shutdown were libdispatch's event manager, which
    /// its shutdown starts and which lives as long as the process: `serve` now counts from
    /// after it, and NIO is held to 0 like the rest.)
    static let models = Backends.models

    @Test("echo is exact for 1 B to 16 MiB written in random chunks", arguments: backends)
    func exactEchoInRandomChunks(kind: BackendKind) throws {
        let server = try startServer(kind)
        defer { server.stop() }
        var generator = SystemRandomNumberGenerator()
        for (i, size) in [1, 2, 100, 4096, 65_537, 1 << 20, 16 << 20].enumerated() {
            var pattern = PatternStream(seed: UInt64(i + 1))
            let payload = pattern.bytes(size)
            let chunks: [Int] = {
                var sizes: [Int] = []
                var left = size
                while left > 0 {
                    let n = min(left, Int.random(in: 1...(size > 100_000 ? 200_000 : 3000), using: &generator))
                    sizes.append(n)
                    left -= n
                }
                return sizes
            }()
            let client = try Client(server.address)
            let writeError = Mutex<String?>(nil)
            let writer = try OSThread(name: "test-writer") {
                do {
                    var offset = 0
                    for n in chunks {
                        try client.send(Array(payload[offset..<(offset + n)]))
                        offset += n
                    }
                    client.shutdownWrite()
                } catch {
                    writeError.withLock { $0 = "\(error)" }
                }
            }
            let echoed = try client.receiveToEnd()
            writer.join()
            #expect(writeError.withLock { $0 } == nil)
            #expect(echoed.count == size, "\(kind): \(size) B sent in \(chunks.count) chunks, \(echoed.count) B echoed")
            #expect(echoed == payload, "\(kind): \(size) B echo differs")
        }
        let stats = try server.stats()
        #expect(stats.bytesIn == stats.bytesOut)
    }

    @Test("1,000 concurrent connections each get their own bytes back", arguments: backends)
    func thousandConcurrentConnections(kind: BackendKind) throws {
        let server = try startServer(kind)
        defer { server.stop() }
        let report = try ConcurrentEchoDriver.run(address: server.address, connections: 1000, rounds: 5, maxMessage: 2000, timeout: 60)
        #expect(report.mismatches == 0, "\(kind): \(report.mismatches) connections got bytes that were not theirs")
        #expect(report.completed == 1000, "\(kind): only \(report.completed) of 1000 connections finished")
        #expect(try eventually { try server.stats().connectionsOpen == 0 }, "\(kind): connections left open")
    }

    @Test("half-close: everything still owed is echoed, then the server closes", arguments: backends)
    func halfClose(kind: BackendKind) throws {
        let server = try startServer(kind)
        defer { server.stop() }
        var pattern = PatternStream(seed: 99)
        let payload = pattern.bytes(300_000)
        let client = try Client(server.address)
        let writer = try OSThread(name: "test-writer") {
            try? client.send(payload)
            client.shutdownWrite()
        }
        // Read nothing until the client has stopped sending: the server must still owe it all.
        writer.join()
        let echoed = try client.receiveToEnd()
        #expect(echoed == payload, "\(kind): half-closed connection got \(echoed.count) of \(payload.count) bytes back")
        #expect(try eventually { try server.stats().connectionsOpen == 0 })
    }

    @Test("a client that resets mid-message does not disturb the others", arguments: backends)
    func resetMidMessage(kind: BackendKind) throws {
        let server = try startServer(kind)
        defer { server.stop() }
        let steady = try Client(server.address)
        var pattern = PatternStream(seed: 5)
        #expect(try steady.echo(pattern.bytes(1000)))
        for round in 0..<20 {
            let rude = try Client(server.address)
            try rude.send(pattern.bytes(50_000 + round))
            rude.reset()
        }
        #expect(try steady.echo(pattern.bytes(5000)), "\(kind): the steady connection broke after others reset")
        let fresh = try Client(server.address)
        #expect(try fresh.echo(pattern.bytes(100)))
        #expect(try eventually { try server.stats().connectionsOpen == 2 }, "\(kind): reset connections were not closed")
    }

    @Test("a slow reader neither grows server memory without bound nor stalls others", arguments: backends)
    func slowReader(kind: BackendKind) throws {
        let server = try startServer(kind)
        defer { server.stop() }
        let steady = try Client(server.address)
        var pattern = PatternStream(seed: 7)
        #expect(try steady.echo(pattern.bytes(100)))
        let rssBefore = residentBytes(pid: server.pid)

        // Push as much as the server will take into a connection that never reads.
        let hog = try Client(server.address)
        Socket.setNonBlocking(hog.fd)
        let chunk = [UInt8](repeating: 0x5A, count: 65536)
        var pushed = 0
        var idleSince = Date()
        while Date().timeIntervalSince(idleSince) < 1.0 && pushed < (512 << 20) {
            let n = chunk.withUnsafeBytes { send(hog.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                pushed += n
                idleSince = Date()
            } else {
                usleep(5000)
            }
        }
        let rssAfter = residentBytes(pid: server.pid)
        // What the kernel buffers on both sides plus the server's bound on owed bytes: tens of MiB
        // at most, never the 512 MiB the client would push if reading were not paused.
        #expect(pushed < 128 << 20, "\(kind): the server took \(pushed >> 20) MiB from a client that never reads")
        #expect(rssAfter - rssBefore < 40 << 20, "\(kind): server RSS grew by \((rssAfter - rssBefore) >> 20) MiB")
        // Meanwhile everyone else is served.
        #expect(try steady.echo(pattern.bytes(10_000)), "\(kind): a slow reader stalled another connection")
        let fresh = try Client(server.address)
        #expect(try fresh.echo(pattern.bytes(10_000)), "\(kind): a slow reader stalled a new connection")
    }

    @Test("out of descriptors at accept: no spinning, and service resumes once they free up", arguments: models)
    func descriptorExhaustion(kind: BackendKind) throws {
        let server = try startServer(kind, fdLimit: 40)
        defer { server.stop() }
        var clients: [Client] = []
        for _ in 0..<60 { clients.append(try Client(server.address)) }
        #expect(try eventually { (try server.stats().acceptErrors) > 0 }, "\(kind): accept never hit the fd limit")
        let cpuBefore = cpuSeconds(pid: server.pid)
        usleep(1_000_000)
        let cpuUsed = cpuSeconds(pid: server.pid) - cpuBefore
        #expect(cpuUsed < 0.25, "\(kind): the server used \(cpuUsed) s of CPU in 1 s while out of descriptors")
        // A connection accepted before the limit still echoes.
        #expect(try clients[0].echo([1, 2, 3]))
        clients.removeAll()
        // Once descriptors are free, queued and new connections are served.
        let late = try Client(server.address)
        #expect(try late.echo(Array(repeating: 9, count: 1000)), "\(kind): no service after descriptors freed up")
        #expect(try eventually { try server.stats().connectionsOpen == 1 })
    }

    @Test("--max-connections refuses and counts the excess", arguments: backends)
    func maxConnections(kind: BackendKind) throws {
        let server = try startServer(kind, ["--max-connections", "5"])
        defer { server.stop() }
        var clients: [Client] = []
        for _ in 0..<5 {
            let client = try Client(server.address)
            #expect(try client.echo([42]))
            clients.append(client)
        }
        var refused: [Client] = []
        for _ in 0..<3 { refused.append(try Client(server.address)) }
        for client in refused {
            #expect(try client.receiveToEnd().isEmpty, "\(kind): a connection past the limit was served")
        }
        let stats = try server.stats()
        #expect(stats.connectionsRefused == 3)
        #expect(stats.connectionsOpen == 5)
    }

    @Test("stop is prompt with connections open and releases every fd and thread", arguments: backends)
    func promptStopReleasesEverything(kind: BackendKind) throws {
        let server = try startServer(kind, ["--threads", "2"])
        var clients: [Client] = []
        for i in 0..<200 {
            let client = try Client(server.address)
            #expect(try client.echo([UInt8(i & 0xFF)]))
            clients.append(client)
        }
        #expect(try server.stats().connectionsOpen == 200)
        let stopped = server.stop()
        #expect(stopped.exitStatus == 0, "\(kind): exit status \(stopped.exitStatus): \(stopped.standardError)")
        #expect(stopped.seconds < 1.0, "\(kind): stop took \(stopped.seconds) s with 200 connections open")
        let final = try #require(stopped.finalStats, "\(kind): no final stats line")
        #expect(final.leakedFileDescriptors == 0, "\(kind): \(final.leakedFileDescriptors ?? -1) descriptors left open; stderr: \(stopped.standardError)")
        #expect(final.leakedThreads == 0, "\(kind): \(final.leakedThreads ?? -1) threads left running")
        #expect(final.connectionsOpen == 0)
        for client in clients { #expect(try client.receiveToEnd().isEmpty) }
    }

    @Test("stats answers one JSON line with the counters", arguments: backends)
    func statsLine(kind: BackendKind) throws {
        let server = try startServer(kind)
        defer { server.stop() }
        let client = try Client(server.address)
        #expect(try client.echo(Array(repeating: 1, count: 64)))
        // The server counts a send once it returns: the client can see the echo a moment
        // before the counter moves.
        _ = try eventually(timeout: 2) { try server.stats().bytesOut == 64 }
        let stats = try server.stats()
        #expect(stats.backend == kind.rawValue)
        #expect(stats.connectionsAccepted == 1)
        #expect(stats.bytesIn == 64)
        #expect(stats.bytesOut == 64)
        if kind == .nio {
            // A peer runtime makes its own system calls: the stats say so instead of guessing.
            #expect(stats.syscalls == nil)
            #expect(stats.unavailable == ["syscalls"])
            // On the wire it is an explicit null, not a missing key.
            #expect(stats.json.contains("\"syscalls\":null"))
            return
        }
        let syscalls = try #require(stats.syscalls)
        // Every call it counted is of a kind its registry entry declares (so stats and docs
        // that read the entry say what the server really does), and it counted some.
        let declared = Set(Backends.descriptor(kind).syscallKinds.map(\.name))
        let made = Set(syscalls.filter { $0.value > 0 }.keys)
        #expect(!made.isEmpty)
        #expect(made.isSubset(of: declared), "\(kind) made \(made.subtracting(declared).sorted()) beyond its declared kinds")
        if kind == .ioUring { #expect(stats.setup != nil) }
        #expect(server.listeningLine.contains("pid=\(server.pid)"))
    }
}
