import LoadGeneration
import ResultAnalysis
import Backends
import ServerKit
import Protocols
import BackendKit
import Foundation

/// How one cell loads the server: closed loop with a depth, or open loop at a rate.
public enum LoadMode: Sendable, Equatable, CustomStringConvertible {
    case closed(depth: Int)
    case open(rate: Double)

    public var description: String {
        switch self {
        case .closed(let depth): "depth \(depth)"
        case .open(let rate): "rate \(Int(rate))/s"
        }
    }
}

/// An echo server someone else runs, measured in the same matrix as the backends.
public struct ExternalServer: Sendable, Equatable {
    public var name: String
    public var address: SocketAddress
    /// Its process id, for CPU, context switches and memory; without it only the client side is measured.
    public var pid: Int32?

    public init(name: String, address: SocketAddress, pid: Int32? = nil) {
        self.name = name
        self.address = address
        self.pid = pid
    }
}

/// One of our backends started with extra `iobench serve` options, measured as a server of its
/// own (`--variant NAME=BACKEND OPTIONS`), for example io_uring with `--batch-wait 100us`.
public struct ServerVariant: Sendable, Equatable {
    public var name: String
    public var backend: BackendKind
    public var arguments: [String]
    /// Another iobench binary to serve (for example one built from an older commit); nil: the plan's.
    public var executable: String?

    public init(name: String, backend: BackendKind, arguments: [String], executable: String? = nil) {
        self.name = name
        self.backend = backend
        self.arguments = arguments
        self.executable = executable
    }
}

/// What a cell measures: one of our backends (started fresh per cell), a variant of one, or an
/// external server.
public enum Target: Sendable, Equatable, CustomStringConvertible {
    case backend(BackendKind)
    case variant(ServerVariant)
    case external(ExternalServer)

    public var description: String {
        switch self {
        case .backend(let kind): kind.rawValue
        case .variant(let variant): variant.name
        case .external(let server): server.name
        }
    }

    /// The backend serving, when it is one of ours.
    var kind: BackendKind? {
        switch self {
        case .backend(let kind): kind
        case .variant(let variant): variant.backend
        case .external: nil
        }
    }
}

/// The matrix `iobench run` measures.
public struct RunPlan: Sendable {
    public var method = MeasurementMethod.timed
    public var backends: [BackendKind] = Backends.kinds
    /// Third-party servers measured beside the backends (`--external NAME=HOST:PORT`).
    public var externals: [ExternalServer] = []
    /// Backends with extra serve options, measured as servers of their own (`--variant`).
    public var variants: [ServerVariant] = []
    public var connections = [1, 16, 128, 512]
    /// Timed cells: idle connections held open beside the active ones (0: none).
    public var idleBeside = 0
    public var sizes = [64, 4096]
    public var modes: [LoadMode] = [.closed(depth: 1)]
    /// The workload: the protocol every server speaks and the generator drives (`--pattern`).
    public var workload = Workload.echo
    /// rpc: microseconds of server CPU work per request (`--work`).
    public var workMicroseconds: UInt32 = 0
    public var repetitions = 3
    public var duration = 1.5
    public var warmup = 0.5
    public var serverCPUs = [0]
    public var clientCPUs = [1]
    public var serverThreads = 1
    public var generatorThreads = 1
    /// Idle connections held open against each backend (0 skips the idle measurement).
    public var idleConnections = 10_000
    /// Extra `iobench serve` arguments for every backend (hidden; tests of the regression check).
    public var extraServerArguments: [String] = []
    /// Path of the iobench executable that serves (this binary).
    public var executable: String
    /// The command line, recorded in every row.
    public var commandLine: String

    public init(executable: String, commandLine: String) {
        self.executable = executable
        self.commandLine = commandLine
    }

    /// The notification workloads' cells, when this is their run (`run --pattern push,...`):
    /// then `workload`, `connections`, `sizes`, `modes`, `idleBeside`, `idleConnections` and
    /// `generatorThreads` do not apply (their clients are one thread on the first client CPU).
    public var notification: NotificationCells?

    public var targets: [Target] {
        backends.map(Target.backend) + variants.map(Target.variant) + externals.map(Target.external)
    }

    public var loadCellCount: Int {
        targets.count * repetitions * (notification.map { $0.clients.count * $0.workloads.count } ?? connections.count * sizes.count * modes.count)
    }
    /// Load cells and idle measurements together.
    public var cellCount: Int { loadCellCount + (notification == nil && idleConnections > 0 ? targets.count : 0) }
    /// The time a cell is planned to take (warm-up and window), for an estimate before any has run.
    public var plannedSecondsPerCell: Double { warmup + duration + (notification == nil ? 0 : 1) }

    /// The CSV's columns for this plan's rows.
    public var columns: [String] { notification == nil ? ResultRow.columnNames : NotificationDriver.columns }
}

/// The notification workloads of a run and their settings: the same events per second to the
/// same clients by push, long polling and short polling.
public struct NotificationCells: Sendable {
    public var workloads: [NotificationWorkload] = []
    public var clients: [Int] = [1000]
    /// Events per second on the one topic every client listens to (the server's own events,
    /// Poisson arrivals).
    public var eventRate = 10.0
    public var eventSize = 64
    /// The server's `--max-queue` (nil: its default).
    public var maxQueue: Int?
    /// long-poll: each WAIT's timeout.
    public var holdTimeout = 30.0
    /// long-poll wake: events per second over all the clients' topics together.
    public var wakeRate = 1000.0
    /// long-poll timeouts: the WAITs' timeout.
    public var timeoutCellTimeout = 2.0

    public init(workloads: [NotificationWorkload] = []) { self.workloads = workloads }
}
