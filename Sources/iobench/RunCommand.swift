import Backends
import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import BenchRunner
import LoadGeneration
import ResultAnalysis
import ResultReporting
import ServerKit
import Protocols
import BackendKit
import Foundation
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The benchmark matrix options shared by `run` and `baseline update`.
struct MatrixOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Backends to compare (comma-separated): \(Backends.namesForHelp) (nio: SwiftNIO, a reference peer).", valueName: "backends"))
    var backends: ListOf<BackendKind> = ListOf(Backends.kinds)

    @Option(name: .customLong("external"), help: ArgumentHelp(
        "An already-running third-party echo server to measure beside the backends, NAME=HOST:PORT (repeatable).",
        valueName: "name=host:port"))
    var externals: [String] = []

    @Option(name: .customLong("external-pid"), help: ArgumentHelp(
        "The process id of an external server, NAME=PID (or just PID with one --external), for its CPU, context switches and memory.",
        valueName: "name=pid"))
    var externalPIDs: [String] = []

    @Option(name: .customLong("variant"), help: ArgumentHelp(
        "A backend with extra 'iobench serve' options, measured as a server of its own: NAME=BACKEND OPTIONS (repeatable), for example 'io_uring+wait=io_uring --batch-wait 100us'.",
        valueName: "name=backend options"))
    var variants: [String] = []

    @Option(parsing: .unconditional, help: "Connection counts (default 1,16,128,512; --quick: 16,128).")
    var connections: ListOf<Int>?

    @Option(help: ArgumentHelp("The workload of every cell: echo, or rpc (framed requests, docs/PROTOCOL.md; --sizes is then the payload per request); or, comma-separated, the notification comparison's: push, push-stalled (1% of subscribers never read), long-poll, long-poll-wake (each client on its own topic, --wake-rate events/s over all of them: one held request woken among the others), long-poll-timeouts (every WAIT times out together, one round), short-poll (one cell per --poll-intervals): the same --event-rate to the same --clients on one topic, a fresh pinned server per cell, written to results/notify/RUN.csv. echo and rpc each run on their own.", valueName: "workloads"))
    var pattern: ListOf<String> = ListOf(["echo"])

    /// The echo or rpc workload `--pattern` names.
    func workload() throws -> Workload {
        let names = pattern.values
        guard names.count == 1, let workload = Workload.named(names[0]) else {
            throw UsageError("--pattern \(names.joined(separator: ",")): give one of echo or rpc (each runs on its own), or notification workloads (push, push-stalled, long-poll, long-poll-wake, long-poll-timeouts, short-poll)")
        }
        return workload
    }

    @Option(help: "rpc: microseconds of server CPU work each request asks for (work_us).")
    var work: UInt32 = 0

    @Option(help: "Message sizes (default 64,4k; --quick: 64).")
    var sizes: ListOf<ByteSize>?

    @Option(help: "Closed-loop depths: messages in flight per connection (default 1).")
    var depths: ListOf<Int>?

    @Option(help: "Open-loop rates in messages per second, in total (adds open-loop cells).")
    var rates: ListOf<Double>?

    @Option(name: .customLong("repeat"), parsing: .unconditional, help: "Repetitions of every cell (default 3).")
    var repetitions: Int?

    @Option(help: "Measured time per cell (default 1.5s; --quick: 1s).")
    var duration: Duration?

    @Option(help: "Warm-up per cell (default 400ms; --quick: 300ms).")
    var warmup: Duration?

    @Option(name: .customLong("server-cpus"), help: "CPUs for the server.")
    var serverCPUs: CPUList = CPUList([0])

    @Option(name: .customLong("client-cpus"), help: "CPUs for the load generator (default: every CPU not given to the server).")
    var clientCPUs: CPUList?

    @Option(help: "Server event loops (--threads of iobench serve).")
    var serverThreads: Int = 1

    @Option(help: "Generator threads (default: one per client CPU).")
    var generatorThreads: Int?

    @Option(help: "Idle connections held open against each backend to measure memory per connection (default 10000; 0 or --quick skips).")
    var idleConnections: Int?

    @Option(help: "timed: idle connections held open to the server during every cell, beside the active ones: what waiting on many quiet descriptors costs.")
    var idleBeside: Int = 0

    @Option(help: "timed: wall clock and CPU time under load. counted: each server under valgrind's callgrind, counting its user-space instructions, allocator calls and system calls per message over a window with nothing in flight at its edges (independent of the machine's speed; about 50 times slower to serve).")
    var method: MeasurementMethod = .timed

    @Flag(help: "A small matrix for CI (16 and 128 connections, 64 B, 3 repetitions of 1 s), well under a minute.")
    var quick = false

    @Option(name: .customLong("server-arg"), help: .hidden)
    var serverArguments: [String] = []

    func validate() throws {
        if let r = repetitions, r < 1 { throw ValidationError("--repeat \(r): must be at least 1") }
        if let bad = connections?.values.first(where: { $0 < 1 }) { throw ValidationError("--connections \(bad): must be at least 1") }
        if let d = depths?.values, d.contains(where: { $0 < 1 || $0 > 4096 }) { throw ValidationError("--depths must be from 1 to 4096") }
        if let r = rates?.values, r.contains(where: { !($0 > 0) }) { throw ValidationError("--rates must be positive") }
        guard (1...1024).contains(serverThreads) else { throw ValidationError("--server-threads must be from 1 to 1024") }
        if let d = duration?.seconds, !(d > 0) { throw ValidationError("--duration must be positive: a window of 0 s measures nothing (try 1s)") }
        if let w = warmup?.seconds, !(w >= 0) { throw ValidationError("--warmup must be 0 or more") }
        if let bad = sizes?.values.first(where: { $0.bytes < 1 || $0.bytes > 16 << 20 }) {
            throw ValidationError("--sizes \(bad.bytes) is out of range: a message is 1 B to 16m")
        }
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        for (option, list) in [("--server-cpus", serverCPUs.cpus), ("--client-cpus", clientCPUs?.cpus ?? [])] {
            if let bad = list.first(where: { $0 >= cpus }) {
                throw ValidationError("\(option) \(bad) is not a CPU of this machine: it has CPUs 0 to \(cpus - 1)")
            }
        }
    }

    /// The plan these options describe; `quick` forces the small matrix's defaults.
    func makePlan(quick forceQuick: Bool = false) throws -> RunPlan {
        let quick = self.quick || forceQuick
        let commandLine = reproducibleCommandLine()
        var plan = RunPlan(executable: selfExecutable(), commandLine: commandLine)
        plan.backends = backends.values
        plan.externals = try parseExternals()
        plan.variants = try parseVariants()
        let names = plan.variants.map(\.name) + plan.externals.map(\.name)
        if let clash = names.first(where: { name in names.filter { $0 == name }.count > 1 }) {
            throw UsageError("the name '\(clash)' is given twice: name each --variant and --external server differently")
        }
        try checkListening(plan.externals)
        plan.connections = connections?.values ?? (quick ? [16, 128] : [1, 16, 128, 512])
        plan.sizes = sizes?.values.map(\.bytes) ?? (quick ? [64] : [64, 4096])
        let workload = try workload()
        guard workload.takesWork || work == 0 else { throw ValidationError("--work applies to --pattern rpc only: \(workload) does no work") }
        guard work <= Frame.maxWorkMicroseconds else { throw ValidationError("--work \(work) is more than a request may ask for (\(Frame.maxWorkMicroseconds) µs)") }
        plan.workload = workload
        plan.workMicroseconds = work
        var modes: [LoadMode] = (depths?.values ?? (rates == nil ? [1] : [])).map { .closed(depth: $0) }
        modes += (rates?.values ?? []).map { .open(rate: $0) }
        plan.modes = modes
        plan.repetitions = repetitions ?? 3
        plan.duration = duration?.seconds ?? (quick ? 1 : 1.5)
        plan.warmup = warmup?.seconds ?? (quick ? 0.3 : 0.4)
        plan.serverCPUs = serverCPUs.cpus
        let allowed = Array(0..<ProcessInfo.processInfo.activeProcessorCount)
        let rest = allowed.filter { !serverCPUs.cpus.contains($0) }
        plan.clientCPUs = clientCPUs?.cpus ?? (rest.isEmpty ? allowed : rest)
        plan.serverThreads = serverThreads
        plan.generatorThreads = generatorThreads ?? plan.clientCPUs.count
        plan.idleConnections = quick ? (idleConnections ?? 0) : (idleConnections ?? 10_000)
        guard (0...1_000_000).contains(idleBeside) else { throw UsageError("--idle-beside \(idleBeside) is out of range: use 0 to 1000000 connections") }
        plan.idleBeside = idleBeside
        plan.extraServerArguments = serverArguments
        plan.method = method
        if method == .counted {
            if !plan.externals.isEmpty { throw UsageError("--method counted runs our own servers under valgrind: drop the --external servers") }
            if rates != nil { throw UsageError("--method counted needs a closed loop: drop --rates") }
            if let reason = Callgrind.unavailableReason() { throw UsageError(reason) }
            plan.idleConnections = 0
            if idleBeside > 0 { throw UsageError("--idle-beside applies to timed cells: drop it or use --method timed") }
        }
        return plan
    }

    /// `NAME=BACKEND OPTIONS` variants of our backends.
    func parseVariants() throws -> [ServerVariant] {
        try variants.map { spec in
            let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
            let words = parts.count == 2 ? parts[1].split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init) : []
            guard parts.count == 2, !parts[0].isEmpty, let first = words.first else {
                throw UsageError("--variant '\(spec)' is not NAME=BACKEND OPTIONS: for example --variant 'io_uring+wait=io_uring --batch-wait 100us'")
            }
            guard let backend = Backends.named(first)?.kind else {
                throw UsageError("--variant '\(spec)': '\(first)' is not a backend; use \(Backends.namesForHelp)")
            }
            guard Backends.named(parts[0]) == nil else {
                throw UsageError("--variant name '\(parts[0])' is a backend's name: give the variant a name of its own")
            }
            // Its options are checked as `iobench serve` will read them, before any cell runs.
            do {
                _ = try ServeCommand.parse(["--backend", backend.rawValue] + words.dropFirst())
            } catch {
                throw UsageError("--variant '\(spec)': \(ServeCommand.message(for: error))")
            }
            return ServerVariant(name: parts[0], backend: backend, arguments: Array(words.dropFirst()))
        }
    }

    /// `NAME=HOST:PORT` servers with their `NAME=PID` (or a bare PID for a single one).
    func parseExternals() throws -> [ExternalServer] {
        var servers: [ExternalServer] = []
        for spec in externals {
            let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else {
                throw UsageError("--external '\(spec)' is not NAME=HOST:PORT: name the server, for example --external c-floor=127.0.0.1:7000")
            }
            guard Backends.named(parts[0]) == nil, !servers.contains(where: { $0.name == parts[0] }) else {
                throw UsageError("--external name '\(parts[0])' is taken: give each external server its own name, unlike the backends")
            }
            servers.append(ExternalServer(name: parts[0], address: try SocketAddress(parsing: parts[1])))
        }
        for spec in externalPIDs {
            let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
            let name = parts.count == 2 ? parts[0] : (servers.count == 1 ? servers[0].name : "")
            guard let pid = Int32(parts.last ?? ""), pid > 0, kill(pid, 0) == 0 else {
                throw UsageError("--external-pid '\(spec)' is not the id of a running process: give NAME=PID")
            }
            guard let index = servers.firstIndex(where: { $0.name == name }) else {
                throw UsageError("--external-pid '\(spec)' names no --external server: give NAME=PID with a NAME from --external")
            }
            servers[index].pid = pid
        }
        return servers
    }

    /// Something must accept connections at each external server's address before any cell runs.
    func checkListening(_ servers: [ExternalServer]) throws {
        for server in servers {
            do {
                close(try Socket.connect(to: server.address))
            } catch {
                throw UsageError("--external \(server.name)=\(server.address): nothing accepts connections there (\(error.errno)); start the server first")
            }
        }
    }
}

