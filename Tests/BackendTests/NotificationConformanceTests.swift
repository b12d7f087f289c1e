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

/// A frame as the client reads it.
struct ReceivedFrame {
    var kind: UInt8
    var body: [UInt8]

    func u32(_ at: Int) -> UInt32 { body[at..<(at + 4)].reduce(0) { $0 << 8 | UInt32($1) } }
    func u64(_ at: Int) -> UInt64 { body[at..<(at + 8)].reduce(0) { $0 << 8 | UInt64($1) } }
    func u16(_ at: Int) -> UInt16 { body[at..<(at + 2)].reduce(0) { $0 << 8 | UInt16($1) } }
}

extension Client {
    func readFrame() throws -> ReceivedFrame {
        let header = try receive(5)
        let length = Int(header[0..<4].reduce(0) { $0 << 8 | UInt32($1) })
        return ReceivedFrame(kind: header[4], body: length > 0 ? try receive(length) : [])
    }

    func expectFrame(_ kind: UInt8, _ what: String) throws -> ReceivedFrame {
        let frame = try readFrame()
        if frame.kind != kind {
            let detail = frame.kind == 0x7F ? String(decoding: frame.body.dropFirst(2), as: UTF8.self) : "\(frame.body.count) bytes"
            throw TestFailure("\(what): expected type \(kind), got \(frame.kind) (\(detail))")
        }
        return frame
    }

    /// Whether the server closed the connection (reads what is left until the end).
    func closedByServer() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Frames of the push and poll patterns, built by the specification.
enum NotifyWire {
    static func subscribe(_ topic: UInt32) -> [UInt8] { Wire.frame(0x10, Wire.u32(topic)) }
    static func publish(_ topic: UInt32, stamp: UInt64 = 0, _ payload: [UInt8]) -> [UInt8] {
        Wire.frame(0x11, Wire.u32(topic) + Wire.u64(stamp) + payload)
    }
    static func submit(_ ms: UInt32) -> [UInt8] { Wire.frame(0x20, Wire.u32(ms)) }
    static func status(_ id: UInt64) -> [UInt8] { Wire.frame(0x21, Wire.u64(id)) }
    static func wait(_ topic: UInt32, after: UInt64, timeoutMs: UInt32) -> [UInt8] {
        Wire.frame(0x30, Wire.u32(topic) + Wire.u64(after) + Wire.u32(timeoutMs))
    }
}

/// push, short polling and long polling (docs/PROTOCOL.md) on every backend and the NIO peer,
/// through real `iobench serve --pattern push|poll` children.
@Suite(.serialized)
struct NotificationConformanceTests {
    static let backends = Backends.kinds

    static func monotonicNow() -> UInt64 { ProcessResources.monotonicNanoseconds() }

