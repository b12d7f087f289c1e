@testable import IoUring
import Testing

@Suite struct RingConnectionStateTests {
    @Test func aSocketClosesOnlyWhenNothingIsInFlight() {
        var state = RingConnectionState()
        state.recvSubmitted()
        state.sendSubmitted(outbound: false)
        do { let done = state.beginClose(); #expect(!done) }  // two operations in flight
        do { let done = state.operationFinished(); #expect(!done) }
        do { let done = state.operationFinished(); #expect(done) }  // the last one: now the socket may close
    }

    @Test func aConnectionWithNothingInFlightClosesAtOnce() {
        var state = RingConnectionState()
        do { let done = state.beginClose(); #expect(done) }
    }

    @Test func noRecvWhilePausedClosingWaitingOrArmed() {
        var state = RingConnectionState()
        #expect(state.shouldArmRecv(sessionWantsInput: true))
        #expect(!state.shouldArmRecv(sessionWantsInput: false))
        state.inputPaused = true
        #expect(!state.shouldArmRecv(sessionWantsInput: true))
        state.inputPaused = false
        state.waitingForBuffers = true
        #expect(!state.shouldArmRecv(sessionWantsInput: true))
        state.waitingForBuffers = false
        state.recvSubmitted()
        #expect(!state.shouldArmRecv(sessionWantsInput: true))
        state.recvEnded()
        #expect(state.shouldArmRecv(sessionWantsInput: true))
        _ = state.beginClose()
        #expect(!state.shouldArmRecv(sessionWantsInput: true))
    }
}

@Suite struct ReceiveQueueTests {
    @Test func heldBuffersAreWrittenInOrderAndFreedOnlyWhenComplete() {
        let queue = ReceiveQueue(buffers: 8)
        var held = HeldBuffers()
        queue.append(3, bytes: 100, to: &held)
        queue.append(5, bytes: 10, to: &held)
        #expect(held.count == 2)
        #expect(queue.unwritten(held) == (id: 3, offset: 0, count: 100))
        do { let freed = queue.written(60, from: &held); #expect(freed == nil) }  // partly written: still held
        #expect(queue.unwritten(held) == (id: 3, offset: 60, count: 40))
        do { let freed = queue.written(40, from: &held); #expect(freed == 3) }
        #expect(queue.unwritten(held) == (id: 5, offset: 0, count: 10))
        do { let freed = queue.written(10, from: &held); #expect(freed == 5) }
        #expect(held.isEmpty && held.count == 0)
    }
}
