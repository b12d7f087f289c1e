import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What a loop is given when it is made on its thread.
public struct LoopResources: Sendable {
    /// The loop's index in the group, 0 ..< count.
    public let index: Int
    /// An eventfd the group writes to when the loop must look at the stop flag. Owned by the
    /// group (closed after the loop's thread has ended).
    public let wake: Int32
    /// The loop thread's own counters.
    public let counters: ThreadCounters
}

/// The scaffolding shared by the event-loop servers (epoll, io_uring): one OS thread per loop,
/// each with its wake eventfd; a start handshake in which every loop is made on its own thread
/// (an io_uring ring must be created by the thread that submits to it) and reports whether it
/// could be; and one stop that sets the flag, wakes every loop, joins every thread and closes
/// the wake descriptors. A failed start stops the loops that did start before it throws, so
/// nothing is left running or open.
public final class LoopGroup: Sendable {
    private struct Started {
        var threads: [OSThread] = []
        var wakes: [Int32] = []
    }

    private let threadName: String
    private let stopping = Atomic<Bool>(false)
    private let started = Mutex(Started())
    private let descriptions = Mutex<[String]>([])

    /// `threadName` is prefixed to each loop thread's index (`iob-epoll-0`, …).
    public init(threadName: String) { self.threadName = threadName }

    /// The setup each loop reported (``EventLoop/setupDescription``), in no particular order.
    public var setupDescriptions: [String] { descriptions.withLock { $0 } }

    /// Runs `count` loops, each by `serve` on its own thread, and returns once every one is
    /// serving. `serve` makes its loop, calls `ready` with what it set up (or throws, after
    /// releasing what it was given for that loop, such as its listener), then runs the loop
    /// until `stopping` is set and its wake descriptor fires. The loop is written out in
    /// `serve` itself, so the backend's compiler specialises it for its session type. If any
    /// loop could not be made, every loop is stopped and the first error is rethrown (what a
    /// loop that never ran was given stays with its owner: a ``DescriptorHandoff`` closes the
    /// listeners nobody took).
    public func start(
        count: Int, registry: CounterRegistry,
        serve: @escaping @Sendable (LoopResources, _ ready: (String?) -> Void, _ stopping: borrowing Atomic<Bool>) throws -> Void
    ) throws {
        let outcomes = Mutex<[(any Error)?]>([])
        let ready = DispatchSemaphore(value: 0)
        var failure: (any Error)?
        for index in 0..<count {
            let counters = registry.makeCounters()
            let wake: Int32
            do {
                wake = try SystemCalls(counters: counters).makeEventFD()
            } catch {
                failure = failure ?? error
                break
            }
            let resources = LoopResources(index: index, wake: wake, counters: counters)
            do {
                let thread = try OSThread(name: "\(threadName)-\(index)") { [self] in
                    var reported = false
                    do {
                        try serve(resources, { description in
                            if let description { descriptions.withLock { $0.append(description) } }
                            outcomes.withLock { $0.append(nil) }
                            reported = true
                            ready.signal()
                        }, stopping)
                    } catch {
                        precondition(!reported, "a loop failed after it reported ready")
                        outcomes.withLock { $0.append(error) }
                        ready.signal()
                    }
                }
                started.withLock { $0.threads.append(thread); $0.wakes.append(wake) }
            } catch {
                SystemCalls.Uncounted.close(wake)
                failure = failure ?? error
                break
            }
        }
        let launched = started.withLock { $0.threads.count }
        for _ in 0..<launched { ready.wait() }
        if failure == nil { failure = outcomes.withLock { $0.compactMap { $0 }.first } }
        if let failure {
            stop()
            throw failure
        }
    }

    /// Wakes every loop (it then looks at its flags). Writes under the lock: `stop()` takes the
    /// descriptors out under it before closing them, so none is written after its close.
    public func wakeAll() {
        started.withLock { state in
            for fd in state.wakes { SystemCalls.Uncounted.signal(eventFD: fd) }
        }
    }

    /// Sets the stop flag, wakes every loop, joins every thread and closes the wake descriptors.
    /// Idempotent.
    public func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        let (threads, wakes) = started.withLock { state in
            defer { state = Started() }
            return (state.threads, state.wakes)
        }
        for fd in wakes { SystemCalls.Uncounted.signal(eventFD: fd) }
        for thread in threads { thread.join() }
        for fd in wakes { SystemCalls.Uncounted.close(fd) }
    }
}
