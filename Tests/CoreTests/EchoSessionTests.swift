import ServerKit
import Protocols
import BackendKit
import Testing

/// Bytes for a session to receive (their content does not matter to echo).
func bytes(_ count: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 1)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0xAB)
    body(UnsafeRawBufferPointer(buffer))
}

@Suite struct EchoSessionTests {
    @Test func receivedBytesAreOwedAndSent() {
        var session = EchoSession(maxOwed: 100)
        do { let value = session.wantsInput; #expect(value) }
        bytes(10) { let actions = session.received($0); #expect(actions == .echoReceived) }
        do { let value = session.owed; #expect(value == 10) }
        do { let value = session.sent(4); #expect(value == .send) }  // 6 still owed
        do { let value = session.sent(6); #expect(value == []) }
        do { let value = session.owed; #expect(value == 0) }
        do { let value = !session.isFinished; #expect(value) }
    }

    @Test func inputPausesAtTheBoundAndResumesAtHalf() {
        var session = EchoSession(maxOwed: 100)
        bytes(60) { let actions = session.received($0); #expect(actions == .echoReceived) }
        bytes(50) { let actions = session.received($0); #expect(actions == [.echoReceived, .pauseInput]) }
        do { let value = !session.wantsInput; #expect(value) }
        bytes(5) { let actions = session.received($0); #expect(actions == .echoReceived) }  // bytes already in flight still count, no second pause
        do { let value = session.sent(50); #expect(value == .send) }  // 65 owed: still above half
        do { let value = !session.wantsInput; #expect(value) }
        do { let value = session.sent(20); #expect(value == [.send, .resumeInput]) }  // 45 owed
        do { let value = session.wantsInput; #expect(value) }
    }

    @Test func heldChunksAreBoundedLikeBytes() {
        var session = EchoSession(maxOwed: 1 << 20, maxHeldChunks: 4)
        for _ in 0..<3 {
            bytes(1) { let actions = session.received($0); #expect(actions == .echoReceived) }
            do { let held = session.holdingReceivedBuffer(); #expect(held == []) }
        }
        bytes(1) { let actions = session.received($0); #expect(actions == .echoReceived) }
        do { let held = session.holdingReceivedBuffer(); #expect(held == .pauseInput) }
        _ = session.sent(2)
        do { let value = session.echoChunkWritten(); #expect(value == []) }  // 3 held: above half of 4
        do { let value = session.echoChunkWritten(); #expect(value == .resumeInput) }
        do { let value = session.wantsInput; #expect(value) }
    }

    @Test func keptEchoBytesAreWrittenInOrderFromTheSession() {
        var session = EchoSession(maxOwed: 1000)
        bytes(10) { received in
            _ = session.received(received)
            _ = session.sent(3)  // the peer took 3 bytes straight from the read buffer
            session.keepEcho(UnsafeRawBufferPointer(rebasing: received[3...]))
        }
        do { let value = session.hasOutbound; #expect(value) }
        do { let pinned = session.pinOutboundForWrite().count; #expect(pinned == 7) }
        do { let value = session.sent(7); #expect(value == []) }
        do { let value = !session.hasOutbound; #expect(value) }
    }

    @Test func halfCloseFinishesWritingThenCloses() {
        var session = EchoSession(maxOwed: 100)
        bytes(30) { _ = session.received($0) }
        do { let value = session.inputDidEnd(); #expect(value == []) }
        do { let value = !session.wantsInput; #expect(value) }
        do { let value = session.sent(10); #expect(value == .send) }
        do { let value = session.sent(20); #expect(value == .close) }
        do { let value = session.isFinished; #expect(value) }
    }

    @Test func endOfInputWithNothingOwedClosesAtOnce() {
        var session = EchoSession(maxOwed: 100)
        do { let value = session.inputDidEnd(); #expect(value == .close) }
        do { let value = session.isFinished; #expect(value) }
    }

    @Test func pausedSessionThatEndsDoesNotAskToResume() {
        var session = EchoSession(maxOwed: 10)
        bytes(10) { _ = session.received($0) }
        _ = session.inputDidEnd()
        do { let value = session.sent(10); #expect(value == .close) }
    }

    @Test func anIdleSessionIsSmall() {
        // Every connection holds one for its whole life, idle or not (issue 21: an idle echo
        // connection in at most 128 B of user space): 48 B, the slow peer's bytes out of line.
        #expect(MemoryLayout<EchoSession>.stride <= 48, "EchoSession is \(MemoryLayout<EchoSession>.stride) B")
    }
}
