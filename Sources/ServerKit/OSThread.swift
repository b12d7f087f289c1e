import CSystemShims
#if canImport(Glibc)
import Glibc
#endif

/// A joinable POSIX thread with a chosen stack size. The backends use these rather than a pool
/// so each connection (blocking) or loop (epoll, io_uring) is exactly one kernel thread.
public final class OSThread: Sendable {
    private let handle: pthread_t

    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Every thread a server starts has a name beginning with this, so what a server leaves
    /// behind after stop can be counted (``ProcessResources/threadCount(namePrefix:)``).
    public static let serverThreadPrefix = "iob-"

    /// Starts `body` on a new thread named `name` (15 bytes at most are kept).
    /// `stackSize` 0 keeps the system default.
    public init(name: String, stackSize: Int = 0, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
        var handle = pthread_t()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        if stackSize > 0 {
            let size = max(stackSize, Int(PTHREAD_STACK_MIN))
            let rc = pthread_attr_setstacksize(&attributes, size)
            if rc != 0 { throw SystemError("pthread_attr_setstacksize", Errno(rawValue: rc)) }
        }
        let box = Unmanaged.passRetained(Box {
            iobench_set_thread_name(name)
            body()
        }).toOpaque()
        let rc = pthread_create(&handle, &attributes, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            throw SystemError("pthread_create", Errno(rawValue: rc))
        }
        self.handle = handle
    }

    /// Waits for the thread to end.
    public func join() {
        pthread_join(handle, nil)
    }

    /// Lets the thread's resources go when it ends, without a join.
    public func detach() {
        pthread_detach(handle)
    }
}
