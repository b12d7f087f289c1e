#if canImport(Glibc)
import Glibc
#endif

/// The I/O models a server can be built on; chosen at run time, so one binary holds all three.
public enum BackendKind: String, CaseIterable, Sendable, CustomStringConvertible {
    /// One OS thread per connection, blocking `recv`/`send`.
    case blocking
    /// Readiness: non-blocking sockets and `epoll_wait`.
    case epoll
    /// Completion: io_uring with multishot accept/recv and a provided buffer ring.
    case ioUring = "io_uring"
    /// Not an I/O model of ours: SwiftNIO, the Swift ecosystem's standard runtime, measured
    /// beside the three as a reference peer.
    case nio

    public var description: String { rawValue }

    /// The three I/O models this project compares (everything but the reference peer).
    public static let models: [BackendKind] = [.blocking, .epoll, .ioUring]

    /// Whether this is a reference peer rather than one of the three models.
    public var isReferencePeer: Bool { self == .nio }
}

/// Everything a backend needs to serve.
public struct ServerConfiguration: Sendable {
    /// Where to listen; port 0 picks a free port.
    public var address: SocketAddress
    /// Event loops (epoll, io_uring); ignored by the blocking backend, which has one per connection.
    public var threads: Int = 1
    /// Connections beyond this many open at once are accepted, closed at once and counted as refused.
    public var maxConnections: Int = 1_000_000
    /// Stack size of each blocking connection thread.
    public var threadStackSize: Int = 64 * 1024
    /// Bytes a connection may owe its peer before the server stops reading from it.
    public var maxOwedPerConnection: Int = 256 * 1024
    /// The protocol every connection speaks.
    public var pattern: ServerPattern = .echo
    /// Framed patterns: the largest frame accepted, header included.
    public var maxFrameSize: Int = Frame.defaultMaxSize
    /// push and poll: queue bound, slow-consumer policy, the server's own events, jobs.
    public var notifications = NotificationOptions()
    /// io_uring: buffers in each ring's provided buffer ring (a power of two).
    public var ringBufferCount: Int = 1024
    /// io_uring: size of each provided buffer.
    public var ringBufferSize: Int = 16 * 1024
    /// io_uring: submission queue entries per ring.
    public var ringEntries: Int = 4096
    /// io_uring: how long a loop may wait for a batch of completions (one per four connections,
    /// from 32 connections) before any single completion ends the wait; 0 waits for one completion, as an
    /// unbatched loop does. Trades up to this much latency for fewer `io_uring_enter` calls
    /// and wake-ups. Needs Linux 6.12 (`IORING_FEAT_MIN_TIMEOUT`).
    public var batchWaitMicroseconds: UInt32 = 0
    /// io_uring: wait for completions in `poll(2)` on the ring's descriptor, then reap them
    /// without blocking, instead of waiting inside `io_uring_enter`. For running under valgrind
    /// (3.19), which does not know that `io_uring_enter` can block: a thread waiting in it keeps
    /// valgrind's lock, and every other thread of the server stops until a completion arrives.
    /// Costs a `poll` and a second `io_uring_enter` per wait that blocks.
    public var ringWaitByPoll = false
    /// io_uring: receive with one single-shot recv per buffer instead of a multishot recv capped
    /// at what the session may still take (the way of kernels before 6.17, which lack the cap;
    /// chosen on such kernels by itself). Each recv then reads at most one buffer.
    public var ringSingleShotRecv = false
    /// Deliberate extra cost per received chunk, for proving that the regression check catches
    /// a slower server (hidden `serve` options). Zero in every real measurement.
    public var injection = CostInjection()

    public init(address: SocketAddress) { self.address = address }
}

/// Extra work a server does per received chunk when asked to (tests of the regression check).
public struct CostInjection: Sendable, Equatable {
    /// Extra system calls (`getppid`, counted as "other").
    public var syscalls = 0 { didSet { refresh() } }
    /// Busy-waiting, in nanoseconds.
    public var delayNanoseconds: UInt64 = 0 { didSet { refresh() } }
    /// Heap allocations (malloc and free of 64 bytes).
    public var allocations = 0 { didSet { refresh() } }
    /// Iterations of a loop of a fixed, small number of instructions, run every 16th chunk so
    /// its fixed cost spreads thin (counted regressions of a few percent).
    public var loopIterations = 0 { didSet { refresh() } }

    /// Stored, so the uninjected path of a backend costs one load and one branch.
    public private(set) var isActive = false
    /// Whether something other than the loop runs on every chunk.
    public private(set) var everyChunk = false

    public init() {}

    private mutating func refresh() {
        everyChunk = syscalls > 0 || delayNanoseconds > 0 || allocations > 0
        isActive = everyChunk || loopIterations > 0
    }
}

/// A snapshot of a server's counters.
public struct ServerStats: Sendable {
    public var backend: BackendKind
    public var threads: Int
    public var pattern: ServerPattern = .echo
    public var counters: CounterTotals
    /// io_uring only: the setup flags in use, for example `SINGLE_ISSUER|DEFER_TASKRUN`.
    public var ioUringSetup: String?
    /// Counters this backend cannot provide (reported as null), for example `syscalls` for a
    /// runtime that makes its own system calls.
    public var unavailable: [String] = []
    /// The notification patterns: subscriptions and held long polls now.
    public var subscribers = 0
    public var heldWaits = 0

    public init(backend: BackendKind, threads: Int, counters: CounterTotals, ioUringSetup: String? = nil) {
        self.backend = backend
        self.threads = threads
        self.counters = counters
        self.ioUringSetup = ioUringSetup
    }

    public var accepted: UInt64 { counters[.accepted] }
    public var open: UInt64 { counters[.accepted] &- counters[.closed] }

    /// The stats line (one JSON object, the type the harness reads).
    public var line: StatsLine { StatsLine(self) }
}

/// A server backend. The protocol sessions are shared; a backend maps their actions onto its
/// I/O mechanism and nothing more.
///
/// Lifecycle: ``start()`` binds and returns once every listener is accepting; ``stop()`` closes
/// the listeners and every connection, joins every thread and returns when all descriptors the
/// server opened are closed. Both are called from one controlling thread.
public protocol EchoServer: AnyObject, Sendable {
    var kind: BackendKind { get }
    /// Binds and starts serving. Throws a ``UsageError`` or ``SystemError`` naming the problem.
    func start() throws
    /// The address actually bound (its real port when port 0 was asked for). Valid after start.
    var boundAddress: SocketAddress { get }
    /// Counters summed over the server's threads; callable from any thread at any time.
    func stats() -> ServerStats
    /// Stops gracefully: no new connections, open ones closed, threads joined.
    func stop()
}