    /// Subscribes `count` clients to `topic`, connecting in batches so the server's accept
    /// queue never overflows; returns them with their first sequence number.
    static func subscribers(_ server: ServerProcess, topic: UInt32, count: Int, receiveBuffer: Int32? = nil) throws -> [(Client, UInt64)] {
        var result: [(Client, UInt64)] = []
        result.reserveCapacity(count)
        var pending: [Client] = []
        for i in 0..<count {
            let client = try Client(server.address)
            if var size = receiveBuffer {
                setsockopt(client.fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            }
            try client.send(NotifyWire.subscribe(topic))
            pending.append(client)
            if pending.count == 256 || i == count - 1 {
                for client in pending {
                    let answer = try client.expectFrame(0x90, "SUBSCRIBED")
                    result.append((client, answer.u64(4)))
                }
                pending.removeAll()
            }
        }
        return result
    }

    @Test("a client written from docs/PROTOCOL.md alone (Python, standard library) drives push, short and long polling", arguments: backends)
    func pythonClientFromTheSpecification(kind: BackendKind) throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/notify_client.py").path
        for pattern in ["push", "poll"] {
            let server = try startServer(kind, ["--pattern", pattern, "--threads", "2"])
            defer { server.stop() }
            let host = server.address.hostText, port = "\(server.address.port)"
            let common = ["unknown_type", "too_short", "too_large", "truncated"]
            let runs: [[String]] = pattern == "push"
                ? [["push", "--subscribers", "6", "--events", "40", "--payload", "300"]] + (common + ["already_subscribed"]).map { ["malformed", $0] }
                : [["short-poll", "--jobs", "4", "--duration-ms", "80"], ["long-poll", "--waiters", "5", "--events", "4"]]
                    + (common + ["unknown_job", "wait_pending", "out_of_range"]).map { ["malformed", $0] }
            for arguments in runs {
                let result = try runProcess("/usr/bin/python3", [script, host, port] + arguments, timeout: 60)
                #expect(result.status == 0, "\(kind) \(pattern) \(arguments): \(result.stdout) \(result.stderr)")
            }
            let stats = try server.stats()
            #expect(stats.pattern == pattern)
            for name in common + (pattern == "push" ? ["already_subscribed"] : ["unknown_job", "wait_pending", "out_of_range"]) {
                // long-poll's own run adds one wait_pending and short-poll's one unknown_job.
                let expected = pattern == "poll" && (name == "wait_pending" || name == "unknown_job") ? 2 : 1
                #expect(stats.malformedFrames[name] == expected, "\(kind) \(pattern): \(name) counted \(stats.malformedFrames[name] ?? -1) times")
            }
            if pattern == "push" {
                // 6 subscribers × 40 events, every one completely written.
                #expect(stats.notification(.eventsDelivered) == 240, "\(kind): \(stats.notification(.eventsDelivered)) events delivered")
                #expect(stats.notification(.eventsDropped) == 0)
            } else {
                #expect(stats.notification(.jobsSubmitted) == 5)
                #expect(stats.notification(.waitsTimedOut) == 1)
            }
            #expect(try eventually { try server.stats().connectionsOpen == 0 }, "\(kind) \(pattern): connections left open")
        }
    }

    @Test("every subscriber on every loop gets every event, in order, with no gap or duplicate", arguments: backends)
    func everySubscriberGetsEveryEvent(kind: BackendKind) throws {
        // Two loops, the server's own events (a thread of its own) and a publisher connection:
        // events cross loops and threads both ways.
        let server = try startServer(kind, ["--pattern", "push", "--threads", "2", "--event-rate", "400", "--event-size", "48"])
        defer { server.stop() }
        let subs = try Self.subscribers(server, topic: 3, count: 40)
        let publisher = try Client(server.address)
        var published: [UInt64: [UInt8]] = [:]
        for n in 0..<100 {
            let payload = [UInt8]("from-a-client-\(n)".utf8)
            try publisher.send(NotifyWire.publish(3, stamp: Self.monotonicNow(), payload))
            let answer = try publisher.expectFrame(0x91, "PUBLISHED")
            #expect(answer.u32(12) == 40, "\(kind): PUBLISHED says \(answer.u32(12)) listeners")
            published[answer.u64(4)] = payload
            usleep(2000)
        }
        let last = published.keys.max()!
        var delivered = 0
        for (index, (client, first)) in subs.enumerated() {
            var expected = first
            while expected <= last {
                let event = try client.expectFrame(0x92, "EVENT")
                let seq = event.u64(4)
                guard seq == expected else {
                    Issue.record("\(kind): subscriber \(index) got seq \(seq), expected \(expected)")
                    break
                }
                let payload = Array(event.body[20...])
                if let sent = published[seq] {
                    #expect(payload == sent, "\(kind): event \(seq) payload changed")
                } else {
                    // The server's own: byte i is (seq + i) mod 256.
                    #expect(payload == (0..<48).map { serverEventByte(seq: seq, index: $0) }, "\(kind): server event \(seq) payload wrong")
                }
                #expect(event.u64(12) <= Self.monotonicNow(), "\(kind): an event published in the future")
                expected += 1
                delivered += 1
            }
        }
        #expect(delivered >= 40 * 150, "\(kind): only \(delivered) events delivered")
        let stats = try server.stats()
        #expect(stats.notification("subscribers") == 40)
        #expect(stats.notification(.eventsDropped) == 0 && stats.notification(.slowDisconnects) == 0)
        // The server wrote at least what the subscribers read.
        #expect(stats.notification(.eventsDelivered) >= delivered)
    }

