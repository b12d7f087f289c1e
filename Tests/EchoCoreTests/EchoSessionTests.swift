import EchoCore
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
        #expect(session.wantsInput)
        bytes(10) { #expect(session.received($0) == .echoReceived) }
        #expect(session.owed == 10)
        #expect(session.sent(4) == .send)  // 6 still owed
        #expect(session.sent(6) == [])
        #expect(session.owed == 0)
        #expect(!session.isFinished)
    }

    @Test func inputPausesAtTheBoundAndResumesAtHalf() {
        var session = EchoSession(maxOwed: 100)
        bytes(60) { #expect(session.received($0) == .echoReceived) }
        bytes(50) { #expect(session.received($0) == [.echoReceived, .pauseInput]) }
        #expect(!session.wantsInput)
        bytes(5) { #expect(session.received($0) == .echoReceived) }  // bytes already in flight still count, no second pause
        #expect(session.sent(50) == .send)  // 65 owed: still above half
        #expect(!session.wantsInput)
        #expect(session.sent(20) == [.send, .resumeInput])  // 45 owed
        #expect(session.wantsInput)
    }

    @Test func heldChunksAreBoundedLikeBytes() {
        var session = EchoSession(maxOwed: 1 << 20, maxHeldChunks: 4)
        for _ in 0..<3 { bytes(1) { #expect(session.received($0) == .echoReceived) } }
        bytes(1) { #expect(session.received($0) == [.echoReceived, .pauseInput]) }
        _ = session.sent(2)
        #expect(session.echoChunkWritten() == [])  // 3 held: above half of 4
        #expect(session.echoChunkWritten() == .resumeInput)
        #expect(session.wantsInput)
    }

    @Test func keptEchoBytesAreWrittenInOrderFromTheSession() {
        var session = EchoSession(maxOwed: 1000)
        bytes(10) { received in
            _ = session.received(received)
            _ = session.sent(3)  // the peer took 3 bytes straight from the read buffer
            session.keepEcho(UnsafeRawBufferPointer(rebasing: received[3...]))
        }
        #expect(session.hasOutbound)
        #expect(session.pinOutboundForWrite().count == 7)
        #expect(session.sent(7) == [])
        #expect(!session.hasOutbound)
    }

    @Test func halfCloseFinishesWritingThenCloses() {
        var session = EchoSession(maxOwed: 100)
        bytes(30) { _ = session.received($0) }
        #expect(session.inputDidEnd() == [])
        #expect(!session.wantsInput)
        #expect(session.sent(10) == .send)
        #expect(session.sent(20) == .close)
        #expect(session.isFinished)
    }

    @Test func endOfInputWithNothingOwedClosesAtOnce() {
        var session = EchoSession(maxOwed: 100)
        #expect(session.inputDidEnd() == .close)
        #expect(session.isFinished)
    }

    @Test func pausedSessionThatEndsDoesNotAskToResume() {
        var session = EchoSession(maxOwed: 10)
        bytes(10) { _ = session.received($0) }
        _ = session.inputDidEnd()
        #expect(session.sent(10) == .close)
    }
}
