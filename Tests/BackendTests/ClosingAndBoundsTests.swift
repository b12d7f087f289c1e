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
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// What an outside client found (issue 19), held on every backend and the NIO peer through real
/// `iobench serve` children: a refused connection still gets every answer it was owed and then
/// a FIN, never an RST (docs/PROTOCOL.md, "Closing"), within the stated bounds; a client that
/// never reads makes the server hold at most `--max-owed` plus one frame; `events_delivered`
/// is what the subscriber received. Serialized: one test reads the server's memory.
@Suite(.serialized)
struct ClosingAndBoundsTests {
    static let backends = Backends.kinds

    /// Sends `bytes` from another thread (a blocking send that may wait for the server), so the
    /// caller can decide when to read.
    static func sendInBackground(_ client: Client, _ bytes: [UInt8]) throws -> OSThread {
        try OSThread(name: "test-send") { try? client.send(bytes) }
    }

    /// Reads until the server closes; an RST instead of a FIN is a failure that says how much
    /// had arrived.
    static func readToFIN(_ client: Client, _ what: String) throws -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(client.fd, &chunk, chunk.count, 0)
            if n < 0 {
                if errno == EINTR { continue }
                throw TestFailure("\(what): \(Errno.current) after \(result.count) bytes, instead of the end of the stream")
            }
            if n == 0 { return result }
            result.append(contentsOf: chunk[..<n])
        }
    }

    @Test("after too_large, every answer owed arrives, the ERROR last, then a FIN (not an RST)", arguments: backends)
    func refusalLosesNoAnswer(kind: BackendKind) throws {
        let server = try startServer(kind, ["--pattern", "rpc"])
        defer { server.stop() }
        var expected: [UInt8] = []
        var burst: [UInt8] = []
        for id in 0..<20 as Range<UInt64> {
            let payload = [UInt8](repeating: UInt8(id), count: 60_000)
            burst += Wire.request(id: id, payload)
            expected += Wire.response(id: id, payload)
        }
        expected += Wire.error(1, "too_large")
        // 20 requests, a header declaring 4 GiB, then 100,000 bytes the server must not parse;
        // the client reads only after half a second (the issue's reproduction, three times).
        for round in 1...3 {
            let client = try Client(server.address)
            let sender = try Self.sendInBackground(client, burst + Wire.u32(UInt32.max) + [0x01] + [UInt8](repeating: 0x47, count: 100_000))
            usleep(500_000)
            let received = try Self.readToFIN(client, "\(kind) round \(round)")
            sender.join()
            #expect(received.count == expected.count, "\(kind) round \(round): \(received.count) of \(expected.count) bytes")
            #expect(received == expected, "\(kind) round \(round): the answers differ from what was owed")
        }
        // Nothing owed: a 200,000-byte declaration, then its body.
        for round in 1...3 {
            let client = try Client(server.address)
            let sender = try Self.sendInBackground(client, Wire.u32(200_000) + [0x01] + [UInt8](repeating: 0, count: 200_000))
            #expect(try Self.readToFIN(client, "\(kind) no answers owed, round \(round)") == Wire.error(1, "too_large"))
            sender.join()
        }
        #expect(try eventually { try server.stats().connectionsOpen == 0 }, "\(kind): refused connections left open")
        #expect(try server.stats().malformedFrames["too_large"] == 6)
    }

    @Test("a REQUEST one byte over --max-frame 1k: the ERROR, then a FIN", arguments: backends)
    func oversizedRequestUnderASmallLimit(kind: BackendKind) throws {
        let server = try startServer(kind, ["--pattern", "rpc", "--max-frame", "1k"])
        defer { server.stop() }
        let client = try Client(server.address)
        // 5 + 1,020 = 1,025 bytes.
        try client.send(Wire.request(id: 1, [UInt8](repeating: 3, count: 1_008)))
        #expect(try Self.readToFIN(client, "\(kind)") == Wire.error(1, "too_large"))
        let stopped = server.stop()
        #expect(stopped.finalStats?.leakedFileDescriptors == 0, "\(kind): \(stopped.finalStats?.leakedFileDescriptors ?? -1) descriptors left open; stderr: \(stopped.standardError)")
    }

    @Test("push and poll: a PUBLISH of --max-frame + 1 bytes after five good ones: five PUBLISHED, the ERROR, a FIN", arguments: backends)
    func oversizedPublishLosesNoAnswer(kind: BackendKind) throws {
        for pattern in ["push", "poll"] {
            let server = try startServer(kind, ["--pattern", pattern])
            defer { server.stop() }
            let client = try Client(server.address)
            var good: [UInt8] = []
            for _ in 0..<5 { good += NotifyWire.publish(9, [UInt8](repeating: 1, count: 30_000)) }
            let tooLarge = NotifyWire.publish(9, [UInt8](repeating: 2, count: 65_536 + 1 - 17))
            let sender = try Self.sendInBackground(client, good + tooLarge)
            usleep(200_000)
            let received = try Self.readToFIN(client, "\(kind) \(pattern)")
            sender.join()
            var offset = 0
            var published: [UInt64] = []
            while offset + 5 <= received.count, received[offset + 4] == 0x91 {
                published.append(received[(offset + 9)..<(offset + 17)].reduce(0) { $0 << 8 | UInt64($1) })
                offset += 5 + 16
            }
            #expect(published == [1, 2, 3, 4, 5], "\(kind) \(pattern): PUBLISHED \(published)")
            #expect(Array(received[offset...]) == Wire.error(1, "too_large"), "\(kind) \(pattern): no ERROR last")
        }
    }

    /// An rpc server and a client whose 4 GiB declaration it has just refused (the ERROR read).
    static func refusedClient(_ kind: BackendKind) throws -> (ServerProcess, Client, refused: Date) {
        let server = try startServer(kind, ["--pattern", "rpc"])
        let client = try Client(server.address, timeoutSeconds: 5)
        try client.send(Wire.u32(UInt32.max) + [0x01])
        let answer = try client.receive(16)
        guard answer == Wire.error(1, "too_large") else {
            server.stop()
            throw TestFailure("\(kind): \(answer) instead of the too_large ERROR")
        }
        return (server, client, Date())
    }

    @Test("a refused client that keeps sending and never closes is closed within the 2 s bound", arguments: backends)
    func lingeringEndsAtItsTimeBound(kind: BackendKind) throws {
        let (server, client, refused) = try Self.refusedClient(kind)
        defer { server.stop() }
        // The FIN follows the ERROR at once.
        #expect(try Self.readToFIN(client, "\(kind)").isEmpty)
        #expect(Date().timeIntervalSince(refused) < 1, "\(kind): the end of the stream came \(Date().timeIntervalSince(refused)) s after the ERROR")
        // A byte every 50 ms, never closing: the server ends the connection by its time bound.
        var closedAfter: Double?
        while Date().timeIntervalSince(refused) < 6 {
            _ = [UInt8(7)].withUnsafeBytes { send(client.fd, $0.baseAddress, 1, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if try server.stats().connectionsOpen == 0 {
                closedAfter = Date().timeIntervalSince(refused)
                break
            }
            usleep(50_000)
        }
        let seconds = try #require(closedAfter, "\(kind): the connection was still open 6 s after the refusal")
        #expect(seconds < 4, "\(kind): closed \(seconds) s after the refusal (bound: 2 s)")
    }

    @Test("a refused client that floods is closed once 1 MiB was discarded, before the time bound", arguments: backends)
    func lingeringEndsAtItsByteBound(kind: BackendKind) throws {
        let (server, client, refused) = try Self.refusedClient(kind)
        defer { server.stop() }
        let before = try server.stats().bytesIn
        let flood = [UInt8](repeating: 0x47, count: 64 * 1024)
        var sent = 0
        var closedAfter: Double?
        while Date().timeIntervalSince(refused) < 1.8 && sent < 8 << 20 {
            let n = flood.withUnsafeBytes { send(client.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n > 0 { sent += n } else if errno != EAGAIN && errno != EINTR { break }
            if try server.stats().connectionsOpen == 0 {
                closedAfter = Date().timeIntervalSince(refused)
                break
            }
            if n <= 0 { usleep(2_000) }
        }
        if closedAfter == nil, try eventually(timeout: 0.2, { try server.stats().connectionsOpen == 0 }) {
            closedAfter = Date().timeIntervalSince(refused)
        }
        let seconds = try #require(closedAfter, "\(kind): still open \(Date().timeIntervalSince(refused)) s after the refusal, \(sent) bytes sent")
        #expect(seconds < 1.9, "\(kind): closed \(seconds) s after the refusal, by the time bound, not the byte bound")
        let discarded = try server.stats().bytesIn - before
        #expect(discarded >= 1 << 20, "\(kind): closed after reading \(discarded) bytes of \(sent)")
        #expect(discarded <= (1 << 20) + 256 * 1024, "\(kind): read \(discarded) bytes after the refusal (bound: 1 MiB)")
    }

    /// Connects `count` clients that send 65,000-byte REQUESTs and never read, until each one's
    /// send has been blocked for a second; returns the server's bytes held (read and not yet
    /// written, by its own counters) and its RSS growth.
    static func holdWithClientsThatNeverRead(_ server: ServerProcess, count: Int) throws -> (held: Int, rssGrowth: Int, requests: Int) {
        // Warm-up: about 1,200 × 16 KB through one connection touches every provided buffer of
        // io_uring's ring (1,024 × 16 KiB), so what grows afterwards is what the clients cost.
        let warm = try Client(server.address)
        let request = Wire.request(id: 1, [UInt8](repeating: 1, count: 16_000))
        let response = Wire.response(id: 1, [UInt8](repeating: 1, count: 16_000))
        for _ in 0..<1_200 { #expect(try { try warm.send(request); return try warm.receive(response.count) == response }()) }
        _ = consume warm
        #expect(try eventually { try server.stats().connectionsOpen == 0 })
        let rssBefore = residentBytes(pid: server.pid)
        let before = try server.stats()
        let clients = try (0..<count).map { _ in try Client(server.address) }
        for client in clients { _ = fcntl(client.fd, F_SETFL, fcntl(client.fd, F_GETFL) | O_NONBLOCK) }
        let frame = Wire.request(id: 7, [UInt8](repeating: 0x59, count: 65_000))
        var offsets = [Int](repeating: 0, count: count)
        var lastProgress = [Date](repeating: Date(), count: count)
        let start = Date()
        while lastProgress.contains(where: { Date().timeIntervalSince($0) < 1 }) && Date().timeIntervalSince(start) < 60 {
            var progressed = false
            for (i, client) in clients.enumerated() {
                let n = frame.withUnsafeBytes {
                    send(client.fd, $0.baseAddress! + offsets[i], frame.count - offsets[i], Int32(MSG_NOSIGNAL))
                }
                guard n > 0 else { continue }
                offsets[i] = (offsets[i] + n) % frame.count
                lastProgress[i] = Date()
                progressed = true
            }
            if !progressed { usleep(5_000) }
        }
        usleep(200_000)
        let after = try server.stats()
        let held = (after.bytesIn - before.bytesIn) - (after.bytesOut - before.bytesOut)
        let rssGrowth = residentBytes(pid: server.pid) - rssBefore
        _ = clients
        return (held, rssGrowth, after.requests - before.requests)
    }

    @Test("a client that never reads makes the server hold at most --max-owed plus one frame; 16 of them, 16 times that", arguments: backends.map { ($0, false) } + [(.ioUring, true)])
    func owedBoundHolds(kind: BackendKind, singleShotRecv: Bool) throws {
        let extra = singleShotRecv ? ["--ring-single-shot-recv"] : []
        let maxOwed = 256 * 1024, maxFrame = 64 * 1024
        // A REQUEST is 4 bytes longer than its RESPONSE: bytes in minus bytes out counts that
        // much per answered request on top of what is held.
        for count in [1, 16] {
            let server = try startServer(kind, ["--pattern", "rpc"] + extra)
            defer { server.stop() }
            let (held, rssGrowth, requests) = try Self.holdWithClientsThatNeverRead(server, count: count)
            let bound = count * (maxOwed + maxFrame) + 4 * requests
            let label = "\(kind)\(singleShotRecv ? " (single-shot recv)" : ""), \(count) client(s)"
            #expect(requests >= count, "\(label): only \(requests) requests answered: the clients did not reach the server")
            #expect(held <= bound, "\(label): the server holds \(held) bytes, over \(bound)")
            if count == 16 {
                // Each client's bytes at most twice over (a queue that grew by doubling), and 8 MiB for the rest.
                let rssBound = 2 * count * (maxOwed + maxFrame) + (8 << 20)
                #expect(rssGrowth <= rssBound, "\(label): RSS grew \(rssGrowth >> 20) MiB (bound \(rssBound >> 20) MiB)")
            }
        }
    }

    @Test("events_delivered is what a disconnected slow subscriber received whole", arguments: backends)
    func deliveredCountsWhatArrived(kind: BackendKind) throws {
        let server = try startServer(kind, ["--pattern", "push", "--max-queue", "8", "--slow-consumer", "disconnect"])
        defer { server.stop() }
        let subscriber = try Client(server.address, receiveBuffer: 4096)
        try subscriber.send(NotifyWire.subscribe(1))
        #expect(try eventually { try server.stats().notification("subscribers") == 1 })
        let publisher = try Client(server.address)
        let publish = NotifyWire.publish(1, [UInt8](repeating: 0x50, count: 16 * 1024))
        for _ in 0..<150 {
            try publisher.send(publish + publish + publish + publish)
            for _ in 0..<4 { _ = try publisher.expectFrame(0x91, "PUBLISHED") }
        }
        #expect(try eventually { try server.stats().notification(.slowDisconnects) == 1 }, "\(kind): the subscriber was not disconnected")
        let received = try Self.readToFIN(subscriber, "\(kind) subscriber")
        var offset = 0
        var events = 0
        while offset + 5 <= received.count {
            let length = Int(received[offset..<(offset + 4)].reduce(0) { $0 << 8 | UInt32($1) })
            guard offset + 5 + length <= received.count else { break }  // the cut last EVENT
            if received[offset + 4] == 0x92 { events += 1 }
            offset += 5 + length
        }
        let delivered = try server.stats().notification(.eventsDelivered)
        #expect(events > 0, "\(kind): the subscriber received no EVENT")
        #expect(delivered == events, "\(kind): the server counts \(delivered) EVENTs delivered, the subscriber received \(events) whole")
    }
}