extension MeasurementMethod: ExpressibleByArgument {}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the benchmark matrix: backends × connections × sizes × depths/rates × repetitions.",
        discussion: """
        Each cell starts a fresh 'iobench serve' child pinned to --server-cpus and loads it from \
        --client-cpus; the backend order rotates between repetitions. Prints a table of medians \
        (with min–max and ratios to --reference) and writes every cell and repetition to a CSV in \
        results/runs/. Exits 1 when a cell had errors or a server failed, 64 on bad usage.
        """
    )

    @OptionGroup var matrix: MatrixOptions

    @Option(help: "The server the others are compared with: a backend, a --variant or an --external name (default: epoll, or the first server measured).")
    var reference: String?

    @Option(help: "Where to write the CSV (a directory or a .csv file).")
    var out: String = "results/runs"

    @Flag(help: "No progress: without it a terminal shows a bar with the cell, its repetition and an ETA, and a redirected stderr gets one line per cell.")
    var quiet = false

    @Flag(help: "List every spread warning instead of one summary line.")
    var verbose = false

    /// The earlier spelling of `--pattern` for the notification workloads.
    @Option(help: .hidden)
    var patterns: ListOf<String>?

    @Option(help: "notification workloads: clients per cell (default 1000).")
    var clients: ListOf<Int>?

    @Option(help: "notification workloads: events per second the server publishes (Poisson arrivals, 64 B; default 10).")
    var eventRate: Double = 10

    @Option(help: "notification workloads: the events' payload size.")
    var eventSize: ByteSize = ByteSize(64)

    @Option(help: "notification workloads: the server's --max-queue (events that may wait for one subscriber before its --slow-consumer policy acts).")
    var maxQueue: Int?

    @Option(help: "long-poll-wake: events per second over all the clients' topics together.")
    var wakeRate: Double = 1000

    @Option(help: "notification workloads: short-poll intervals (default 100ms,1s).")
    var pollIntervals: ListOf<Duration>?

    @Option(help: "long-poll: each WAIT's timeout; long-poll-timeouts uses 2s.")
    var holdTimeout: Duration = Duration(30)

    func run() throws {
        let workloads = patterns?.values ?? matrix.pattern.values
        if let unknown = workloads.first(where: { Workload.named($0) == nil && !NotificationWorkload.workloadNames.contains($0) }) {
            throw UsageError("--pattern \(unknown) is not one of \((Workload.builtIn.map(\.name) + NotificationWorkload.workloadNames).joined(separator: ", "))")
        }
        let notification = workloads.filter(NotificationWorkload.workloadNames.contains)
        if !notification.isEmpty {
            let others = workloads.filter { !NotificationWorkload.workloadNames.contains($0) }
            guard others.isEmpty else {
                throw UsageError("--pattern \(others.joined(separator: ",")) cannot share a run with the notification workloads (\(notification.joined(separator: ","))): they are measured in runs of their own")
            }
            try runPatterns(workloads)
            return
        }
        let plan: RunPlan
        do { plan = try matrix.makePlan() } catch let error as UsageError { throw error }
        let names = plan.targets.map(\.description)
        if let reference, !names.contains(reference) {
            throw UsageError("--reference \(reference) is not measured in this run: use one of \(names.joined(separator: ", "))")
        }
        warnIfShared(plan)
        let run = try execute(plan, quiet: quiet, out: out)
        let rows = run.rows
        print(SummaryTable.render(rows, reference: reference ?? (names.contains("epoll") ? "epoll" : names.first ?? "epoll"), verbose: verbose))
        print("CSV: \(run.path ?? out)")
        if let interrupted = run.interrupted {
            printError("iobench: \(interrupted); the CSV holds the \(rows.count) rows measured")
            throw ExitCode(130)
        }
        let errors = rows.compactMap { $0.int("errors") }.reduce(0, +)
        if errors > 0 {
            printError("iobench: \(errors) errors across the run (see the errors column)")
            throw ExitCode.failure
        }
    }
}

