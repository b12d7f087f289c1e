/// What a protocol session asks its backend to do next. Several can come at once
/// (for example ``send`` and ``pauseInput`` when a burst of input outruns the peer's reading).
public struct SessionActions: OptionSet, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Write the owed output, in order, after whatever is already being written.
    public static let send = SessionActions(rawValue: 1 << 0)
    /// Stop reading this connection: its owed output has reached the bound.
    public static let pauseInput = SessionActions(rawValue: 1 << 1)
    /// Reading may go on again: enough owed output was written.
    public static let resumeInput = SessionActions(rawValue: 1 << 2)
    /// The exchange is over: close the connection once no operation on it is in flight.
    public static let close = SessionActions(rawValue: 1 << 3)

    public var description: String {
        let names = [(Self.send, "send"), (.pauseInput, "pauseInput"), (.resumeInput, "resumeInput"), (.close, "close")]
        return "[" + names.filter { contains($0.0) }.map(\.1).joined(separator: ", ") + "]"
    }
}

/// The echo protocol as a sans-I/O state machine: it is told what happened on the connection
/// (bytes arrived, bytes were written, the peer stopped sending) and answers with
/// ``SessionActions``. It never sees the bytes: echo sends back exactly what arrived, so each
/// backend keeps the bytes where they already are (a shared read buffer, a provided ring
/// buffer, a stack buffer) and the session keeps the accounting that makes every backend behave
/// alike: output owed is bounded (reads pause at `maxOwed` and resume at half of it), and after
/// half-close everything owed is written before the connection closes.
///
/// A plain struct with no references: cheap to keep inline in a connection table.
public struct EchoSession: Sendable, Equatable {
    /// Bytes received and not yet written back.
    public private(set) var owed: Int = 0
    /// The peer has shut down its sending side (a read returned end of file).
    public private(set) var inputEnded = false
    /// Reading is paused until enough owed output is written.
    public private(set) var inputPaused = false
    /// The bound on owed output: reads pause when it is reached.
    public let maxOwed: Int

    public init(maxOwed: Int) {
        precondition(maxOwed > 0, "maxOwed must be positive")
        self.maxOwed = maxOwed
    }

    /// Whether the backend should be reading this connection now.
    @inline(__always)
    public var wantsInput: Bool { !inputEnded && !inputPaused }

    /// Whether the exchange is over (input ended and nothing is owed).
    public var isFinished: Bool { inputEnded && owed == 0 }

    /// `count` bytes arrived from the peer.
    @inline(__always)
    public mutating func received(_ count: Int) -> SessionActions {
        precondition(count > 0, "a read of zero bytes is end of input: call inputDidEnd()")
        owed += count
        if !inputPaused && owed >= maxOwed {
            inputPaused = true
            return [.send, .pauseInput]
        }
        return .send
    }

    /// `count` of the owed bytes were written to the peer.
    @inline(__always)
    public mutating func sent(_ count: Int) -> SessionActions {
        precondition(count >= 0 && count <= owed, "sent \(count) bytes but only \(owed) were owed")
        owed -= count
        var actions: SessionActions = []
        if owed > 0 {
            actions.insert(.send)
        } else if inputEnded {
            actions.insert(.close)
        }
        if inputPaused && owed <= maxOwed / 2 {
            inputPaused = false
            if !inputEnded { actions.insert(.resumeInput) }
        }
        return actions
    }

    /// The peer shut down its sending side: finish writing what is owed, then close.
    public mutating func inputDidEnd() -> SessionActions {
        inputEnded = true
        return owed == 0 ? .close : []
    }
}
