/// The echo protocol: every received byte goes back, in order. The session never copies on
/// the way through: it answers ``SessionActions/echoReceived`` and each backend writes the bytes
/// from where they already are (a shared read buffer, a provided ring buffer, a stack buffer),
/// handing back only what the peer would not take yet (``keepEcho(_:)``) or holding its
/// receive buffer. The session keeps the accounting that makes every backend behave alike:
/// output owed is bounded (reads pause at `maxOwed`, or at `maxHeldChunks` held buffers, and
/// resume at half), and after half-close everything owed is written before the connection closes.
public struct EchoSession: ConnectionSession, ~Copyable {
    public static var patternName: String { "echo" }

    /// Bytes received and not yet written back.
    public private(set) var owed: Int = 0
    /// Received buffers the backend holds and has not completely written.
    public private(set) var heldChunks: Int = 0
    /// The peer has shut down its sending side (a read returned end of file).
    public private(set) var inputEnded = false
    /// Reading is paused until enough owed output is written.
    public private(set) var inputPaused = false
    public let maxOwed: Int
    /// `Int.max` when the backend copies instead of holding buffers.
    public let maxHeldChunks: Int
    /// Echo bytes the backend handed back because the peer would not take them yet.
    @usableFromInline var kept = ByteQueue()

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

    @inline(__always)
    public var wantsInput: Bool { !inputEnded && !inputPaused }

    @inline(__always)
    public var hasOutbound: Bool { !kept.isEmpty }

    /// Whether the exchange is over (input ended and nothing is owed).
    public var isFinished: Bool { inputEnded && owed == 0 }

    @inline(__always)
    public mutating func received(_ bytes: UnsafeRawBufferPointer) -> SessionActions {
        precondition(bytes.count > 0, "a read of zero bytes is end of input: call inputDidEnd()")
        owed += bytes.count
        if maxHeldChunks != Int.max { heldChunks += 1 }
        if !inputPaused && (owed >= maxOwed || heldChunks >= maxHeldChunks) {
            inputPaused = true
            return [.echoReceived, .pauseInput]
        }
        return .echoReceived
    }

    public mutating func pinOutboundForWrite() -> UnsafeRawBufferPointer { kept.pinForWrite() }

    public mutating func keepEcho(_ bytes: UnsafeRawBufferPointer) {
        kept.append(bytes)
        kept.commit()
    }

    @inline(__always)
    public mutating func sent(_ count: Int) -> SessionActions {
        precondition(count >= 0 && count <= owed, "sent \(count) bytes but only \(owed) were owed")
        owed -= count
        if !kept.isEmpty { kept.consume(count) }
        var actions: SessionActions = []
        if owed > 0 {
            actions.insert(.send)
        } else if inputEnded {
            actions.insert(.close)
        }
        if inputPaused && mayResume { actions.formUnion(resume()) }
        return actions
    }

    public mutating func echoChunkWritten() -> SessionActions {
        precondition(heldChunks > 0, "a held chunk was written but none was held")
        heldChunks -= 1
        return inputPaused && mayResume ? resume() : []
    }

    /// The peer shut down its sending side: finish writing what is owed, then close.
    public mutating func inputDidEnd() -> SessionActions {
        inputEnded = true
        return owed == 0 ? .close : []
    }

    @inline(__always)
    private var mayResume: Bool { owed <= maxOwed / 2 && heldChunks <= maxHeldChunks / 2 }

    private mutating func resume() -> SessionActions {
        inputPaused = false
        return inputEnded ? [] : .resumeInput
    }
}