extension RunCommand {
    /// The notification workloads: the comparison.
    func runPatterns(_ names: [String]) throws {
        var plan = RunPlan(executable: selfExecutable(), commandLine: reproducibleCommandLine())
        var cells = NotificationCells()
        plan.backends = matrix.backends.values
        plan.variants = try matrix.parseVariants()
        cells.clients = clients?.values ?? [1000]
        cells.eventRate = eventRate
        cells.eventSize = eventSize.bytes
        guard (0...60_000).contains(eventSize.bytes) else { throw UsageError("--event-size must be from 0 to 60000 bytes") }
        plan.repetitions = matrix.repetitions ?? 3
        plan.duration = matrix.duration?.seconds ?? 5
        plan.warmup = matrix.warmup?.seconds ?? 1
        cells.holdTimeout = holdTimeout.seconds
        cells.wakeRate = wakeRate
        cells.maxQueue = maxQueue
        if let maxQueue, !(1...1_000_000).contains(maxQueue) { throw UsageError("--max-queue must be from 1 to 1000000 events") }
        guard wakeRate > 0 && wakeRate <= 100_000 else { throw UsageError("--wake-rate must be from 0 to 100000 events per second") }
        plan.serverCPUs = matrix.serverCPUs.cpus
        plan.serverThreads = matrix.serverThreads
        plan.extraServerArguments = matrix.serverArguments
        plan.method = matrix.method
        if plan.method == .counted, let reason = Callgrind.unavailableReason() {
            throw UsageError("--method counted needs valgrind: \(reason)")
        }
        // The clients are one thread: on the first client CPU.
        let rest = Array(0..<ProcessInfo.processInfo.activeProcessorCount).filter { !plan.serverCPUs.contains($0) }
        plan.clientCPUs = [matrix.clientCPUs?.cpus.first ?? rest.first ?? 0]
        guard eventRate > 0 && eventRate <= 100_000 else { throw UsageError("--event-rate must be from 0 to 100000 events per second") }
        guard cells.clients.allSatisfy({ $0 >= 1 }) else { throw UsageError("--clients must be at least 1") }
        guard matrix.externals.isEmpty else {
            throw UsageError("the notification workloads are measured on our backends, their variants and the NIO peer: drop --external")
        }
        let intervals = pollIntervals?.values.map(\.seconds) ?? [0.1, 1]
        guard intervals.allSatisfy({ (0.001...3600).contains($0) }) else { throw UsageError("--poll-intervals must be from 1ms to 1h") }
        for name in names {
            switch name {
            case "push": cells.workloads.append(.push)
            case "push-stalled": cells.workloads.append(.pushStalled)
            case "long-poll": cells.workloads.append(.longPoll)
            case "long-poll-wake": cells.workloads.append(.longPollWake)
            case "long-poll-timeouts": cells.workloads.append(.longPollTimeouts)
            case "short-poll": cells.workloads += intervals.map { .shortPoll(interval: $0) }
            default: throw UsageError("--pattern \(name) is not one of echo, rpc, push, push-stalled, long-poll, long-poll-wake, long-poll-timeouts, short-poll")
            }
        }
        let largest = cells.clients.max() ?? 0
        if largest + 64 > ProcessResources.raiseDescriptorLimit() {
            throw UsageError("\(largest) clients need more file descriptors than the limit allows: raise it (ulimit -n) or use fewer")
        }
        plan.notification = cells
        let destination = out == "results/runs" ? "results/notify" : out
        let run = try execute(plan, quiet: quiet, out: destination)
        let rows = run.rows
        print(SummaryTable.render(rows, markdown: true))
        print("CSV: \(run.path ?? destination)")
        if let interrupted = run.interrupted {
            printError("iobench: \(interrupted); the CSV holds the \(rows.count) rows measured")
            throw ExitCode(130)
        }
        let failed = rows.filter { ($0.int("errors") ?? 0) > 0 || ($0["valid"] ?? "yes") != "yes" }
        if !failed.isEmpty {
            for row in failed.prefix(5) {
                let why = (row["error_detail"] ?? "").isEmpty ? row["valid"] ?? "" : row["error_detail"] ?? ""
                printError("iobench: \(row["connections"] ?? "?") clients, \(NotificationWorkload.label(row)), \(row["backend"] ?? "?"): \(why)")
            }
            printError("iobench: \(failed.count) cells had errors or were not valid (see the error_detail and valid columns)")
            throw ExitCode.failure
        }
    }
}

