import LoadGeneration
import ResultAnalysis
import Backends
import ServerKit
import Protocols
import BackendKit
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A run's stop button, pressed from any thread (a signal handler's): the cell in progress is
/// cut short (its server is terminated and its row dropped) and the run returns what it had
/// measured before it.
public final class RunInterruption: Sendable {
    private let pressed = Atomic<Bool>(false)
    private let serverPID = Atomic<Int32>(0)

    public init() {}

    public var isInterrupted: Bool { pressed.load(ordering: .sequentiallyConsistent) }

    public func interrupt() {
        pressed.store(true, ordering: .sequentiallyConsistent)
        let pid = serverPID.load(ordering: .sequentiallyConsistent)
        if pid > 0 { kill(pid, SIGTERM) }
    }

    /// The server of the cell in progress (nil: none).
    func serving(_ pid: Int32?) {
        serverPID.store(pid ?? 0, ordering: .sequentiallyConsistent)
        // Pressed while this server was starting: stop it too.
        if let pid, isInterrupted { kill(pid, SIGTERM) }
    }
}

/// What the runner asks of a family of workloads (``RequestResponseDriver``: echo, rpc and a
/// test's own; ``NotificationDriver``: push, long and short polling): its cells, what makes a
/// server serve one, and how to load one through a measured window. The runner does the rest
/// for every family alike: the order of repetitions, cells and servers, a fresh pinned server
/// per cell (under callgrind when counted), the row's identity columns, the window's verdict
/// (`valid`) and its retries, a server's failed loop, the bottleneck, stopping the server.
protocol CellDriver {
    associatedtype Cell
    /// One repetition's cells on one server, in the order they run.
    var cells: [Cell] { get }
    /// The cell in a progress line.
    func describe(_ cell: Cell, on target: Target, repetition: Int) -> String
    /// Its row's `workload` and `connections`.
    func workload(of cell: Cell) -> String
    func connections(of cell: Cell) -> Int
    /// What makes `iobench serve` serve it: its `--pattern` and the pattern's options.
    func serveOptions(for cell: Cell) -> [String]
    /// Loads a timed server through one window and writes what it measured into `row`.
    func measure(_ cell: Cell, on server: CellServer, into row: inout ResultRow, label: String) throws
    /// Loads a server under callgrind; the window's edges zero and dump its counts.
    func measureCounted(_ cell: Cell, on server: CellServer, into row: inout ResultRow, label: String) throws
    /// Told how the server stopped, after the measurement.
    func serverStopped(_ stopped: ServerProcess.Stopped, row: inout ResultRow)
}

extension CellDriver {
    func serverStopped(_ stopped: ServerProcess.Stopped, row: inout ResultRow) {}
}

/// The server one cell measures: a fresh pinned `iobench serve` of one of our backends or a
/// variant, under callgrind when the cell is counted, or an external server. Stopped (and its
/// callgrind files removed) when the cell is done, or when it is released.
final class CellServer {
    let target: Target
    let process: ServerProcess?
    let address: SocketAddress
    /// The server's `/proc` (timed cells of a server whose pid is known).
    let probe: ProcessProbe?
    /// The `iobench` arguments it was started with (none for an external server).
    let arguments: [String]
    let counted: Bool
    private let countsDirectory: String?
    /// The first failed loop a stats line reported.
    private(set) var failure: String?
    private var stopped: ServerProcess.Stopped?

    init(target: Target, process: ServerProcess?, address: SocketAddress, probe: ProcessProbe?, arguments: [String], countsDirectory: String? = nil) {
        self.target = target
        self.process = process
        self.address = address
        self.probe = probe
        self.arguments = arguments
        self.countsDirectory = countsDirectory
        counted = countsDirectory != nil
    }

    deinit { stop() }

    var pid: Int32? { process?.pid }

    /// How it was started, for a row's `cell_command`.
    var command: String { (counted ? "valgrind --tool=callgrind " : "") + "iobench " + arguments.joined(separator: " ") }

    /// Its stats line (nil for an external server); remembers a failed loop it reports.
    @discardableResult
    func stats(timeout: Double = 5) throws -> StatsLine? {
        guard let process else { return nil }
        let line = try process.stats(timeout: timeout)
        if failure == nil, let reported = line.failure { failure = reported }
        return line
    }

