/// The bookkeeping io_uring needs per connection, apart from its protocol: which operations are
/// in flight and what they allow. Pure (no ring, no socket), so its rules are unit-tested alone:
/// a socket is closed only once nothing is in flight on it; one multishot recv and one send at
/// most; no recv while paused, closing or waiting for buffers.
struct RingConnectionState: Equatable {
    /// Operations submitted and not yet completed for good.
    private(set) var inFlight: UInt8 = 0
    private(set) var recvArmed = false
    private(set) var sendInFlight = false
    /// The send in flight writes the session's outbound bytes (else held echo buffers).
    private(set) var sendingOutbound = false
    private(set) var closing = false
    /// Once closed, the socket goes to the ``LingeringCloser`` (its peer may still be sending).
    private(set) var lingers = false
    /// The peer shut down its sending side (a recv completed with 0).
    var inputEnded = false
    /// The multishot recv ended with `ENOBUFS`; re-armed when buffers come back.
    var waitingForBuffers = false
    /// The session asked to stop reading.
    var inputPaused = false

    /// Whether a recv should be armed now (given whether the session wants input).
    @inline(__always)
    func shouldArmRecv(sessionWantsInput: Bool) -> Bool {
        sessionWantsInput && !inputPaused && !recvArmed && !waitingForBuffers && !closing
    }

    @inline(__always)
    mutating func recvSubmitted() {
        recvArmed = true
        inFlight += 1
    }

    /// The multishot recv will deliver no more (its last completion came without `F_MORE`).
    @inline(__always)
    mutating func recvEnded() { recvArmed = false }

    @inline(__always)
    mutating func sendSubmitted(outbound: Bool) {
        precondition(!sendInFlight, "one send in flight per connection")
        sendInFlight = true
        sendingOutbound = outbound
        inFlight += 1
    }

    @inline(__always)
    mutating func sendCompleted() { sendInFlight = false }

    /// A cancel (or another one-shot operation) was submitted.
    mutating func otherSubmitted() { inFlight += 1 }

    /// Starts closing; returns true when the socket may be closed at once (nothing in flight).
    /// `lingering`: the session ended the exchange with everything owed written; unless the
    /// peer already finished sending, the socket is then handed to the ``LingeringCloser``.
    mutating func beginClose(lingering: Bool = false) -> Bool {
        closing = true
        lingers = lingering && !inputEnded
        return inFlight == 0
    }

    /// An operation completed for good; returns true when the connection is closing and this
    /// was the last one in flight, so the socket may be closed now.
    @inline(__always)
    mutating func operationFinished() -> Bool {
        precondition(inFlight > 0, "an operation finished but none was in flight")
        inFlight -= 1
        return closing && inFlight == 0
    }
}