    @Test("a stalled subscriber gets the slow-consumer policy, counted, and the others lose nothing", arguments: backends)
    func stalledSubscriber(kind: BackendKind) throws {
        for policy in ["drop-oldest", "disconnect"] {
            let server = try startServer(kind, ["--pattern", "push", "--threads", "2", "--max-queue", "32", "--slow-consumer", policy])
            defer { server.stop() }
            let healthy = try Self.subscribers(server, topic: 1, count: 8)
            let stalled = try Self.subscribers(server, topic: 1, count: 1, receiveBuffer: 128 * 1024)[0]
            let publisher = try Client(server.address)
            // 4 KiB events, 12 MB in all: more than the stalled subscriber's socket buffers hold.
            let payload = [UInt8](repeating: 0xAB, count: 4096)
            let events = 3000
            var read = [Int](repeating: 0, count: healthy.count)
            for n in 0..<events {
                try publisher.send(NotifyWire.publish(1, payload))
                _ = try publisher.expectFrame(0x91, "PUBLISHED")
                // The healthy subscribers keep up: each reads every event as it comes.
                for (i, (client, first)) in healthy.enumerated() {
                    let event = try client.expectFrame(0x92, "EVENT")
                    #expect(event.u64(4) == first + UInt64(n), "\(kind) \(policy): healthy subscriber \(i) got \(event.u64(4)), expected \(first + UInt64(n))")
                    read[i] += 1
                }
            }
            #expect(read.allSatisfy { $0 == events }, "\(kind) \(policy): healthy subscribers read \(read)")
            let stats = try server.stats()
            if policy == "drop-oldest" {
                #expect(stats.notification(.eventsDropped) > 0, "\(kind): nothing dropped for a stalled subscriber")
                #expect(stats.notification(.slowDisconnects) == 0)
                // The stalled one reads now: in order, with a gap where events were dropped, and
                // the newest event last.
                var previous: UInt64 = 0
                var gaps = 0
                while previous < stalled.1 + UInt64(events) - 1 {
                    let seq = try stalled.0.expectFrame(0x92, "EVENT").u64(4)
                    #expect(seq > previous, "\(kind): stalled subscriber got \(seq) after \(previous)")
                    if previous != 0 && seq != previous + 1 { gaps += 1 }
                    previous = seq
                }
                #expect(gaps >= 1, "\(kind): the stalled subscriber saw no gap")
            } else {
                #expect(stats.notification(.slowDisconnects) == 1, "\(kind): \(stats.notification(.slowDisconnects)) slow disconnects")
                #expect(stats.notification(.eventsDropped) == 0)
                #expect(stalled.0.closedByServer(), "\(kind): the stalled subscriber was not disconnected")
            }
            #expect(try eventually { try server.stats().notification("subscribers") == healthy.count + (policy == "disconnect" ? 0 : 1) })
        }
    }

    @Test("jobs finish at their time, and are forgotten after --job-ttl", arguments: backends)
    func jobsFinishAndExpire(kind: BackendKind) throws {
        let server = try startServer(kind, ["--pattern", "poll", "--job-ttl", "300ms"])
        defer { server.stop() }
        let client = try Client(server.address)
        try client.send(NotifyWire.submit(100))
        let submitted = Self.monotonicNow()
        let id = try client.expectFrame(0xA0, "ACCEPTED").u64(0)
        try client.send(NotifyWire.status(id))
        #expect(try client.expectFrame(0xA1, "PENDING").u64(0) == id)
        usleep(130_000)
        try client.send(NotifyWire.status(id))
        let done = try client.expectFrame(0xA2, "DONE")
        #expect(done.u64(0) == id && done.u64(16) == jobResult(id))
        let completed = done.u64(8)
        #expect(completed >= submitted + 95_000_000 && completed <= Self.monotonicNow(), "\(kind): completed at \(Int64(completed) - Int64(submitted)) ns")
        // Another connection may ask about it too.
        let other = try Client(server.address)
        try other.send(NotifyWire.status(id))
        #expect(try other.expectFrame(0xA2, "DONE").u64(8) == completed)
        usleep(400_000)
        try client.send(NotifyWire.status(id))
        let error = try client.expectFrame(0x7F, "ERROR")
        #expect(error.u16(0) == 6, "\(kind): an expired job answered with code \(error.u16(0))")
        let stats = try server.stats()
        #expect(stats.notification(.statusPolls) == 3 && stats.notification(.statusPending) == 1)
        #expect(stats.malformedFrames["unknown_job"] == 1)
    }

