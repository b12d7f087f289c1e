import CLibUring
import Dispatch
import EchoCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The completion model: `threads` rings, each on its own thread with its own `SO_REUSEPORT`
/// listener, multishot accept, multishot recv into a provided buffer ring and batched submission.
public final class IoUringServer: EchoServer, @unchecked Sendable {
    public let kind = BackendKind.ioUring
    private let configuration: ServerConfiguration
    private let registry = CounterRegistry()
    private let limit: ConnectionLimit
    private let stopping = Atomic<Bool>(false)
    private let setupFlags = Mutex<String?>(nil)
    // Written by start()/stop() on the controlling thread only.
    private var threads: [OSThread] = []
    private var wakeFDs: [Int32] = []
    private var bound: SocketAddress

    public init(configuration: ServerConfiguration) {
        self.configuration = configuration
        self.limit = ConnectionLimit(maximum: configuration.maxConnections)
        self.bound = configuration.address
    }

    public var boundAddress: SocketAddress { bound }

    public func start() throws {
        let loops = max(configuration.threads, 1)
        let (listeners, address) = try Socket.listenOnEachLoop(configuration.address, count: loops, nonBlocking: false)
        bound = address
        // The ring must be created on the thread that submits to it (SINGLE_ISSUER), so each
        // loop reports its set-up outcome back before start() returns.
        let outcome = Mutex<[Result<String, any Error>]>([])
        let ready = DispatchSemaphore(value: 0)
        var failure: (any Error)?
        for listener in listeners {
            let counters = registry.makeCounters()
            let wake: Int32
            do { wake = try SystemCalls(counters: counters).makeEventFD() } catch { failure = error; close(listener); continue }
            wakeFDs.append(wake)
            let setup = RingEventLoop.Setup(
                listener: listener, wake: wake, counters: counters, limit: limit,
                configuration: configuration)
            do {
                threads.append(try OSThread(name: "iob-uring-\(threads.count)") { [self] in
                    let loop: RingEventLoop
                    do {
                        loop = try RingEventLoop(setup)
                        outcome.withLock { $0.append(.success(loop.setupFlagNames)) }
                    } catch {
                        outcome.withLock { $0.append(.failure(error)) }
                        ready.signal()
                        close(setup.listener)
                        return
                    }
                    ready.signal()
                    var running = loop
                    running.run(until: self.stopping)
                })
            } catch {
                failure = error
                close(listener)
            }
        }
        for _ in threads { ready.wait() }
        for result in outcome.withLock({ $0 }) {
            switch result {
            case .success(let flags):
                let wait = configuration.batchWaitMicroseconds
                setupFlags.withLock { $0 = wait > 0 ? "\(flags)|MIN_TIMEOUT=\(wait)us" : flags }
            case .failure(let error): failure = error
            }
        }
        if let failure {
            stop()
            if let error = failure as? SystemError, error.call == RingEventLoop.minTimeoutCall {
                throw UsageError("--batch-wait needs Linux 6.12 or later (IORING_FEAT_MIN_TIMEOUT), which this kernel's io_uring lacks: leave --batch-wait out")
            }
            throw UsageError("cannot start io_uring: \(failure); the kernel refused the ring (is io_uring enabled? see /proc/sys/kernel/io_uring_disabled)")
        }
    }

    public func stats() -> ServerStats {
        ServerStats(backend: kind, threads: max(configuration.threads, 1), counters: registry.totals(),
                    ioUringSetup: setupFlags.withLock { $0 })
    }

    public func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        var one: UInt64 = 1
        for fd in wakeFDs { _ = write(fd, &one, 8) }
        for thread in threads { thread.join() }
        threads.removeAll()
        for fd in wakeFDs { close(fd) }
        wakeFDs.removeAll()
    }
}
