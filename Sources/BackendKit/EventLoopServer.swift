import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import ServerKit
import Protocols

/// What an event-loop backend implements: a reference for new backends, in the spirit of
/// SwiftNIO's `_SelectorBackendProtocol` and mio's selectors. ``EventLoopServer`` does the rest
/// (listeners, threads, the start handshake, stop, the connection limit, the lingering closer,
/// the hub, stats), the same for every backend.
///
/// The checklist for a loop made by ``runLoop(_:listener:resources:services:ready:stopping:)``:
///
/// 1. Make the loop on the calling thread (its own thread) and take ownership of `listener`
///    (an ``OwnedDescriptor``: it closes when the loop, or the failed attempt to make it, ends).
/// 2. Call `ready` once with what it set up (or nil), then serve until `stopping` is set and
///    `resources.wake` fires; a failed wait reports itself and ends the loop.
/// 3. Register `resources.wake` with ``Notifier/register(wake:closingWake:)``: its mailbox's
///    notes go to `session.notified(_:)`; arm the sessions' timers in a ``TimerQueue``.
/// 4. Accept with the ``ConnectionLimit`` (`services.limit`): a connection over it is closed at
///    once and counted `refused`; out of descriptors, pause accepting for a while.
/// 5. Drive each connection's session (``ConnectionSession``) and carry out its actions; a
///    `close` with input not ended is handed to `services.closer` (never an RST).
/// 6. Count every system call through ``SystemCalls`` made from `resources.counters`.
/// 7. At the end close every connection, unregister from the notifier, and close whatever the
///    loop opened.
///
/// A backend declares its ``kind`` and ``runLoop(_:listener:resources:services:ready:stopping:)``
/// (and ``nonBlockingListener`` if its listeners block); the rest has defaults. The loop is
/// generic over the session type; ``loopBody(for:)``'s default is inlinable, so the witness the
/// backend's conformance emits in its own module instantiates `runLoop` there for each
/// pattern, and the hot path is specialised for each protocol (the counted check holds it).
public protocol EventLoopBackend: Sendable {
    /// The backend's name, as in the registry.
    static var kind: BackendKind { get }
    /// Prefix of its loop threads' names (default `iob-` and its name: `iob-epoll-0`, …).
    static var threadName: String { get }
    /// Whether its listeners are non-blocking (the default: readiness) or blocking.
    static var nonBlockingListener: Bool { get }
    /// Makes one loop for `Session` on the calling thread and runs it; see the checklist.
    static func runLoop<Session: ConnectionSession & ~Copyable>(
        _ session: Session.Type, listener: consuming OwnedDescriptor, resources: LoopResources, services: LoopServices,
        ready: (String?) -> Void, stopping: borrowing Atomic<Bool>) throws
    /// ``runLoop(_:listener:resources:services:ready:stopping:)`` for the session type of
    /// `pattern` (the default: `pattern.withSessionType(EventLoopBody<Self>())`, inlinable).
    static func loopBody(for pattern: ServerPattern) throws -> EventLoopBody<Self>.Body
    /// What a person should read when starting failed with `error` (by default the error itself).
    static func explainStartFailure(_ error: any Error) -> any Error
}

extension EventLoopBackend {
    public static func explainStartFailure(_ error: any Error) -> any Error { error }
    public static var threadName: String { "iob-" + kind.rawValue }
    public static var nonBlockingListener: Bool { true }

    @inlinable
    public static func loopBody(for pattern: ServerPattern) throws -> EventLoopBody<Self>.Body {
        try pattern.withSessionType(EventLoopBody<Self>())
    }
}

extension EventLoopBackend where Self: BackendFactory {
    public static func makeServer(configuration: ServerConfiguration) -> any BackendServer {
        EventLoopServer<Self>(configuration: configuration)
    }

    public static func makeServer<Session: ConnectionSession & ~Copyable>(configuration: ServerConfiguration, session: Session.Type) -> (any BackendServer)? {
        EventLoopServer<Self>(configuration: configuration, session: session)
    }
}

/// The body of a loop thread for one session type: what ``EventLoopBackend/loopBody(for:)``
/// returns.
@frozen
public struct EventLoopBody<Backend: EventLoopBackend>: SessionTypeVisitor {
    public typealias Body = @Sendable (_ listener: consuming OwnedDescriptor, LoopResources, LoopServices, _ ready: (String?) -> Void, _ stopping: borrowing Atomic<Bool>) throws -> Void

    @inlinable public init() {}

    @inlinable
    public func visit<Session: ConnectionSession & ~Copyable>(_: Session.Type) -> Body {
        { listener, resources, services, ready, stopping in
            try Backend.runLoop(Session.self, listener: listener, resources: resources, services: services, ready: ready, stopping: stopping)
        }
    }
}

