import ServerKit
import Protocols
import BackendKit
import Readiness
import Synchronization

extension BackendKind {
    /// Readiness with ppoll(2): the whole set passed and scanned on every wait.
    public static let ppoll = BackendKind("ppoll")
}

/// Readiness as it was before epoll: `threads` event loops, each with its own `SO_REUSEPORT`
/// listener, the same ``ReadinessEventLoop`` as epoll on a ``PollSelector``. Only the
/// selector differs, so the two backends' difference is the cost of the O(n) wait.
public enum PPollBackend: EventLoopBackend, BackendFactory {
    public static var kind: BackendKind { .ppoll }

    public static func runLoop<Session: ConnectionSession & ~Copyable>(
        _ session: Session.Type, listener: consuming OwnedDescriptor, resources: LoopResources, services: LoopServices,
        ready: (String?) -> Void, stopping: borrowing Atomic<Bool>) throws {
        try runReadinessLoop(PollSelector.self, session, listener: listener, resources: resources, services: services, ready: ready, stopping: stopping)
    }
}