func warnIfShared(_ plan: RunPlan) {
    if plan.clientCPUs.contains(where: plan.serverCPUs.contains) {
        printError("iobench: warning: the server and the generator share CPUs \(plan.serverCPUs); figures will mix both sides' work")
    }
}

/// What `execute` measured: every row, where they were written as they came (with `out`), and
/// why the run ended early (nil: it did not).
struct Execution {
    var rows: [ResultRow]
    var path: String?
    var interrupted: String?
}

/// Runs a plan with a progress line. With `out`, the CSV is opened (its folder made) before the
/// first cell and each row appended as it is measured. SIGINT or SIGTERM stops the run after
/// the cell in progress, whose server is stopped at once and whose row is dropped; the rows
/// before it are kept (a second signal exits at once). A failure that ends the run becomes one
/// sentence and exit 1.
func execute(_ plan: RunPlan, quiet: Bool, out: String? = nil, columns: [String]? = nil) throws -> Execution {
    // The signals are taken before anything slow (reading the machine's facts) starts.
    let interruption = RunInterruption()
    let signals = InterruptSignals(interruption)
    defer { signals.restore() }
    let runner = BenchmarkRunner(plan: plan)
    runner.interruption = interruption
    var csv: CSVAppender?
    if let out {
        do {
            csv = try CSVAppender(path: csvPath(out, runID: runner.runID), columns: columns ?? plan.columns)
        } catch {
            throw UsageError("--out \(out): \(error)")
        }
    }
    let progress = RunProgress(quiet: quiet, plannedSecondsPerCell: plan.plannedSecondsPerCell)
    runner.status = { progress.status($0) }
    runner.cellStarted = { progress.cellStarted($0, $1, $2) }
    runner.rowMeasured = { row in try csv?.append(row) }
    do {
        let rows = try runner.run()
        progress.finish()
        let interrupted = runner.interruption.isInterrupted ? "interrupted after \(runner.cellsDone) of \(plan.cellCount) cells" : nil
        return Execution(rows: rows, path: csv?.path, interrupted: interrupted)
    } catch let error as UsageError {
        progress.finish()
        throw error
    } catch {
        progress.finish()
        printError("iobench: the run failed: \(error)")
        if let csv, csv.rowsWritten > 0 { printError("iobench: the \(csv.rowsWritten) rows measured before it are in \(csv.path)") }
        throw ExitCode.failure
    }
}

