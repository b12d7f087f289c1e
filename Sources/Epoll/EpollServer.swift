import ServerKit
import Protocols
import BackendKit
import Readiness
import Synchronization

extension BackendKind {
    /// Readiness with `epoll_wait`.
    public static let epoll = BackendKind("epoll")
}

/// The readiness model: `threads` event loops, each with its own `SO_REUSEPORT` listener and
/// epoll instance, non-blocking sockets, level-triggered events (a ``ReadinessEventLoop`` on an
/// ``EpollSelector``).
public enum EpollBackend: EventLoopBackend, BackendFactory {
    public static var kind: BackendKind { .epoll }

    public static func runLoop<Session: ConnectionSession & ~Copyable>(
        _ session: Session.Type, listener: consuming OwnedDescriptor, resources: LoopResources, services: LoopServices,
        ready: (String?) -> Void, stopping: borrowing Atomic<Bool>) throws {
        try runReadinessLoop(EpollSelector.self, session, listener: listener, resources: resources, services: services, ready: ready, stopping: stopping)
    }
}

/// The epoll server.
public typealias EpollServer = EventLoopServer<EpollBackend>
