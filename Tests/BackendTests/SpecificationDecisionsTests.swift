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

/// The holes an outside client found in docs/PROTOCOL.md, each decided there and held here on
/// every backend and the NIO peer, through real `iobench serve --pattern push|poll` children:
/// what a topic is, fixed-size frames with extra bytes, which frames each counter counts,
/// PUBLISHED's `listeners` under long polling, how many events an EVENTS frame packs, a cursor
/// from another run of the server, and a half-close while a WAIT is held.
@Suite(.serialized)
struct SpecificationDecisionsTests {
    static let backends = Backends.kinds

    @Test("topics: any u32 names one; the 65,537th distinct topic is refused with out_of_range", arguments: backends)
    func topicsAreCountedNotBounded(kind: BackendKind) throws {
        let server = try startServer(kind, ["--pattern", "push"])
        defer { server.stop() }
        let client = try Client(server.address)
        for topic: UInt32 in [0, 65_536, 4_000_000_000, .max] {
            try client.send(NotifyWire.publish(topic, [1]))
            let answer = try client.expectFrame(0x91, "PUBLISHED to topic \(topic)")
            #expect(answer.u32(0) == topic && answer.u64(4) == 1, "\(kind): topic \(topic)")
        }
        // 65,532 more distinct topics make 65,536; pipelined in batches.
        var topic: UInt32 = 1
        var made = 4
        while made < 65_536 {
            var batch: [UInt8] = []
            var inBatch = 0
            while made < 65_536 && inBatch < 2_048 {
                if topic != 65_536 { batch += NotifyWire.publish(topic, []); inBatch += 1; made += 1 }
                topic += 1
            }
            try client.send(batch)
            for _ in 0..<inBatch { _ = try client.expectFrame(0x91, "PUBLISHED (\(made) topics)") }
        }
        try client.send(NotifyWire.publish(3_000_000_000, [1]))
        let refused = try client.expectFrame(0x7F, "the 65,537th topic")
        #expect(refused.u16(0) == 9, "\(kind): \(refused.u16(0))")
        // An existing topic is still served, whatever its number.
        try client.send(NotifyWire.publish(.max, [2]))
        #expect(try client.expectFrame(0x91, "PUBLISHED to an existing topic").u64(4) == 2)
    }

    @Test("fixed-size frames with extra bytes are served, the extra bytes ignored", arguments: backends)
    func extraBytesAreIgnored(kind: BackendKind) throws {
        let extra: [UInt8] = [0xEE, 0xEE, 0xEE]
        let push = try startServer(kind, ["--pattern", "push"])
        defer { push.stop() }
        let subscriber = try Client(push.address)
        try subscriber.send(Wire.frame(0x10, Wire.u32(4) + extra))
        #expect(try subscriber.expectFrame(0x90, "SUBSCRIBED").u32(0) == 4)
        let poll = try startServer(kind, ["--pattern", "poll"])
        defer { poll.stop() }
        let client = try Client(poll.address)
        try client.send(Wire.frame(0x20, Wire.u32(0) + extra))
        let job = try client.expectFrame(0xA0, "ACCEPTED").u64(0)
        try client.send(Wire.frame(0x21, Wire.u64(job) + extra))
        #expect(try client.expectFrame(0xA2, "DONE").u64(0) == job)
        try client.send(Wire.frame(0x30, Wire.u32(8) + Wire.u64(0) + Wire.u32(0) + extra))
        #expect(try client.expectFrame(0xB1, "TIMEOUT").u32(0) == 8)
        let malformed = try poll.stats().malformedFrames.values.reduce(0, +) + (try push.stats().malformedFrames.values.reduce(0, +))
        #expect(malformed == 0, "\(kind): \(malformed) frames refused")
    }

