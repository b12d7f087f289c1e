#if canImport(Glibc)
import Glibc
#endif
import ServerKit
import Protocols

/// A server backend's name: what `--backend` takes, the `backend` column of every CSV and the
/// key of its colour in charts. Each backend module declares its own (`BackendKind.epoll` lives
/// in `Epoll`); which names exist is what the registry (`Backends.all`) lists.
public struct BackendKind: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: String

    public init(_ name: String) { rawValue = name }

    public var description: String { rawValue }

    public static func < (a: BackendKind, b: BackendKind) -> Bool { a.rawValue < b.rawValue }
}

/// How a backend's threads serve connections, which decides how many CPUs it can use.
public enum BackendThreading: String, Sendable {
    /// One OS thread per connection: it can use every CPU it is pinned to.
    case threadPerConnection = "thread per connection"
    /// `--threads` event loops, one thread each: at most that many CPUs.
    case eventLoops = "event loops"
    /// A runtime with its own threads (a reference peer): every CPU it is pinned to.
    case runtime
}

/// What a backend is in the comparison.
public enum BackendRole: String, Sendable {
    /// One of the I/O models this project compares.
    case model
    /// Not a model of ours: a runtime measured beside them for reference (SwiftNIO).
    case referencePeer = "reference peer"
}

/// Makes a backend's servers. A backend that can serve any session type (the event loops and
/// the blocking server, generic over the protocol) also makes servers for one session type,
/// which is how a workload that exists only in the tests is served by every backend.
public protocol BackendFactory: Sendable {
    /// A server for `configuration.pattern`.
    static func makeServer(configuration: ServerConfiguration) -> any BackendServer
    /// A server whose connections speak `Session`; nil when the backend cannot (a runtime with
    /// its own protocol handlers).
    static func makeServer<Session: ConnectionSession & ~Copyable>(configuration: ServerConfiguration, session: Session.Type) -> (any BackendServer)?
}

/// Everything the program knows about one backend, said once: the registry (`Backends.all`)
/// holds one per backend, and the CLI, the harness and the charts read it instead of naming
/// backends.
public struct BackendDescriptor: Sendable {
    public let kind: BackendKind
    /// One line for `--help` and the docs: the model and its mechanism.
    public let summary: String
    public let role: BackendRole
    public let threading: BackendThreading
    /// Its colour in every chart (hex) and its marker's name (see `Chart.Marker`).
    public let colour: String
    public let marker: String
    /// The `iobench serve` options only this backend takes (the others refuse them).
    public let serveOptions: [String]
    /// Options added to its `serve` when it runs under callgrind (counted measurements).
    public let countedServeOptions: [String]
    /// Options with which it cannot be counted, each with the reason.
    public let uncountableOptions: [String: String]
    /// The system call kinds it makes (what its stats can show as non-zero).
    public let syscallKinds: [SyscallKind]
    public let factory: any BackendFactory.Type

    public init(kind: BackendKind, summary: String, role: BackendRole = .model, threading: BackendThreading, colour: String, marker: String,
                serveOptions: [String] = [], countedServeOptions: [String] = [], uncountableOptions: [String: String] = [:],
                syscallKinds: [SyscallKind], factory: any BackendFactory.Type) {
        self.kind = kind
        self.summary = summary
        self.role = role
        self.threading = threading
        self.colour = colour
        self.marker = marker
        self.serveOptions = serveOptions
        self.countedServeOptions = countedServeOptions
        self.uncountableOptions = uncountableOptions
        self.syscallKinds = syscallKinds
        self.factory = factory
    }

    public var isReferencePeer: Bool { role == .referencePeer }

    /// The CPUs it can keep busy when pinned to `pinned` CPUs with `threads` event loops.
    public func cpuCapacity(pinned: Int, threads: Int) -> Int {
        switch threading {
        case .threadPerConnection, .runtime: pinned
        case .eventLoops: min(pinned, max(threads, 1))
        }
    }
}

/// Settings of one backend, a value type of that backend's module with defaults (`init()`).
public protocol BackendSettings: Sendable { init() }

/// Each backend's settings, found by their type.
public struct BackendSettingsStore: Sendable {
    private var values: [ObjectIdentifier: any Sendable] = [:]

    public init() {}

    /// The settings of type `S`: as set, or its defaults.
    public subscript<S: BackendSettings>(_ type: S.Type) -> S {
        get { values[ObjectIdentifier(type)] as? S ?? S() }
        set { values[ObjectIdentifier(type)] = newValue }
    }
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
    /// Settings only one backend reads (io_uring's ring and its buffers), each kept under that
    /// backend's own type: the shared configuration names no backend.
    public var backendSettings = BackendSettingsStore()
    /// Deliberate extra cost per received chunk, for proving that the regression check catches
    /// a slower server (hidden `serve` options). Zero in every real measurement.
    public var injection = CostInjection()

    public init(address: SocketAddress) { self.address = address }
}

/// A snapshot of a server's counters.
public struct ServerStats: Sendable {
    public var backend: BackendKind
    public var threads: Int
    public var pattern: ServerPattern = .echo
    public var counters: CounterTotals
    /// What the backend's loops set up, as the backend describes it (io_uring: its ring's setup
    /// flags, for example `SINGLE_ISSUER|DEFER_TASKRUN`); nil when it has nothing to say.
    public var setup: String?
    /// Counters this backend cannot provide (reported as null), for example `syscalls` for a
    /// runtime that makes its own system calls.
    public var unavailable: [String] = []
    /// Why the server cannot be trusted any more (a loop stopped), nil while it can.
    public var failure: String?
    /// The notification patterns: subscriptions and held long polls now.
    public var subscribers = 0
    public var heldWaits = 0

    public init(backend: BackendKind, threads: Int, counters: CounterTotals, setup: String? = nil) {
        self.backend = backend
        self.threads = threads
        self.counters = counters
        self.setup = setup
    }

    public var accepted: UInt64 { counters[.accepted] }
    public var open: UInt64 { counters[.accepted] &- counters[.closed] }

    /// The stats line (one JSON object, the type the harness reads).
    public var line: StatsLine { StatsLine(self) }
}

extension Hub {
    /// Adds the hub's gauges to a server's stats.
    public func record(into stats: inout ServerStats) {
        stats.subscribers = subscribers.load(ordering: .relaxed)
        stats.heldWaits = heldWaits.load(ordering: .relaxed)
    }
}

/// A server backend. The protocol sessions are shared; a backend maps their actions onto its
/// I/O mechanism and nothing more.
///
/// Lifecycle: ``start()`` binds and returns once every listener is accepting; ``stop()`` closes
/// the listeners and every connection, joins every thread and returns when all descriptors the
/// server opened are closed. Both are called from one controlling thread.
public protocol BackendServer: AnyObject, Sendable {
    var kind: BackendKind { get }
    /// Binds and starts serving. Throws a ``UsageError`` or ``SystemError`` naming the problem.
    func start() throws
    /// The address actually bound (its real port when port 0 was asked for). Valid after start.
    var boundAddress: SocketAddress { get }
    /// Counters summed over the server's threads; callable from any thread at any time.
    func stats() -> ServerStats
    /// Stops gracefully: no new connections, open ones closed, threads joined.
    func stop()
    /// Makes a loop fail as if its wait had failed (a test of what reports a failed server);
    /// servers without loops ignore it.
    func injectLoopFailure()
}

extension BackendServer {
    public func injectLoopFailure() {}
}
