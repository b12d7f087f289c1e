import ServerKit
/// The echo protocol: every received byte goes back, in order. The session never copies on
/// the way through: it answers ``SessionActions/echoReceived`` and each backend writes the bytes
/// from where they already are (a shared read buffer, a provided ring buffer, a stack buffer),
/// handing back only what the peer would not take yet (``keepEcho(_:)``) or holding its
/// receive buffer. The session keeps the accounting that makes every backend behave alike:
/// output owed is bounded (reads pause at `maxOwed`, or at `maxHeldChunks` held buffers, and
/// resume at half), and after half-close everything owed is written before the connection closes.
public struct EchoSession: ConnectionSession, ~Copyable {
    // Stored as usableFromInline so the hot methods inline into each backend's loop. Every
    // connection holds one of these for its whole life, idle or not: 48 bytes (the flags last,
    // so they pack), the bytes kept for a slow peer out of line.
    @usableFromInline var _owed = 0
    @usableFromInline var _heldChunks = 0
    public let maxOwed: Int
    /// `Int.max` when the backend copies instead of holding buffers.
    public let maxHeldChunks: Int
    /// Echo bytes the backend handed back because the peer would not take them yet: allocated
    /// when a peer first falls behind and freed once they are written, so a connection whose
    /// peer keeps up (every idle one) holds a nil pointer instead of a queue.
    @usableFromInline var kept: UnsafeMutablePointer<ByteQueue>?
    @usableFromInline var _inputEnded = false
    @usableFromInline var _inputPaused = false

    /// Bytes received and not yet written back.
    @inlinable public var owed: Int { _owed }
    /// Received buffers the backend holds and has not completely written.
    @inlinable public var heldChunks: Int { _heldChunks }
    /// The peer has shut down its sending side (a read returned end of file).
    @inlinable public var inputEnded: Bool { _inputEnded }
    /// Reading is paused until enough owed output is written.
    @inlinable public var inputPaused: Bool { _inputPaused }

    deinit {
        if let kept {
            kept.deinitialize(count: 1)
            kept.deallocate()
        }
    }

    public init(context: SessionContext) {
        maxOwed = context.maxOwed
        maxHeldChunks = context.maxHeldChunks ?? Int.max
        precondition(maxHeldChunks > 0, "maxHeldChunks must be positive")
    }

    /// A session with a bound and no counters (tests).
    public init(maxOwed: Int, maxHeldChunks: Int? = nil) {
        precondition(maxOwed > 0, "maxOwed must be positive")
        self.maxOwed = maxOwed
        self.maxHeldChunks = maxHeldChunks ?? Int.max
    }

    @inlinable
    public var wantsInput: Bool { !_inputEnded && !_inputPaused }

    @inlinable
    public var hasOutbound: Bool {
        guard let kept else { return false }
        return !kept.pointee.isEmpty
    }

    /// Whether the exchange is over (input ended and nothing is owed).
    public var isFinished: Bool { inputEnded && owed == 0 }

    @inlinable
    public mutating func received(_ bytes: UnsafeRawBufferPointer) -> SessionActions {
        precondition(bytes.count > 0, "a read of zero bytes is end of input: call inputDidEnd()")
        _owed += bytes.count
        if !_inputPaused && _owed >= maxOwed {
            _inputPaused = true
            return [.echoReceived, .pauseInput]
        }
        return .echoReceived
    }

    @inlinable
    public mutating func holdingReceivedBuffer() -> SessionActions {
        _heldChunks += 1
        if !_inputPaused && _heldChunks >= maxHeldChunks {
            _inputPaused = true
            return .pauseInput
        }
        return []
    }

    public mutating func pinOutboundForWrite() -> UnsafeRawBufferPointer {
        guard let kept else { preconditionFailure("nothing outbound to pin") }
        return kept.pointee.pinForWrite()
    }

    public mutating func unpinOutbound() {
        guard let kept else { return }
        kept.pointee.consume(0)
        if kept.pointee.isEmpty { dropKept() }
    }

    public mutating func keepEcho(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if kept == nil {
            kept = .allocate(capacity: 1)
            kept!.initialize(to: ByteQueue())
        }
        kept!.pointee.append(bytes)
        kept!.pointee.commit()
    }

    @inlinable
    public mutating func sent(_ count: Int) -> SessionActions {
        precondition(count >= 0 && count <= _owed, "sent more bytes than were owed")
        _owed -= count
        if let kept, !kept.pointee.isEmpty {
            kept.pointee.consume(count)
            if kept.pointee.isEmpty { dropKept() }
        }
        var actions: SessionActions = []
        if _owed > 0 {
            actions.insert(.send)
        } else if _inputEnded {
            actions.insert(.close)
        }
        if _inputPaused && mayResume { actions.formUnion(resume()) }
        return actions
    }

    @inlinable
    public mutating func echoChunkWritten() -> SessionActions {
        precondition(_heldChunks > 0, "a held chunk was written but none was held")
        _heldChunks -= 1
        return _inputPaused && mayResume ? resume() : []
    }

    /// The peer shut down its sending side: finish writing what is owed, then close.
    public mutating func inputDidEnd() -> SessionActions {
        _inputEnded = true
        return _owed == 0 ? .close : []
    }

    @inlinable
    var mayResume: Bool { _owed <= maxOwed / 2 && _heldChunks <= maxHeldChunks / 2 }

    /// Frees the kept queue once it is empty and unpinned (out of line: a slow peer's path).
    @usableFromInline @inline(never)
    mutating func dropKept() {
        guard let queue = kept else { return }
        queue.deinitialize(count: 1)
        queue.deallocate()
        kept = nil
    }

    @usableFromInline
    mutating func resume() -> SessionActions {
        _inputPaused = false
        return _inputEnded ? [] : .resumeInput
    }
}