    /// Counted cells: zeroes callgrind's counts as the window opens.
    func zeroCounts() throws {
        guard let process, counted else { throw BenchError.probeFailed("\(target) is not running under callgrind") }
        try Callgrind.zero(pid: process.pid)
    }

    /// Counted cells: the counts since `zeroCounts`, as the window closes.
    func dumpCounts() throws -> Callgrind.Counts {
        guard let process, let countsDirectory else { throw BenchError.probeFailed("\(target) is not running under callgrind") }
        return try Callgrind.dump(pid: process.pid, outputDirectory: countsDirectory)
    }

    /// Stops it once (nil for an external server).
    @discardableResult
    func stop() -> ServerProcess.Stopped? {
        if let stopped { return stopped }
        guard let process else { return nil }
        let result = counted ? process.stopUnderValgrind() : process.stop()
        stopped = result
        if let countsDirectory { try? FileManager.default.removeItem(atPath: countsDirectory) }
        return result
    }
}

/// The runner behind `iobench run`, `baseline` and `check`: every workload's cells against
/// every server, each cell on a fresh child server pinned apart from the load.
public final class BenchmarkRunner {
    public let plan: RunPlan
    public let machine: MachineInfo
    public let runID: String
    /// Told what is happening: a status line that may be redrawn in place.
    public var status: (String) -> Void = { _ in }
    /// Told as each cell starts: its number (from 1), how many there are, and what it is.
    public var cellStarted: (_ index: Int, _ total: Int, _ description: String) -> Void = { _, _, _ in }
    /// Told each row as soon as it is measured (the CLI appends it to the CSV at once).
    public var rowMeasured: (ResultRow) throws -> Void = { _ in }
    /// Stops the run after (and cuts short) the cell in progress.
    public var interruption = RunInterruption()
    /// Cells measured (or failed) before the run ended.
    public private(set) var cellsDone = 0

    public init(plan: RunPlan, machine: MachineInfo = .current()) {
        self.plan = plan
        self.machine = machine
        let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
        runID = "\(stamp)-\(machine.host)"
    }

    /// A cell is measured again, up to this many times, when its window is impossible (the
    /// server used more CPU than it was pinned to), overran its plan, or the server reported a
    /// failed loop.
    public static let windowRetries = 2
    /// Slack for the window checks: 2% on CPU utilisation, 5% on the window's length.
    public static let cpuSlack = 1.02, overrunSlack = 1.05

    /// Runs every cell; returns one row per cell and repetition (plus idle rows).
    public func run() throws -> [ResultRow] {
        var done = 0
        if let notification = plan.notification {
            return try run(NotificationDriver(plan: plan, cells: notification), done: &done)
        }
        if plan.workload.servePattern == nil, !(plan.backends.isEmpty && plan.variants.isEmpty) {
            throw BenchError.unservable("the \(plan.workload) workload has no `iobench serve` pattern: measure it against servers you start (external targets), with no backends or variants")
        }
        var rows = try run(RequestResponseDriver(plan: plan, status: status), done: &done)
        if plan.idleConnections > 0 {
            for target in plan.targets where !interruption.isInterrupted {
                done += 1
                cellStarted(done, plan.cellCount, "idle: \(target) with \(plan.idleConnections) connections")
                status("idle: \(target) with \(plan.idleConnections) connections")
                let row: ResultRow
                do {
                    row = try measureIdle(target)
                } catch let error as UsageError {
                    throw error
                } catch {
                    if interruption.isInterrupted { break }
                    row = failedRow(target, workload: "idle", connections: plan.idleConnections, repetition: 1, error)
                }
                guard !interruption.isInterrupted else { break }
                rows.append(row)
                cellsDone = done
                try rowMeasured(row)
            }
        }
        return rows
    }

    /// The row of a cell that could not be measured (its server did not start, a probe failed):
    /// recorded, with why, instead of ending the run.
    private func failedRow(_ target: Target, workload: String, connections: Int, repetition: Int, _ error: any Error) -> ResultRow {
        var row = baseRow(target, workload: workload, connections: connections, repetition: repetition)
        row[.errors] = "1"
        row["valid"] = "the cell failed: \(error)"
        row["error_detail"] = "\(error)"
        reportError("iobench: \(target), \(workload), \(connections) connections, repetition \(repetition): the cell failed: \(error)")
        return row
    }

