import ServerKit
/// What a protocol session asks its backend to do next. Several can come at once (for example
/// ``send`` and ``pauseInput`` when a burst of requests outruns the peer's reading). A backend
/// executes every action it is given; none is advice.
public struct SessionActions: OptionSet, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Output is owed: write it, in order, after whatever is already being written. The bytes
    /// are the session's committed outbound bytes (``ConnectionSession/pinOutboundForWrite()``)
    /// when there are any, else the received bytes the backend holds for echo.
    @inlinable public static var send: SessionActions { SessionActions(rawValue: 1 << 0) }
    /// The bytes just received are output (echo): write them after everything owed before
    /// them. A backend may write them straight from where they arrived when nothing else is
    /// owed, and must keep the rest, either by holding its receive buffer (reporting
    /// ``ConnectionSession/echoChunkWritten()`` once all of it is written) or by handing them to
    /// ``ConnectionSession/keepEcho(_:)``.
    @inlinable public static var echoReceived: SessionActions { SessionActions(rawValue: 1 << 1) }
    /// Stop reading this connection: the session's bound on owed output is reached.
    @inlinable public static var pauseInput: SessionActions { SessionActions(rawValue: 1 << 2) }
    /// Reading may go on again.
    @inlinable public static var resumeInput: SessionActions { SessionActions(rawValue: 1 << 3) }
    /// The exchange is over and nothing more will be written: close the connection once no
    /// operation on it is in flight.
    @inlinable public static var close: SessionActions { SessionActions(rawValue: 1 << 4) }
    /// The session's timer changed: read ``ConnectionSession/timerDeadline`` and arm the
    /// backend's timer for it (or cancel it when nil).
    @inlinable public static var timerChanged: SessionActions { SessionActions(rawValue: 1 << 5) }

    public var description: String {
        let names = [(Self.send, "send"), (.echoReceived, "echoReceived"), (.pauseInput, "pauseInput"),
                     (.resumeInput, "resumeInput"), (.close, "close"), (.timerChanged, "timerChanged")]
        return "[" + names.filter { contains($0.0) }.map(\.1).joined(separator: ", ") + "]"
    }
}

/// What a backend gives each session it creates: the bounds it must keep and where to count.
public struct SessionContext {
    /// Bytes a connection may owe its peer before it stops reading (resumes at half).
    public var maxOwed: Int
    /// For a backend that holds received buffers for echo instead of copying them (io_uring):
    /// how many it may hold per connection before reading pauses (resumes at half). Nil when
    /// received bytes are copied.
    public var maxHeldChunks: Int?
    /// The largest frame accepted (framed patterns).
    public var maxFrameSize: Int
    /// The owning thread's counters: sessions count requests and refused frames here.
    public var counters: SystemCalls
    /// Posts notifications to connections on other loops or threads (nil where a session has
    /// nobody to notify, as in unit tests).
    public var notifier: Notifier?
    /// The server's shared state for the notification patterns (topics, jobs); nil for the
    /// others.
    public var hub: Hub?
    /// Whether requests' CPU work is really done (false only where the work would just slow
    /// down a check of the protocol, as in the fuzz target).
    public var performsWork = true

    public init(maxOwed: Int, maxHeldChunks: Int? = nil, maxFrameSize: Int = Frame.defaultMaxSize, counters: SystemCalls,
                notifier: Notifier? = nil, hub: Hub? = nil) {
        self.notifier = notifier
        self.hub = hub
        precondition(maxOwed > 0, "maxOwed must be positive")
        self.maxOwed = maxOwed
        self.maxHeldChunks = maxHeldChunks
        self.maxFrameSize = maxFrameSize
        self.counters = counters
    }
}

/// A connection's protocol as a sans-I/O state machine: the seam every backend drives. It is
/// told what happened on the connection (bytes arrived, bytes were written, the peer stopped
/// sending) and answers with ``SessionActions``. It owns every byte it produces and the bound
/// on output owed (flow control lives here and nowhere else), so all backends behave alike and
/// a new protocol is one more conforming type, with no backend touched.
///
/// Sessions are values kept inline in a loop's connection table; one that owns memory is
/// `~Copyable` and frees it when the connection's record is dropped.
public protocol ConnectionSession: ~Copyable, SendableMetatype {
    init(context: SessionContext)

    /// Whether the backend should be reading this connection now.
    var wantsInput: Bool { get }
    /// Output owed to the peer and not yet written (bytes the backend holds for echo included).
    var owed: Int { get }
    /// Whether the session holds committed output to write (else owed bytes are echo bytes the
    /// backend holds).
    var hasOutbound: Bool { get }

    /// Bytes arrived from the peer (never empty: end of input is ``inputDidEnd()``). They are
    /// valid only during the call.
    mutating func received(_ bytes: UnsafeRawBufferPointer) -> SessionActions
    /// The committed outbound bytes. Their address stays valid, and they stay in place, until
    /// ``sent(_:)`` reports the write.
    mutating func pinOutboundForWrite() -> UnsafeRawBufferPointer
    /// The write of the pinned outbound bytes did not happen (the socket was full, or the
    /// connection failed): the bytes stay owed and are no longer pinned.
    mutating func unpinOutbound()
    /// `count` owed bytes were written: from the outbound bytes when ``hasOutbound``, else from
    /// the echo bytes the backend holds.
    mutating func sent(_ count: Int) -> SessionActions
    /// The peer shut down its sending side.
    mutating func inputDidEnd() -> SessionActions