    /// The server's count of late TIMEOUTs, shown to catch lateness: a server whose timers fire
    /// 20 ms after the deadline (the injected `late` fault) counts every one of them.
    @Test("timeouts_late counts TIMEOUTs answered more than 10 ms after their deadline", arguments: backends)
    func lateTimeoutsAreCounted(kind: BackendKind) throws {
        let server = try startServer(kind, ["--pattern", "poll", "--inject-event-fault", "late:2"])
        defer { server.stop() }
        let clients = try (0..<5).map { _ in try Client(server.address) }
        var sentAt: [UInt64] = []
        for client in clients {
            sentAt.append(Self.monotonicNow())
            try client.send(NotifyWire.wait(7, after: Frame.fromNow, timeoutMs: 40))
        }
        for (client, sent) in zip(clients, sentAt) {
            _ = try client.expectFrame(0xB1, "TIMEOUT")
            #expect(Self.monotonicNow() - sent >= 60_000_000, "\(kind): a TIMEOUT came before deadline + 20 ms")
        }
        let stats = try server.stats()
        #expect(stats.notification(.waitsTimedOut) == 5 && stats.notification(.timeoutsLate) == 5,
                "\(kind): \(stats.notification(.timeoutsLate)) of \(stats.notification(.waitsTimedOut)) TIMEOUTs counted late")
    }

    @Test("a long poll answers at the event, or at its timeout within 10 ms (by the server's clock)", arguments: backends)
    func longPollAnswersAtTheEventOrTheTimeout(kind: BackendKind) throws {
        let server = try startServer(kind, ["--pattern", "poll", "--threads", "2"])
        defer { server.stop() }
        let waiters = try (0..<50).map { _ in try Client(server.address) }
        // Every connection accepted and answering first (a WAIT with timeout 0 is answered at once).
        for client in waiters {
            try client.send(NotifyWire.wait(4, after: Frame.fromNow, timeoutMs: 0))
            _ = try client.expectFrame(0xB1, "TIMEOUT")
        }
        // Deadlines 2 ms apart: this checks each poll's own precision. How fast a server answers
        // many timeouts falling due at once is a load measurement (the debug build of the NIO
        // peer this suite runs took 16 ms for 50 at once), not a behaviour to assert here.
        var sentAt: [UInt64] = []
        for (i, client) in waiters.enumerated() {
            sentAt.append(Self.monotonicNow())  // the server's deadline starts after this
            try client.send(NotifyWire.wait(4, after: Frame.fromNow, timeoutMs: 150 + 2 * UInt32(i)))
        }
        var lateness: [Double] = []
        for (i, (client, sent)) in zip(waiters, sentAt).enumerated() {
            let answer = try client.expectFrame(0xB1, "TIMEOUT")
            #expect(answer.u32(0) == 4)
            lateness.append(Double(Int64(Self.monotonicNow()) - Int64(sent)) / 1e6 - Double(150 + 2 * i))
        }
        // The server's own clock: every TIMEOUT answered within 10 ms of its deadline.
        #expect(try server.stats().notification(.timeoutsLate) == 0, "\(kind): the server answered TIMEOUTs more than 10 ms late")
        // Measured from before the WAIT was sent, so a TIMEOUT can only look later than it was.
        // The lateness seen here also holds this test's own scheduling on a shared two-core
        // machine (CI once saw one answer of 50 at 10.7 ms with the blocking backend), so the
        // precision is held at the median and a stray answer only to a bound a coarse timer
        // (a 50 ms tick, a poll that ignores its deadline) would still break.
        let sortedLateness = lateness.sorted()
        #expect(sortedLateness.first! >= 0, "\(kind): a TIMEOUT came \(-sortedLateness.first!) ms early")
        #expect(sortedLateness[sortedLateness.count / 2] < 10, "\(kind): the median TIMEOUT came \(sortedLateness[sortedLateness.count / 2]) ms after its deadline")
        #expect(sortedLateness.last! < 40, "\(kind): a TIMEOUT came \(sortedLateness.last!) ms after its deadline")
        // Held again, then answered by an event.
        for client in waiters { try client.send(NotifyWire.wait(4, after: Frame.fromNow, timeoutMs: 60_000)) }
        #expect(try eventually { try server.stats().notification("held_waits") == 50 })
        let publisher = try Client(server.address)
        let stamp = Self.monotonicNow()
        try publisher.send(NotifyWire.publish(4, stamp: stamp, [1, 2, 3]))
        let seq = try publisher.expectFrame(0x91, "PUBLISHED").u64(4)
        var wake: [Double] = []
        for client in waiters {
            let events = try client.expectFrame(0xB0, "EVENTS")
            #expect(events.u32(4) == 1 && events.u64(8) == seq && events.u64(16) == stamp && Array(events.body[28...]) == [1, 2, 3])
            wake.append(Double(Self.monotonicNow() - stamp) / 1e6)
        }
        #expect(wake.max()! < 1000, "\(kind): a held poll answered \(wake.max()!) ms after the event")
        let stats = try server.stats()
        #expect(stats.notification("held_waits") == 0 && stats.notification(.waitsTimedOut) == 100 && stats.notification(.waitsAnswered) == 50)
    }