    /// Every repetition of every cell on every server; the servers' order rotates between
    /// repetitions so that drift does not favour one of them.
    private func run<Driver: CellDriver>(_ driver: Driver, done: inout Int) throws -> [ResultRow] {
        var rows: [ResultRow] = []
        let targets = plan.targets
        for repetition in 1...plan.repetitions {
            let shift = (repetition - 1) % max(targets.count, 1)
            let order = Array(targets[shift...] + targets[..<shift])
            for cell in driver.cells {
                for target in order {
                    guard !interruption.isInterrupted else { return rows }
                    done += 1
                    let what = driver.describe(cell, on: target, repetition: repetition)
                    cellStarted(done, plan.cellCount, what)
                    let label = "[\(done)/\(plan.cellCount)] \(what)"
                    status(label)
                    let row: ResultRow
                    do {
                        row = try measureChecked(driver, cell, on: target, repetition: repetition, label: label)
                    } catch let error as UsageError {
                        throw error
                    } catch {
                        if interruption.isInterrupted { return rows }
                        row = failedRow(target, workload: driver.workload(of: cell), connections: driver.connections(of: cell), repetition: repetition, error)
                    }
                    // A cell cut short by an interruption is not a measurement.
                    guard !interruption.isInterrupted else { return rows }
                    rows.append(row)
                    cellsDone = done
                    try rowMeasured(row)
                }
            }
        }
        return rows
    }

    /// The `iobench serve` arguments for a backend: pinned, on a free port, with a cell's options.
    private func serveArguments(_ backend: BackendKind, options: [String]) -> [String] {
        ["serve", "--backend", backend.rawValue, "--port", "0", "--quit-on-eof",
         "--threads", "\(plan.serverThreads)",
         "--cpus", plan.serverCPUs.map(String.init).joined(separator: ","),
        ] + options + plan.extraServerArguments
    }