/// What every loop of a server shares.
public struct LoopServices: Sendable {
    public let configuration: ServerConfiguration
    public let limit: ConnectionLimit
    /// Ends connections whose peer may still be sending (after a refusal) without an RST.
    public let closer: LingeringCloser
    /// Notifications between connections on different loops, and the notification patterns'
    /// topics and jobs.
    public let hub: Hub
    /// Where a loop that cannot go on says so (stats report it; the harness marks its rows).
    public let health: ServerHealth
}

/// Whether a server's loops are all still serving. A loop whose wait fails cannot serve its
/// connections any more while the rest of the server (and its `stats`) goes on: it records why
/// here, stats say `"failure"`, and the harness marks every row measured on it invalid.
public final class ServerHealth: Sendable {
    private let failures = Mutex<[String]>([])
    private let injected = Atomic<Bool>(false)

    public init() {}

    /// A loop stopped: `reason` names it and the error.
    public func loopFailed(_ reason: String) {
        reportError("iobench: \(reason)")
        failures.withLock { $0.append(reason) }
    }

    /// The first failure, with how many there were.
    public var failure: String? {
        failures.withLock { $0.isEmpty ? nil : $0.count == 1 ? $0[0] : "\($0[0]) (and \($0.count - 1) more)" }
    }

    /// Asks the loops to fail at their next wake-up (``BackendServer/injectLoopFailure()``).
    public func injectFailure() { injected.store(true, ordering: .relaxed) }

    /// Read by a loop when it is woken (off its hot path).
    public var failureInjected: Bool { injected.load(ordering: .relaxed) }
}

/// An event-loop server: `threads` loops of `Backend`, each on its own thread with its own
/// `SO_REUSEPORT` listener. The shared part of every event-loop backend.
public final class EventLoopServer<Backend: EventLoopBackend>: BackendServer, Sendable {
    public var kind: BackendKind { Backend.kind }
    private let services: LoopServices
    private let registry = CounterRegistry()
    private let group = LoopGroup(threadName: Backend.threadName)
    private let bound: Mutex<SocketAddress>
    /// Set when the server was made for one session type (not a pattern's).
    private let sessionBody: EventLoopBody<Backend>.Body?

    public init(configuration: ServerConfiguration) {
        services = Self.services(configuration, registry: registry)
        bound = Mutex(configuration.address)
        sessionBody = nil
    }

    /// A server whose connections speak `Session`, any conforming type (`configuration.pattern`
    /// is then only what stats report): the backend is generic over the protocol it serves.
    public init<Session: ConnectionSession & ~Copyable>(configuration: ServerConfiguration, session: Session.Type) {
        services = Self.services(configuration, registry: registry)
        bound = Mutex(configuration.address)
        sessionBody = EventLoopBody<Backend>().visit(Session.self)
    }

    private static func services(_ configuration: ServerConfiguration, registry: CounterRegistry) -> LoopServices {
        let limit = ConnectionLimit(maximum: configuration.maxConnections)
        return LoopServices(configuration: configuration, limit: limit, closer: LingeringCloser(limit: limit, registry: registry),
                            hub: Hub(options: configuration.notifications), health: ServerHealth())
    }

    public var boundAddress: SocketAddress { bound.withLock { $0 } }

    public func start() throws {
        do {
            try startLoops(sessionBody ?? (try Backend.loopBody(for: services.configuration.pattern)))
        } catch {
            throw Backend.explainStartFailure(error)
        }
        do {
            try services.hub.start(registry: registry)
        } catch {
            group.stop()
            throw error
        }
    }

    private func startLoops(_ body: @escaping EventLoopBody<Backend>.Body) throws {
        let configuration = services.configuration
        let (listeners, address) = try Socket.listenOnEachLoop(configuration.address, count: max(configuration.threads, 1),
                                                               nonBlocking: Backend.nonBlockingListener)
        bound.withLock { $0 = address }
        let services = self.services
        // Each loop takes its listener on its own thread; one whose loop never started is
        // closed with the handoff.
        try group.start(count: listeners.count, registry: registry) { resources, ready, stopping in
            guard let listener = listeners.take(resources.index) else { preconditionFailure("loop \(resources.index)'s listener was taken twice") }
            try body(listener, resources, services, ready, stopping)
        }
    }

    public func stats() -> ServerStats {
        let configuration = services.configuration
        var stats = ServerStats(backend: kind, threads: max(configuration.threads, 1), counters: registry.totals(),
                                setup: group.setupDescriptions.first)
        stats.pattern = configuration.pattern
        stats.failure = services.health.failure
        services.hub.record(into: &stats)
        return stats
    }

    public func injectLoopFailure() {
        services.health.injectFailure()
        group.wakeAll()
    }

    public func stop() {
        services.hub.stop()
        group.stop()
        services.closer.stop()
    }
}