    @Test("10,000 subscribers and 10,000 held long polls on one server, each answered, nothing leaked", arguments: backends)
    func tenThousandSubscribersAndHeldPolls(kind: BackendKind) throws {
        ProcessResources.raiseDescriptorLimit()
        let count = 10_000
        for pattern in ["push", "poll"] {
            let server = try startServer(kind, ["--pattern", pattern, "--threads", "2"])
            let baseline = residentBytes(pid: server.pid)
            var clients: [Client] = []
            var first: [UInt64] = []
            if pattern == "push" {
                for (client, seq) in try Self.subscribers(server, topic: 8, count: count) {
                    clients.append(client)
                    first.append(seq)
                }
            } else {
                for i in 0..<count {
                    let client = try Client(server.address)
                    try client.send(NotifyWire.wait(8, after: Frame.fromNow, timeoutMs: 600_000))
                    clients.append(client)
                    if i % 256 == 255 { _ = try eventually { try server.stats().notification("held_waits") == i + 1 } }
                }
            }
            let gauge = pattern == "push" ? "subscribers" : "held_waits"
            let reached = try eventually(timeout: 30) { try server.stats().notification(gauge) == count }
            #expect(reached, "\(kind) \(pattern): \((try? server.stats().notification(gauge)) ?? -1) of \(count)")
            let held = residentBytes(pid: server.pid)
            print("\(kind) \(pattern): \(count) idle: RSS \(baseline / 1024) KiB → \(held / 1024) KiB, \((held - baseline) / count) B each")
            let publisher = try Client(server.address)
            try publisher.send(NotifyWire.publish(8, [42]))
            let published = try publisher.expectFrame(0x91, "PUBLISHED")
            #expect(published.u32(12) == UInt32(count), "\(kind) \(pattern): \(published.u32(12)) listeners")
            var answered = 0
            for client in clients {
                if pattern == "push" {
                    let event = try client.expectFrame(0x92, "EVENT")
                    if event.u64(4) == published.u64(4) && event.body.last == 42 { answered += 1 }
                } else {
                    let events = try client.expectFrame(0xB0, "EVENTS")
                    if events.u64(8) == published.u64(4) { answered += 1 }
                }
            }
            #expect(answered == count, "\(kind) \(pattern): \(answered) of \(count) answered")
            clients.removeAll()
            _ = consume publisher
            #expect(try eventually(timeout: 30) { try server.stats().connectionsOpen == 0 }, "\(kind) \(pattern): connections still open")
            let stopped = server.stop()
            let final = try #require(stopped.finalStats, "\(kind): no final stats line")
            #expect(final.leakedFileDescriptors == 0, "\(kind) \(pattern): \(final.leakedFileDescriptors ?? -1) descriptors left open; stderr: \(stopped.standardError)")
            #expect(final.leakedThreads == 0)
        }
    }
}
