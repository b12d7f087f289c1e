import EchoCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The readiness model: `threads` event loops, each with its own `SO_REUSEPORT` listener and
/// epoll instance, non-blocking sockets, level-triggered events.
public final class EpollServer: EchoServer, Sendable {
    public let kind = BackendKind.epoll
    private let configuration: ServerConfiguration
    private let registry = CounterRegistry()
    private let limit: ConnectionLimit
    /// Ends connections whose peer may still be sending (after a refusal) without an RST.
    private let closer: LingeringCloser
    private let group = LoopGroup(threadName: "iob-epoll")
    private let bound: Mutex<SocketAddress>
    /// Notifications between connections on different loops, and the notification patterns'
    /// topics and jobs.
    private let hub: Hub
    /// Set when the server was made for one session type (not a pattern's).
    private let startForSessionType: (@Sendable (EpollServer) throws -> Void)?

    public init(configuration: ServerConfiguration) {
        self.configuration = configuration
        self.limit = ConnectionLimit(maximum: configuration.maxConnections)
        closer = LingeringCloser(limit: limit, registry: registry)
        self.bound = Mutex(configuration.address)
        hub = Hub(options: configuration.notifications)
        startForSessionType = nil
    }

    /// A server whose connections speak `Session`, any conforming type (`configuration.pattern`
    /// is then only what stats report): the backend is generic over the protocol it serves.
    public init<Session: ConnectionSession & ~Copyable>(configuration: ServerConfiguration, session: Session.Type) {
        self.configuration = configuration
        self.limit = ConnectionLimit(maximum: configuration.maxConnections)
        closer = LingeringCloser(limit: limit, registry: registry)
        self.bound = Mutex(configuration.address)
        hub = Hub(options: configuration.notifications)
        startForSessionType = { try $0.startLoops(Session.self) }
    }

    public var boundAddress: SocketAddress { bound.withLock { $0 } }

    public func start() throws {
        if let startForSessionType {
            try startForSessionType(self)
        } else {
            try configuration.pattern.withSessionType(LoopStarter(server: self))
        }
        do {
            try hub.start(registry: registry)
        } catch {
            group.stop()
            throw error
        }
    }

    /// Starts the loops for the pattern's session type (a specialised loop per pattern).
    private struct LoopStarter: SessionTypeVisitor {
        let server: EpollServer
        func visit<Session: ConnectionSession & ~Copyable>(_ type: Session.Type) throws { try server.startLoops(type) }
    }

    fileprivate func startLoops<Session: ConnectionSession & ~Copyable>(_: Session.Type) throws {
        let (listeners, address) = try Socket.listenOnEachLoop(configuration.address, count: max(configuration.threads, 1), nonBlocking: true)
        bound.withLock { $0 = address }
        let limit = self.limit, closer = self.closer, configuration = self.configuration, hub = self.hub
        try group.start(count: listeners.count, registry: registry, unclaimed: { close(listeners[$0]) }) { resources, ready, stopping in
            var loop = try EpollEventLoop<Session>(listener: listeners[resources.index], resources: resources, limit: limit,
                                               closer: closer, configuration: configuration, hub: hub)
            ready(loop.setupDescription)
            loop.run(until: stopping)
        }
    }

    public func stats() -> ServerStats {
        var stats = ServerStats(backend: kind, threads: max(configuration.threads, 1), counters: registry.totals())
        stats.pattern = configuration.pattern
        hub.record(into: &stats)
        return stats
    }

    public func stop() {
        hub.stop()
        group.stop()
        closer.stop()
    }
}
