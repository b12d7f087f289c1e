import ServerKit
import Protocols
import BackendKit
import TestSupport
import Testing

/// An rpc session with its own counters, fed like a backend feeds it, writing everything.
final class RpcHarness {
    let counters = ThreadCounters()
    var session: RpcSession
    var written: [UInt8] = []
    var closed = false
    var paused = false

    init(maxOwed: Int = 1 << 20, maxFrame: Int = 64 * 1024) {
        session = RpcSession(context: SessionContext(maxOwed: maxOwed, maxFrameSize: maxFrame, counters: SystemCalls(counters: counters)))
    }

    /// Feeds `bytes` in chunks of `chunk`, writing `writeLimit` bytes per write at most.
    func feed(_ bytes: [UInt8], chunk: Int = .max, writeLimit: Int = .max) {
        var offset = 0
        while offset < bytes.count && !closed {
            let n = min(chunk, bytes.count - offset)
            let actions = bytes[offset..<(offset + n)].withUnsafeBytes { session.received($0) }
            offset += n
            perform(actions, writeLimit: writeLimit)
        }
    }

    func end(writeLimit: Int = .max) {
        perform(session.inputDidEnd(), writeLimit: writeLimit)
    }

    func perform(_ first: SessionActions, writeLimit: Int) {
        var actions = first
        while true {
            #expect(!actions.contains(.echoReceived))
            if actions.contains(.pauseInput) { paused = true }
            if actions.contains(.resumeInput) { paused = false }
            if actions.contains(.close) { closed = true; return }
            guard session.hasOutbound else { return }
            let bytes = session.pinOutboundForWrite()
            let n = min(bytes.count, writeLimit)
            written += Array(bytes[..<n])
            actions = session.sent(n)
            if n == 0 { return }  // the peer takes nothing now
        }
    }

    func count(_ event: EventCounter) -> UInt64 { counters.value(event) }
}

@Suite struct FrameDecoderTests {
    @Test("a request split at every byte decodes the same as whole", arguments: [1, 2, 3, 5, 7, 16, 1000])
    func splitAnywhere(chunk: Int) {
        let payload = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let input = Wire.request(id: 0x0102_0304_0506_0708, work: 9, payload)
        var decoder = FrameDecoder(maxFrameSize: 1024)
        var events: [FrameDecoder.Event] = []
        var got: [UInt8] = []
        input.withUnsafeBytes { all in
            var start = 0
            while start < all.count {
                let slice = UnsafeRawBufferPointer(rebasing: all[start..<min(all.count, start + chunk)])
                var offset = 0
                while true {
                    let (used, event) = decoder.next(slice, from: offset)
                    if case .payload(let range)? = event { got += Array(slice[range]) } else if let event { events.append(event) }
                    offset += used
                    if used == 0 { break }
                }
                start += chunk
            }
        }
        #expect(events == [.requestStarted(id: 0x0102_0304_0506_0708, workMicroseconds: 9, payloadLength: 300)])
        #expect(got == payload)
        #expect(decoder.atBoundary)
    }

    @Test func aDeclaredLengthOverTheMaximumIsRefusedFromTheHeaderAlone() {
        var decoder = FrameDecoder(maxFrameSize: 1024)
        let header = Wire.u32(UInt32.max) + [0x01]
        let (used, event) = header.withUnsafeBytes { decoder.next($0, from: 0) }
        #expect(used == 5)
        #expect(event == .refused(.tooLarge))
        #expect(decoder.hasFailed)
        // The largest frame allowed is accepted: 1024 bytes including the header.
        var ok = FrameDecoder(maxFrameSize: 1024)
        let fine = Wire.u32(1019) + [0x01]
        let (_, accepted) = fine.withUnsafeBytes { ok.next($0, from: 0) }
        #expect(accepted == nil)
    }
}

@Suite struct RpcSessionTests {
    @Test func pipelinedRequestsAreAnsweredInOrder() {
        let h = RpcHarness()
        var input: [UInt8] = []
        var expected: [UInt8] = []
        for id in 1...50 as ClosedRange<UInt64> {
            let payload = [UInt8](repeating: UInt8(id), count: Int(id) * 3)
            input += Wire.request(id: id, payload)
            expected += Wire.response(id: id, payload)
        }
        h.feed(input, chunk: 37, writeLimit: 11)
        #expect(h.written == expected)
        #expect(h.count(.requests) == 50)
        #expect(h.count(.responses) == 50)
        h.end()
        #expect(h.closed)
    }

    @Test func aResponseIsNotWrittenBeforeItsRequestIsComplete() {
        let h = RpcHarness()
        let request = Wire.request(id: 7, [1, 2, 3, 4, 5, 6])
        h.feed(Array(request.dropLast(2)))
        #expect(h.written.isEmpty)
        h.feed(Array(request.suffix(2)))
        #expect(h.written == Wire.response(id: 7, [1, 2, 3, 4, 5, 6]))
    }

    @Test("refused frames get an ERROR in their place; the stream goes on when it can", arguments: [
        (Wire.frame(0x42, [1, 2, 3]), FrameError.unknownType),
        (Wire.frame(0x01, []), .tooShort),
        (Wire.frame(0x01, [1, 2, 3]), .tooShort),
        (Wire.frame(0x02, Wire.u64(1)), .unknownType),  // a RESPONSE is not for the server
        (Wire.request(id: 3, work: 1_000_001, [9]), .workTooLarge),
    ])
    func skippableErrors(frame: [UInt8], error: FrameError) {
        let h = RpcHarness()
        h.feed(Wire.request(id: 1, [1]) + frame + Wire.request(id: 2, [2]), chunk: 3)
        #expect(h.written == Wire.response(id: 1, [1]) + Wire.error(error.rawValue, error.name) + Wire.response(id: 2, [2]))
        #expect(h.count(error.counter) == 1)
        #expect(!h.closed)
    }