    // Echo hooks: asked only of a session that answers ``SessionActions/echoReceived`` (the
    // backend writes the received bytes back from where they are). Any other session leaves
    // them to the defaults, which stop the process: a backend that asks is broken.

    /// Keeps echoed bytes the backend could not write straight away (a copy, after everything
    /// else owed).
    mutating func keepEcho(_ bytes: UnsafeRawBufferPointer)
    /// The backend holds the buffer the echoed bytes arrived in (instead of copying them): it
    /// counts against ``SessionContext/maxHeldChunks``.
    mutating func holdingReceivedBuffer() -> SessionActions
    /// A received buffer the backend held for echo is now completely written.
    mutating func echoChunkWritten() -> SessionActions

    // Backend services: timers and notifications. A session that uses neither needs none of
    // these (the defaults do nothing).

    /// Whether the session uses timers or notifications. A backend that has to pay for them
    /// on every read (blocking: a poll(2) on the socket and a mailbox) does so only then.
    static var usesServices: Bool { get }
    /// The connection is open at `address`, the address other sessions post to through the
    /// context's ``Notifier``. Called once, before any bytes arrive.
    mutating func opened(at address: ConnectionAddress) -> SessionActions
    /// When the session's timer is to fire (monotonic nanoseconds), or nil for none. Read by
    /// the backend after ``SessionActions/timerChanged``.
    var timerDeadline: UInt64? { get }
    /// The timer's deadline has passed. The timer is not re-armed unless the session says so.
    mutating func timerFired() -> SessionActions
    /// A notification posted to this connection arrived.
    mutating func notified(_ value: UInt64) -> SessionActions
}

extension ConnectionSession where Self: ~Copyable {
    @inlinable public static var usesServices: Bool { false }
    @inlinable public mutating func opened(at address: ConnectionAddress) -> SessionActions { [] }
    @inlinable public var timerDeadline: UInt64? { nil }
    @inlinable public mutating func timerFired() -> SessionActions { [] }
    @inlinable public mutating func notified(_ value: UInt64) -> SessionActions { [] }

    public mutating func keepEcho(_ bytes: UnsafeRawBufferPointer) {
        preconditionFailure("\(Self.self) never answers .echoReceived, so it keeps no echo bytes")
    }
    public mutating func holdingReceivedBuffer() -> SessionActions {
        preconditionFailure("\(Self.self) never answers .echoReceived, so no received buffer is held for it")
    }
    public mutating func echoChunkWritten() -> SessionActions {
        preconditionFailure("\(Self.self) never answers .echoReceived, so no held buffer is written for it")
    }
}

/// The protocol a server speaks on every connection (`serve --pattern`).
public enum ServerPattern: String, CaseIterable, Sendable, CustomStringConvertible {
    /// Bytes back exactly as they came: no framing, no parsing; measures the I/O path alone.
    case echo
    /// Framed request/response (`docs/PROTOCOL.md`): each REQUEST is parsed, costs the server
    /// its `work_us` of CPU, and is answered in order by a RESPONSE.
    case rpc
    /// SUBSCRIBE to a topic, then every EVENT published to it (by PUBLISH on any connection or
    /// the server's `--event-rate`), through a bounded queue with a slow-consumer policy.
    case push
    /// Short polling (SUBMIT a job, ask its STATUS until DONE) and long polling (WAIT for the
    /// events after a cursor, held until there are some or the timeout); PUBLISH feeds them.
    case poll

    /// Whether connections share server state (topics, jobs) through a ``Hub``.
    public var usesHub: Bool { self == .push || self == .poll }

    public var description: String { rawValue }

    /// Calls `visitor` with the session type that speaks this pattern. A backend builds its
    /// loops in the visitor, generic over the session type: each pattern gets its own
    /// specialised loop (inlinable, so the specialisation happens in the backend's module), and
    /// a new pattern is a new case here, with no backend touched.
    @inlinable
    public func withSessionType<Visitor: SessionTypeVisitor>(_ visitor: Visitor) throws -> Visitor.Result {
        switch self {
        case .echo: try visitor.visit(EchoSession.self)
        case .rpc: try visitor.visit(RpcSession.self)
        case .push: try visitor.visit(NotificationSession<PushPattern>.self)
        case .poll: try visitor.visit(NotificationSession<PollPattern>.self)
        }
    }
}

/// Something generic over a session type, handed the concrete type of a run-time pattern by
/// ``ServerPattern/withSessionType(_:)``.
public protocol SessionTypeVisitor {
    associatedtype Result
    func visit<Session: ConnectionSession & ~Copyable>(_ type: Session.Type) throws -> Result
}