/// SIGINT and SIGTERM, while a run lasts: the first stops the run after the cell in progress,
/// a second exits at once (the servers, reading EOF on their stdin, exit with it).
final class InterruptSignals {
    private var sources: [any DispatchSourceSignal] = []

    init(_ interruption: RunInterruption) {
        let presses = Atomic<Int>(0)
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                if presses.add(1, ordering: .relaxed).newValue > 1 { _exit(130) }
                printError("iobench: stopping: the cell in progress is dropped, the rows measured are kept (again to quit at once)")
                interruption.interrupt()
            }
            source.resume()
            sources.append(source)
        }
    }

    func restore() {
        for source in sources { source.cancel() }
        sources = []
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}

/// Where a run's CSV goes: `destination` itself when it names a .csv file, else a file named
/// by the run in that folder.
func csvPath(_ destination: String, runID: String) -> String {
    if destination.hasSuffix(".csv") { return destination }
    return (destination.hasSuffix("/") ? destination : destination + "/") + runID + ".csv"
}

/// Writes rows to `destination` (a directory: a file named by the run id goes in it).
func writeCSV(_ rows: [ResultRow], to destination: String, runID: String, columns: [String] = ResultRow.columnNames) throws -> String {
    let path = csvPath(destination, runID: runID)
    let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
    do {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try CSV.write(rows, columns: columns).write(toFile: path, atomically: true, encoding: .utf8)
    } catch {
        printError("iobench: cannot write \(path): \(error.localizedDescription)")
        throw ExitCode.failure
    }
    return path
}

/// This executable's path, so the harness can start it again as 'iobench serve'.
func selfExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}
