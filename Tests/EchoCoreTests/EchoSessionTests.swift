import EchoCore
import Testing

@Suite struct EchoSessionTests {
    @Test func receivedBytesAreOwedAndSent() {
        var session = EchoSession(maxOwed: 100)
        #expect(session.wantsInput)
        #expect(session.received(10) == .send)
        #expect(session.owed == 10)
        #expect(session.sent(4) == .send)  // 6 still owed
        #expect(session.sent(6) == [])
        #expect(session.owed == 0)
        #expect(!session.isFinished)
    }

    @Test func inputPausesAtTheBoundAndResumesAtHalf() {
        var session = EchoSession(maxOwed: 100)
        #expect(session.received(60) == .send)
        #expect(session.received(50) == [.send, .pauseInput])
        #expect(!session.wantsInput)
        #expect(session.received(5) == .send)  // bytes already in flight still count, no second pause
        #expect(session.sent(50) == .send)  // 65 owed: still above half
        #expect(!session.wantsInput)
        #expect(session.sent(20) == [.send, .resumeInput])  // 45 owed
        #expect(session.wantsInput)
    }

    @Test func halfCloseFinishesWritingThenCloses() {
        var session = EchoSession(maxOwed: 100)
        _ = session.received(30)
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
        _ = session.received(10)
        _ = session.inputDidEnd()
        #expect(session.sent(10) == .close)
    }
}