    /// A fresh pinned server for one of our backends or a variant (under callgrind, with the
    /// options its backend needs there, when `counted`); an external server's address and
    /// (when its pid is known) a probe.
    func startServer(_ target: Target, options: [String], counted: Bool = false) throws -> CellServer {
        var executable = plan.executable
        var options = options
        let kind: BackendKind
        switch target {
        case .backend(let backend): kind = backend
        case .variant(let variant):
            kind = variant.backend
            options += variant.arguments
            if let other = variant.executable { executable = other }
        case .external(let external):
            if counted { throw UsageError("\(target) is an external server: counted measurements run our own servers under valgrind") }
            return CellServer(target: target, process: nil, address: external.address, probe: external.pid.map(ProcessProbe.init), arguments: [])
        }
        guard counted else {
            let arguments = serveArguments(kind, options: options)
            let server = try ServerProcess(executable: executable, arguments: arguments)
            return CellServer(target: target, process: server, address: server.address, probe: ProcessProbe(pid: server.pid), arguments: arguments)
        }
        // What the backend needs, or cannot have, under valgrind (io_uring: wait in poll(2)).
        let descriptor = Backends.descriptor(kind)
        if case .variant(let variant) = target {
            for (option, reason) in descriptor.uncountableOptions where variant.arguments.contains(where: { $0.hasPrefix(option) }) {
                throw UsageError("\(target) \(reason): it cannot be counted")
            }
        }
        let arguments = serveArguments(kind, options: options + descriptor.countedServeOptions)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-callgrind-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        do {
            let server = try Callgrind.startServer(executable: executable, arguments: arguments, outputDirectory: directory)
            return CellServer(target: target, process: server, address: server.address, probe: nil, arguments: arguments, countsDirectory: directory)
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    /// The build (commit, dirty flag) of every binary that serves in this run.
    private var builds: [String: MachineInfo] = [:]

    private func build(of target: Target) -> MachineInfo {
        guard case .variant(let variant) = target, let executable = variant.executable else { return machine }
        if let known = builds[executable] { return known }
        let info = MachineInfo.current(executable: executable)
        builds[executable] = info
        return info
    }

    /// What every row says about its cell, whatever the workload: the run, the machine and
    /// build, the command, the workload and method, the server, CPUs, connections, repetition.
    private func baseRow(_ target: Target, workload: String, connections: Int, repetition: Int) -> ResultRow {
        var row = ResultRow()
        row["run_id"] = runID
        row["timestamp"] = ISO8601DateFormatter().string(from: Date())
        // The build of a variant's binary; the machine is the same.
        row.record(machine: build(of: target))
        row["command"] = plan.commandLine
        row["workload"] = workload
        row["method"] = workload == "idle" ? "timed" : plan.method.rawValue
        row["backend"] = target.description
        // (The notification rows' `server_threads` is the threads their server was seen to run.)
        if target.kind != nil && plan.notification == nil { row["server_threads"] = "\(plan.serverThreads)" }
        row["server_cpus"] = plan.serverCPUs.map(String.init).joined(separator: " ")
        row["client_cpus"] = plan.clientCPUs.map(String.init).joined(separator: " ")
        row["connections"] = "\(connections)"
        row["repetition"] = "\(repetition)"
        row["warmup_s"] = fixed(plan.warmup, 3)
        if plan.notification == nil && plan.workload.takesWork && workload != "idle" { row["work_us"] = "\(plan.workMicroseconds)" }
        return row
    }

    /// Where a server's reported failure is left for `windowProblem` (not a CSV column:
    /// `valid` carries it).
    static let serverFailureKey = "server_failure"

    /// One cell, measured again while its window is impossible; a row still impossible after
    /// the retries says why in `valid` and counts for nothing.
    private func measureChecked<Driver: CellDriver>(_ driver: Driver, _ cell: Driver.Cell, on target: Target, repetition: Int, label: String) throws -> ResultRow {
        var attempt = 0
        while true {
            var row = try measure(driver, cell, on: target, repetition: repetition, label: label)
            let problem = windowProblem(row)
            row["valid"] = problem ?? "yes"
            guard let problem, attempt < Self.windowRetries, !interruption.isInterrupted else { return row }
            attempt += 1
            reportError("iobench: \(label): \(problem); measuring it again (\(attempt)/\(Self.windowRetries))")
        }
    }

    /// One cell on a fresh server.
    private func measure<Driver: CellDriver>(_ driver: Driver, _ cell: Driver.Cell, on target: Target, repetition: Int, label: String) throws -> ResultRow {
        let counted = plan.method == .counted
        if counted { status("\(label): starting under callgrind") }
        let server = try startServer(target, options: driver.serveOptions(for: cell), counted: counted)
        interruption.serving(server.pid)
        defer { interruption.serving(nil) }
        var row = baseRow(target, workload: driver.workload(of: cell), connections: driver.connections(of: cell), repetition: repetition)
        if counted {
            try driver.measureCounted(cell, on: server, into: &row, label: label)
        } else {
            try driver.measure(cell, on: server, into: &row, label: label)
        }
        // A server that reports a failed loop served only part of its connections: not a
        // measurement. Its last word is asked for here if the driver's did not say so.
        if server.failure == nil { _ = try? server.stats(timeout: counted ? 30 : 5) }
        if let failure = server.failure { row[Self.serverFailureKey] = failure }
        if let stopped = server.stop() { driver.serverStopped(stopped, row: &row) }
        if !counted { row["bottleneck"] = bottleneck(row, target) }
        return row
    }

    /// Why a row's window cannot be trusted: the server reported a failed loop, used more CPU
    /// than its pinned CPUs allow, or the window ran longer than planned. Nil when it can.
    func windowProblem(_ row: ResultRow) -> String? {
        if let failure = row[Self.serverFailureKey] { return "the server reported a failed loop: \(failure)" }
        if let impossible = WindowAudit.impossibleCPU(row, slack: Self.cpuSlack) { return impossible }
        if plan.method == .timed, let seconds = row.double("duration_s"), seconds > plan.duration * Self.overrunSlack {
            return "the window lasted \(fixed(seconds, 3)) s for a plan of \(plan.duration) s"
        }
        return nil
    }

    /// Which side limited a timed cell: a side that kept (nearly) all of the CPUs it can use
    /// busy. The server's are what its threading allows of those it is pinned to (the
    /// registry's capacity; for an external server, its threads).
    private func bottleneck(_ row: ResultRow, _ target: Target) -> String {
        let generator = row.double(.generatorCPUUtilisation) ?? 0
        guard let server = row.double(.serverCPUUtilisation) else {
            return Bottleneck.verdict(serverUtilization: 0, generatorUtilization: generator)
        }
        let capacity = target.kind.map { Backends.descriptor($0).cpuCapacity(pinned: plan.serverCPUs.count, threads: plan.serverThreads) }
            ?? min(plan.serverCPUs.count, max(row.int(Metric.serverThreadsPeak.column) ?? 1, 1))
        return Bottleneck.verdict(serverUtilization: server / Double(max(capacity, 1)), generatorUtilization: generator)
    }

    /// Holds `idleConnections` idle connections open and measures the server's memory per connection.
    func measureIdle(_ target: Target) throws -> ResultRow {
        let server = try startServer(target, options: [])
        interruption.serving(server.pid)
        defer { interruption.serving(nil); server.stop() }
        // Ask for stats once before the first sample: the first answer pages in the code and
        // data its JSON takes (about 0.9 MB of the binary and libraries, 92 B "per connection" at
        // 10,000, measured), which the wait for the connections below would otherwise count.
        _ = try? server.stats()
        usleep(50_000)
        let rssBefore = server.probe?.sample()?.residentBytes ?? 0
        let start = ProcessResources.monotonicNanoseconds()
        let (fds, open) = try Self.holdIdleConnections(plan.idleConnections, to: server, option: "--idle-connections")
        defer { for fd in fds { close(fd) } }
        let acceptSeconds = Double(ProcessResources.monotonicNanoseconds() - start) / 1e9
        usleep(100_000)
        let sample = server.probe?.sample()
        var row = baseRow(target, workload: "idle", connections: plan.idleConnections, repetition: 1)
        row[.errors] = "\(plan.idleConnections - open)"
        row.set(.idleAcceptSeconds, acceptSeconds)
        if let sample {
            row.set(.idleBytesPerConnection, Double(sample.residentBytes - rssBefore) / Double(plan.idleConnections))
            row[.serverPeakRSS] = "\(sample.peakResidentBytes / 1024)"
            row[.serverThreadsPeak] = "\(sample.threads)"
        }
        row["timestamp"] = ISO8601DateFormatter().string(from: Date())
        return row
    }

    /// Opens `count` connections that send nothing and waits until the server has accepted
    /// them all (ours say so in their stats; for an external one the connects completing is
    /// all that can be seen). Returns them, to be closed by the caller, and how many are open.
    static func holdIdleConnections(_ count: Int, to server: CellServer, option: String) throws -> (fds: [Int32], open: Int) {
        let needed = count + 64
        let limit = ProcessResources.raiseDescriptorLimit()
        guard limit >= needed else {
            throw UsageError("holding \(count) idle connections needs \(needed) file descriptors but the limit is \(limit): raise it (ulimit -n) or lower \(option)")
        }
        var fds: [Int32] = []
        fds.reserveCapacity(count)
        for _ in 0..<count {
            switch Result(catching: { () throws(SystemError) -> Int32 in try Socket.connect(to: server.address) }) {
            case .success(let fd): fds.append(fd)
            case .failure(let error):
                for fd in fds { close(fd) }
                throw LoadError.cannotConnect(server.address, error.errno, connected: fds.count)
            }
        }
        let deadline = ProcessResources.monotonicNanoseconds() + 60_000_000_000
        var open = server.process == nil ? count : 0
        while server.process != nil, ProcessResources.monotonicNanoseconds() < deadline {
            open = ((try? server.stats())?.connectionsOpen) ?? 0
            if open >= count { break }
            usleep(5_000)
        }
        return (fds, open)
    }
}

/// Which side limited a cell.
public enum Bottleneck {
    /// A side at or above this share of its CPUs is saturated.
    public static let saturation = 0.85

    public static func verdict(serverUtilization: Double, generatorUtilization: Double) -> String {
        let serverBusy = serverUtilization >= saturation
        let generatorBusy = generatorUtilization >= saturation
        switch (serverBusy, generatorBusy) {
        case (true, true): return serverUtilization >= generatorUtilization ? "server" : "generator"
        case (true, false): return "server"
        case (false, true): return "generator"
        case (false, false): return "neither"
        }
    }
}

/// A measurement that could not be made as planned (exit 1).
public enum BenchError: Error, CustomStringConvertible {
    case probeFailed(String)
    /// A plan that cannot be run as asked.
    case unservable(String)
    public var description: String {
        switch self { case .probeFailed(let why), .unservable(let why): why }
    }
}


extension BenchError: HarnessError {}
