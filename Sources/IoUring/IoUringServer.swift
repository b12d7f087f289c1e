import CLibUring
import ServerKit
import Protocols
import BackendKit
import Synchronization

extension BackendKind {
    /// Completion with io_uring.
    public static let ioUring = BackendKind("io_uring")
}

/// The completion model: `threads` rings, each on its own thread with its own `SO_REUSEPORT`
/// listener, multishot accept, multishot recv into a provided buffer ring and batched
/// submission (``RingEventLoop``).
public enum IoUringBackend: EventLoopBackend, BackendFactory {
    public static var kind: BackendKind { .ioUring }
    public static var threadName: String { "iob-uring" }
    public static var nonBlockingListener: Bool { false }

    /// The default's own line, written here: through the default the ring's loop measured 8
    /// user-space instructions more per message (counted, 1 connection: 725.6 against 718.0),
    /// a difference in what the compiler inlines, not in the code.
    public static func loopBody(for pattern: ServerPattern) throws -> EventLoopBody<Self>.Body {
        try pattern.withSessionType(EventLoopBody<Self>())
    }

    /// Each ring is made on its own loop thread: it must be created by the thread that submits to it.
    public static func runLoop<Session: ConnectionSession & ~Copyable>(
        _: Session.Type, listener: consuming OwnedDescriptor, resources: LoopResources, services: LoopServices,
        ready: (String?) -> Void, stopping: borrowing Atomic<Bool>) throws {
        var loop = try RingEventLoop<Session>(listener: listener, resources: resources, limit: services.limit, closer: services.closer,
                                              health: services.health, configuration: services.configuration, hub: services.hub)
        ready(loop.setupDescription)
        loop.run(until: stopping)
    }

    public static func explainStartFailure(_ error: any Error) -> any Error {
        if let error = error as? SystemError, error.call == Ring.minTimeoutCall {
            return UsageError("--batch-wait needs Linux 6.12 or later (IORING_FEAT_MIN_TIMEOUT), which this kernel's io_uring lacks: leave --batch-wait out")
        }
        if let error = error as? SystemError, error.call.hasPrefix("io_uring") {
            return UsageError("cannot start io_uring: \(error); the kernel refused the ring (is io_uring enabled? see /proc/sys/kernel/io_uring_disabled)")
        }
        return error
    }
}

/// The io_uring server.
public typealias IoUringServer = EventLoopServer<IoUringBackend>