    @Test func aLengthOverTheMaximumIsAnsweredAndClosedWithoutReadingTheBody() {
        let h = RpcHarness(maxFrame: 1024)
        h.feed(Wire.request(id: 1, [1]) + Wire.u32(4_000_000_000) + [0x01] + [UInt8](repeating: 0, count: 5000))
        #expect(h.written == Wire.response(id: 1, [1]) + Wire.error(1, "too_large"))
        #expect(h.closed)
        #expect(h.count(.malformedTooLarge) == 1)
    }

    @Test func endOfInputInsideAFrameIsTruncated() {
        let h = RpcHarness()
        let request = Wire.request(id: 5, [UInt8](repeating: 1, count: 100))
        h.feed(Array(request.prefix(40)))
        h.end()
        #expect(h.written == Wire.error(4, "truncated"))
        #expect(h.closed)
        #expect(h.count(.malformedTruncated) == 1)
        #expect(h.count(.responses) == 0)
    }

    @Test func readingPausesAtTheBoundAndResumesAtHalf() {
        let h = RpcHarness(maxOwed: 1000)
        var input: [UInt8] = []
        for id in 1...20 as ClosedRange<UInt64> { input += Wire.request(id: id, [UInt8](repeating: 0, count: 87)) }  // 100 B responses
        // Nothing is written yet: a write limit of 0 holds everything.
        h.feed(input, writeLimit: 0)
        #expect(h.paused)
        do { let owed = h.session.owed; #expect(owed == 2000) }
        h.perform(.send, writeLimit: 1600)
        #expect(!h.paused)
    }

    @Test func cpuWorkSpendsThatMuchThreadCPU() {
        let before = ProcessResources.threadCPUNanoseconds()
        CPUWork.spin(microseconds: 2000)
        let spent = ProcessResources.threadCPUNanoseconds() - before
        #expect(spent >= 2_000_000 && spent < 4_000_000, "spent \(spent) ns of CPU for 2 ms of work")
    }
}

@Suite struct ByteQueueTests {
    @Test func aPinnedBlockSurvivesGrowthUntilTheWriteIsReported() {
        var queue = ByteQueue()
        let first = [UInt8](repeating: 7, count: 100)
        first.withUnsafeBytes { queue.append($0) }
        queue.commit()
        let pinned = queue.pinForWrite()
        let big = [UInt8](repeating: 9, count: 100_000)
        big.withUnsafeBytes { queue.append($0) }  // grows: the pinned block must stay readable
        #expect(Array(pinned) == first)
        queue.consume(100)
        queue.commit()
        let rest = queue.committed
        #expect(rest.count == 100_000 && rest.allSatisfy { $0 == 9 })
    }

    @Test func uncommittedBytesAreNotWrittenAndCanBeDropped() {
        var queue = ByteQueue()
        [1, 2, 3].withUnsafeBytes { queue.append($0) }
        let committed = queue.committedCount
        #expect(committed == 0)
        queue.dropUncommitted()
        let empty = queue.isEmpty
        #expect(empty)
    }
}

/// The notification session against a hub with a small event memory: publishers cannot make the
/// server keep more than `--max-event-memory`.
@Suite struct NotificationMemoryTests {
    @Test func publishesPastTheEventMemoryAreRefusedAndTheConnectionGoesOn() {
        var options = NotificationOptions()
        options.maxQueue = 4
        options.maxEventMemory = 64 * 1024
        let hub = Hub(options: options)
        let counters = ThreadCounters()
        var session = NotificationSession<PushPattern>(context: SessionContext(maxOwed: 1 << 20, counters: SystemCalls(counters: counters), hub: hub))
        _ = session.opened(at: ConnectionAddress(loop: 0, slot: 0, generation: 0))
        var answers: [UInt8] = []
        let payload = [UInt8](repeating: 7, count: 4000)
        for topic in 0..<40 as Range<UInt32> {
            let frame = Wire.frame(0x11, Wire.u32(topic) + Wire.u64(0) + payload)
            _ = frame.withUnsafeBytes { session.received($0) }
            while session.hasOutbound {
                let bytes = session.pinOutboundForWrite()
                answers += bytes
                _ = session.sent(bytes.count)
            }
        }
        // Each topic's first 4,000-byte event takes a 4 KiB slot (plus its log's slot table):
        // well before 40 topics, 64 KiB is reached and PUBLISH is answered with ERROR 9.
        var published = 0, refused = 0, at = 0
        while at + 5 <= answers.count {
            let length = Int(answers[at..<(at + 4)].reduce(0) { $0 << 8 | UInt32($1) })
            if answers[at + 4] == 0x91 { published += 1 }
            if answers[at + 4] == 0x7F && answers[at + 6] == 9 { refused += 1 }
            at += 5 + length
        }
        #expect(published + refused == 40)
        #expect(published >= 8 && published < 16, "\(published) published within 64 KiB")
        #expect(counters.value(.malformedOutOfRange) == UInt64(refused))
    }
}