    @Test("counters: refused STATUS and WAIT frames count only as refused; waits = answered + timed out + held + ended", arguments: backends)
    func countersCountWhatTheySay(kind: BackendKind) throws {
        let server = try startServer(kind, ["--pattern", "poll"])
        defer { server.stop() }
        let client = try Client(server.address)
        try client.send(NotifyWire.submit(0))
        let job = try client.expectFrame(0xA0, "ACCEPTED").u64(0)
        try client.send(NotifyWire.status(job))
        _ = try client.expectFrame(0xA2, "DONE")
        try client.send(NotifyWire.status(job &+ 999))  // unknown_job
        _ = try client.expectFrame(0x7F, "unknown_job")
        try client.send(NotifyWire.wait(1, after: 0, timeoutMs: 0))  // timed out at once
        _ = try client.expectFrame(0xB1, "TIMEOUT")
        try client.send(NotifyWire.wait(1, after: 0, timeoutMs: 5_000_000))  // out_of_range
        _ = try client.expectFrame(0x7F, "out_of_range")
        try client.send(NotifyWire.wait(1, after: 0, timeoutMs: 60_000))  // held
        try client.send(NotifyWire.wait(1, after: 0, timeoutMs: 60_000))  // wait_pending
        _ = try client.expectFrame(0x7F, "wait_pending")
        let publisher = try Client(server.address)
        try publisher.send(NotifyWire.publish(1, [5]))
        _ = try publisher.expectFrame(0x91, "PUBLISHED")
        #expect(try client.expectFrame(0xB0, "EVENTS").u32(4) == 1)  // the held WAIT, answered
        let stats = try server.stats()
        #expect(stats.notification(.statusPolls) == 1, "\(kind): status_polls \(stats.notification(.statusPolls))")
        #expect(stats.notification(.waits) == 2, "\(kind): waits \(stats.notification(.waits))")
        #expect(stats.notification(.waitsHeld) == 1)
        #expect(stats.notification(.waitsAnswered) == 1)
        #expect(stats.notification(.waitsTimedOut) == 1)
        #expect(stats.malformedFrames["unknown_job"] == 1 && stats.malformedFrames["out_of_range"] == 1
                && stats.malformedFrames["wait_pending"] == 1)
    }

    @Test("long polling: PUBLISHED's listeners counts the held WAITs", arguments: backends)
    func listenersCountHeldWaits(kind: BackendKind) throws {
        let server = try startServer(kind, ["--pattern", "poll", "--threads", "2"])
        defer { server.stop() }
        let waiters = try (0..<3).map { _ in try Client(server.address) }
        for waiter in waiters { try waiter.send(NotifyWire.wait(5, after: Frame.fromNow, timeoutMs: 60_000)) }
        #expect(try eventually { try server.stats().notification("held_waits") == 3 })
        let publisher = try Client(server.address)
        try publisher.send(NotifyWire.publish(5, [1]))
        #expect(try publisher.expectFrame(0x91, "PUBLISHED").u32(12) == 3, "\(kind): listeners")
        for waiter in waiters { _ = try waiter.expectFrame(0xB0, "EVENTS") }
        try publisher.send(NotifyWire.publish(5, [2]))
        #expect(try publisher.expectFrame(0x91, "PUBLISHED").u32(12) == 0, "\(kind): listeners once answered")
    }

    @Test("EVENTS packs the kept events after the cursor: at most --max-queue, and what fits in --max-frame", arguments: backends)
    func eventsPackAsMuchAsFits(kind: BackendKind) throws {
        let server = try startServer(kind, ["--pattern", "poll", "--max-queue", "8"])
        defer { server.stop() }
        let client = try Client(server.address)
        for i in 0..<20 {
            try client.send(NotifyWire.publish(2, [UInt8](repeating: UInt8(i), count: 10_000)))
            _ = try client.expectFrame(0x91, "PUBLISHED")
        }
        // The topic keeps 13…20; 6 records of 10,020 bytes fit in 65,536 with the fields, 7 do not.
        func seqs(_ frame: ReceivedFrame) -> [UInt64] {
            var offset = 8
            var result: [UInt64] = []
            for _ in 0..<frame.u32(4) {
                result.append(frame.u64(offset))
                offset += 20 + Int(frame.u32(offset + 16))
            }
            return result
        }
        try client.send(NotifyWire.wait(2, after: 0, timeoutMs: 0))
        #expect(seqs(try client.expectFrame(0xB0, "EVENTS")) == Array(13...18), "\(kind): large events")
        try client.send(NotifyWire.wait(2, after: 18, timeoutMs: 0))
        #expect(seqs(try client.expectFrame(0xB0, "EVENTS")) == [19, 20], "\(kind): the rest")
        for _ in 0..<10 {
            try client.send(NotifyWire.publish(3, [7]))
            _ = try client.expectFrame(0x91, "PUBLISHED")
        }
        try client.send(NotifyWire.wait(3, after: 0, timeoutMs: 0))
        #expect(seqs(try client.expectFrame(0xB0, "EVENTS")) == Array(3...10), "\(kind): small events, --max-queue of them")
    }

    @Test("a WAIT whose cursor is beyond the topic's newest event is refused; at the newest it is held", arguments: backends)
    func cursorFromAnotherRunIsRefused(kind: BackendKind) throws {
        let server = try startServer(kind, ["--pattern", "poll"])
        defer { server.stop() }
        let client = try Client(server.address)
        for _ in 0..<3 {
            try client.send(NotifyWire.publish(4, [1]))
            _ = try client.expectFrame(0x91, "PUBLISHED")
        }
        try client.send(NotifyWire.wait(4, after: 4, timeoutMs: 50))
        #expect(try client.expectFrame(0x7F, "a cursor past the newest").u16(0) == 9, "\(kind)")
        try client.send(NotifyWire.wait(77, after: 1, timeoutMs: 50))  // a topic with no event yet
        #expect(try client.expectFrame(0x7F, "a cursor on an empty topic").u16(0) == 9, "\(kind)")
        try client.send(NotifyWire.wait(4, after: 3, timeoutMs: 50))
        #expect(try client.expectFrame(0xB1, "TIMEOUT at the newest").u64(4) == 3, "\(kind)")
        #expect(try server.stats().malformedFrames["out_of_range"] == 2)
    }

    @Test("half-closing while a WAIT is held: the owed answers, no answer to the WAIT, then the end of the stream", arguments: backends)
    func halfCloseEndsAHeldWait(kind: BackendKind) throws {
        let server = try startServer(kind, ["--pattern", "poll"])
        defer { server.stop() }
        let client = try Client(server.address, timeoutSeconds: 5)
        try client.send(NotifyWire.submit(0) + NotifyWire.wait(6, after: Frame.fromNow, timeoutMs: 60_000))
        _ = try client.expectFrame(0xA0, "ACCEPTED")
        #expect(try eventually { try server.stats().notification("held_waits") == 1 })
        client.shutdownWrite()
        #expect(try client.receiveToEnd().isEmpty, "\(kind): a frame after the half-close")
        let stats = try server.stats()
        #expect(stats.notification(.waitsHeld) == 1)
        #expect(stats.notification(.waitsAnswered) == 0 && stats.notification(.waitsTimedOut) == 0)
        #expect(try eventually { try server.stats().notification("held_waits") == 0 && server.stats().connectionsOpen == 0 })
    }
}
