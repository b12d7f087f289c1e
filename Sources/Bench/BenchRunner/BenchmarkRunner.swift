import ResultReporting
import LoadGeneration
import ResultAnalysis
import Backends
import ServerKit
import Protocols
import BackendKit
import Foundation
#if canImport(Glibc)
import Glibc
#endif

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

    public var targets: [Target] {
        backends.map(Target.backend) + variants.map(Target.variant) + externals.map(Target.external)
    }

    public var loadCellCount: Int { targets.count * connections.count * sizes.count * modes.count * repetitions }
    /// Load cells and idle measurements together.
    public var cellCount: Int { loadCellCount + (idleConnections > 0 ? targets.count : 0) }
    /// The time a cell is planned to take (warm-up and window), for an estimate before any has run.
    public var plannedSecondsPerCell: Double { warmup + duration }
}

/// Runs a plan: every backend as a fresh child server per cell, pinned apart from the generator.
public final class BenchmarkRunner {
    public let plan: RunPlan
    public let machine: MachineInfo
    public let runID: String
    /// Told what is happening: a status line that may be redrawn in place.
    public var status: (String) -> Void = { _ in }
    /// Told as each cell starts: its number (from 1), how many there are, and what it is.
    public var cellStarted: (_ index: Int, _ total: Int, _ description: String) -> Void = { _, _, _ in }
    private var rows: [ResultRow] = []

    public init(plan: RunPlan, machine: MachineInfo = .current()) {
        self.plan = plan
        self.machine = machine
        let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
        runID = "\(stamp)-\(machine.host)"
    }

    /// A cell is measured again, up to this many times, when its window is impossible (the
    /// server used more CPU than it was pinned to) or overran its plan.
    public static let windowRetries = 2
    /// Slack for the window checks: 2% on CPU utilisation, 5% on the window's length.
    public static let cpuSlack = 1.02, overrunSlack = 1.05

    /// Runs every cell; returns one row per cell and repetition (plus idle rows).
    public func run() throws -> [ResultRow] {
        if plan.workload.servePattern == nil, !(plan.backends.isEmpty && plan.variants.isEmpty) {
            throw BenchError.unservable("the \(plan.workload) workload has no `iobench serve` pattern: measure it against servers you start (external targets), with no backends or variants")
        }
        rows = []
        var done = 0
        for repetition in 1...plan.repetitions {
            // Rotate the backend order each repetition so drift does not favour one backend.
            let targets = plan.targets
            let shift = (repetition - 1) % max(targets.count, 1)
            let order = Array(targets[shift...] + targets[..<shift])
            for mode in plan.modes {
                for connections in plan.connections {
                    for size in plan.sizes {
                        for backend in order {
                            done += 1
                            let what = "\(backend) \(connections) conns \(size) B \(mode) rep \(repetition)/\(plan.repetitions)"
                            cellStarted(done, plan.cellCount, what)
                            let label = "[\(done)/\(plan.cellCount)] \(what)"
                            rows.append(try measureChecked(backend, connections: connections, size: size, mode: mode, repetition: repetition, label: label))
                        }
                    }
                }
            }
        }
        if plan.idleConnections > 0 {
            for backend in plan.targets {
                done += 1
                cellStarted(done, plan.cellCount, "idle: \(backend) with \(plan.idleConnections) connections")
                status("idle: \(backend) with \(plan.idleConnections) connections")
                rows.append(try measureIdle(backend))
            }
        }
        return rows
    }

    private func serveArguments(_ backend: BackendKind, options: [String]) -> [String] {
        ["serve", "--backend", backend.rawValue, "--port", "0", "--quit-on-eof",
         "--threads", "\(plan.serverThreads)",
         "--cpus", plan.serverCPUs.map(String.init).joined(separator: ","),
        ] + (plan.workload.servePattern.map { $0 == .echo ? [] : ["--pattern", $0.rawValue] } ?? []) + options + plan.extraServerArguments
    }

    private func startServer(_ backend: BackendKind, options: [String] = [], executable: String? = nil) throws -> ServerProcess {
        try ServerProcess(executable: executable ?? plan.executable, arguments: serveArguments(backend, options: options))
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

    /// A fresh pinned server for one of our backends; for an external one, its address and
    /// (when its pid is known) a probe.
    private func attach(_ target: Target) throws -> (ServerProcess?, SocketAddress, ProcessProbe?) {
        switch target {
        case .backend(let kind):
            let server = try startServer(kind)
            return (server, server.address, ProcessProbe(pid: server.pid))
        case .variant(let variant):
            let server = try startServer(variant.backend, options: variant.arguments, executable: variant.executable)
            return (server, server.address, ProcessProbe(pid: server.pid))
        case .external(let external):
            return (nil, external.address, external.pid.map(ProcessProbe.init))
        }
    }

    private func baseRow(_ backend: Target, workload: String, connections: Int, repetition: Int) -> ResultRow {
        var row = ResultRow()
        row["run_id"] = runID
        row["timestamp"] = ISO8601DateFormatter().string(from: Date())
        // The build of a variant's binary; the machine is the same.
        row.record(machine: build(of: backend))
        row["command"] = plan.commandLine
        row["workload"] = workload
        row["method"] = workload == "idle" ? "timed" : plan.method.rawValue
        row["backend"] = backend.description
        if backend.kind != nil { row["server_threads"] = "\(plan.serverThreads)" }
        row["server_cpus"] = plan.serverCPUs.map(String.init).joined(separator: " ")
        row["client_cpus"] = plan.clientCPUs.map(String.init).joined(separator: " ")
        row["connections"] = "\(connections)"
        row["repetition"] = "\(repetition)"
        row["warmup_s"] = fixed(plan.warmup, 3)
        if plan.workload.takesWork && workload != "idle" { row["work_us"] = "\(plan.workMicroseconds)" }
        return row
    }

    /// Where `measure` leaves a server's reported failure for `windowProblem` (not a CSV column:
    /// `valid` carries it).
    static let serverFailureKey = "server_failure"

    /// One load cell, measured again while its window is impossible; a row still impossible
    /// after the retries says why in `valid` and counts for nothing.
    func measureChecked(_ target: Target, connections: Int, size: Int, mode: LoadMode, repetition: Int, label: String) throws -> ResultRow {
        var attempt = 0
        while true {
            var row = plan.method == .counted
                ? try measureCounted(target, connections: connections, size: size, repetition: repetition, label: label)
                : try measure(target, connections: connections, size: size, mode: mode, repetition: repetition, label: label)
            let problem = windowProblem(row)
            row["valid"] = problem ?? "yes"
            guard let problem, attempt < Self.windowRetries else { return row }
            attempt += 1
            reportError("iobench: \(label): \(problem); measuring it again (\(attempt)/\(Self.windowRetries))")
        }
    }

    /// Why a row's window cannot be trusted: the server used more CPU than its pinned CPUs
    /// allow, or the window ran longer than planned. Nil when it can.
    func windowProblem(_ row: ResultRow) -> String? {
        if let failure = row[Self.serverFailureKey] { return "the server reported a failed loop: \(failure)" }
        if let impossible = WindowAudit.impossibleCPU(row, slack: Self.cpuSlack) { return impossible }
        if plan.method == .timed, let seconds = row.double("duration_s"), seconds > plan.duration * Self.overrunSlack {
            return "the window lasted \(fixed(seconds, 3)) s for a plan of \(plan.duration) s"
        }
        return nil
    }

    /// What a server's probes saw at one edge of a window: its stats (system calls), its
    /// threads' context switches and memory, and the messages the generator had back then.
    private struct ProbeReading {
        var stats: StatsLine?
        var sample: ProcessProbe.Sample?
        var messages: Double
    }

    /// Reads the slow probes outside the window: the stats round trip and the task scan,
    /// bracketed by the generator's message count (their midpoint stands for the reading).
    private func readProbes(_ server: ServerProcess?, _ probe: ProcessProbe?, _ progress: LoadProgress) throws -> ProbeReading {
        let first = progress.messagesReceived()
        let stats = try server?.stats()
        let sample = probe?.sample()
        return ProbeReading(stats: stats, sample: sample, messages: (first + progress.messagesReceived()) / 2)
    }

    /// One timed load cell against a fresh server.
    func measure(_ target: Target, connections: Int, size: Int, mode: LoadMode, repetition: Int, label: String) throws -> ResultRow {
        let (server, address, probe) = try attach(target)
        defer { server?.stop() }
        // Idle connections beside the active ones: what waiting on many quiet descriptors costs.
        var idle: [Int32] = []
        defer { for fd in idle { close(fd) } }
        if plan.idleBeside > 0 {
            status("\(label): opening \(plan.idleBeside) idle connections")
            let (fds, open) = try holdIdleConnections(plan.idleBeside, to: address, of: server, option: "--idle-beside")
            idle = fds
            guard open >= plan.idleBeside else {
                throw BenchError.probeFailed("\(label): the server accepted \(open) of \(plan.idleBeside) idle connections within 60 s")
            }
        }
        var options = loadOptions(address, connections: connections, size: size)
        switch mode {
        case .closed(let depth): options.depth = depth
        case .open(let rate): options.rate = rate
        }
        var before: ProbeReading?, after: ProbeReading?
        var cpuStart: UInt64?, cpuEnd: UInt64?
        var probeError: (any Error)?
        var hooks = LoadHooks()
        hooks.beforeWindow = { progress in
            do { before = try self.readProbes(server, probe, progress) } catch { probeError = error }
        }
        hooks.windowOpened = { cpuStart = probe?.cpuNanoseconds() }
        hooks.windowClosed = { cpuEnd = probe?.cpuNanoseconds() }
        hooks.afterWindow = { progress in
            do { after = try self.readProbes(server, probe, progress) } catch { probeError = probeError ?? error }
        }
        hooks.progress = { [status, duration = plan.duration] elapsed, messages in
            status("\(label): \(String(format: "%.1f", elapsed))/\(duration) s, \(formatCount(Double(messages) / max(elapsed, 0.001))) msgs/s")
        }
        status("\(label): warming up")
        let load = try LoadGenerator.run(options, hooks: hooks)
        if let probeError { throw BenchError.probeFailed("\(label): \(probeError)") }

        var row = baseRow(target, workload: plan.workload.name, connections: connections, repetition: repetition)
        if plan.idleBeside > 0 { row["idle_beside"] = "\(plan.idleBeside)" }
        // A server that reports a failed loop served part of its connections: not a measurement.
        if let failure = after?.stats?.failure ?? before?.stats?.failure { row[Self.serverFailureKey] = failure }
        row.fill(load: load)
        row["bottleneck"] = Bottleneck.verdict(serverUtilization: 0, generatorUtilization: load.generatorUtilization)
        if probe != nil {
            guard let cpuStart, let cpuEnd, let s0 = before?.sample, let s1 = after?.sample, let before, let after else {
                throw BenchError.probeFailed("\(label): the server (\(target)) could not be probed at the window's edges; it may have exited")
            }
            let cpu = Double(cpuEnd - cpuStart) / 1e9
            let perMessage = load.messages > 0 ? 1.0 / Double(load.messages) : 0
            row.set(.serverCPUPerMessage, cpu * 1e6 * perMessage)
            row.set(.serverCPUUtilisation, cpu / load.seconds)
            // The slow probes cover their own window, a little wider than the timed one.
            let probeMessages = after.messages - before.messages
            let perProbeMessage = probeMessages > 0 ? 1.0 / probeMessages : 0
            row.set(.contextSwitchesPerMessage, Double(ProcessProbe.contextSwitches(from: s0, to: s1)) * perProbeMessage)
            row[.serverPeakRSS] = "\(s1.peakResidentBytes / 1024)"
            row[.serverThreadsPeak] = "\(s1.threads)"
            row.fill(syscallsFrom: before.stats, to: after.stats, perMessage: perProbeMessage)
            // The CPUs the server can keep busy: what its threading allows of those it is pinned to.
            let capacity = Double(target.kind.map { Backends.descriptor($0).cpuCapacity(pinned: plan.serverCPUs.count, threads: plan.serverThreads) }
                                  ?? min(plan.serverCPUs.count, max(s1.threads, 1)))
            row["bottleneck"] = Bottleneck.verdict(serverUtilization: cpu / load.seconds / max(capacity, 1),
                                                   generatorUtilization: load.generatorUtilization)
        }
        if load.errors > 0 {
            reportError("iobench: \(label): \(load.errors) errors: \(load.errorDetails.joined(separator: "; "))")
        }
        return row
    }

    /// One counted cell: a fresh server under callgrind, closed loop, a window opened and
    /// closed with nothing in flight, so every instruction, allocator call and system call
    /// the server made in it belongs to the window's messages.
    func measureCounted(_ target: Target, connections: Int, size: Int, repetition: Int, label: String) throws -> ResultRow {
        guard let kind = target.kind else {
            throw UsageError("\(target) is an external server: counted measurements run our own servers under valgrind")
        }
        var extra: [String] = []
        if case .variant(let variant) = target { extra = variant.arguments }
        // What the backend needs, or cannot have, under valgrind (io_uring: wait in poll(2)).
        let descriptor = Backends.descriptor(kind)
        for (option, reason) in descriptor.uncountableOptions where extra.contains(where: { $0.hasPrefix(option) }) {
            throw UsageError("\(target) \(reason): it cannot be counted")
        }
        extra += descriptor.countedServeOptions
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-callgrind-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        status("\(label): starting under callgrind")
        var executable = plan.executable
        if case .variant(let variant) = target, let other = variant.executable { executable = other }
        let server = try Callgrind.startServer(executable: executable, arguments: serveArguments(kind, options: extra), outputDirectory: directory)
        defer { server.stopUnderValgrind() }
        var options = loadOptions(server.address, connections: connections, size: size)
        options.quietEdges = true
        var before: StatsLine?, after: StatsLine?, counts: Callgrind.Counts?
        var probeError: (any Error)?
        var hooks = LoadHooks()
        // Quiet edges: nothing is in flight, so the stats and the zero/dump see the same messages.
        hooks.beforeWindow = { _ in
            do {
                before = try server.stats(timeout: 30)
                try Callgrind.zero(pid: server.pid)
            } catch { probeError = error }
        }
        hooks.afterWindow = { _ in
            do {
                counts = try Callgrind.dump(pid: server.pid, outputDirectory: directory)
                after = try server.stats(timeout: 30)
            } catch { probeError = probeError ?? error }
        }
        hooks.progress = { [status, duration = plan.duration] elapsed, messages in
            status("\(label): counting, \(String(format: "%.1f", elapsed))/\(duration) s, \(messages) messages")
        }
        let load = try LoadGenerator.run(options, hooks: hooks)
        if let probeError { throw BenchError.probeFailed("\(label): \(probeError)") }
        guard let counts, load.messages > 0 else {
            throw BenchError.probeFailed("\(label): no message was echoed in the counted window")
        }
        var row = baseRow(target, workload: plan.workload.name, connections: connections, repetition: repetition)
        // A server that reports a failed loop served part of its connections: not a measurement.
        if let failure = after?.failure ?? before?.failure { row[Self.serverFailureKey] = failure }
        row.fill(load: load)
        let perMessage = 1.0 / Double(load.messages)
        row.set(.userInstructionsPerMessage, Double(counts.instructions) * perMessage)
        row.set(.allocationsPerMessage, Double(counts.allocations) * perMessage)
        row.fill(syscallsFrom: before, to: after, perMessage: perMessage)
        // Timing under valgrind says nothing about the server: leave the timed columns out.
        for metric in [Metric.messagesPerSecond, .megabytesPerSecond, .latencyP50, .latencyP90, .latencyP99, .latencyP999, .latencyP9999,
                       .latencyMax, .generatorCPUPerMessage, .generatorCPUUtilisation] {
            row[metric] = ""
        }
        if load.errors > 0 {
            reportError("iobench: \(label): \(load.errors) errors: \(load.errorDetails.joined(separator: "; "))")
        }
        return row
    }

    private func loadOptions(_ address: SocketAddress, connections: Int, size: Int) -> LoadOptions {
        var options = LoadOptions(target: address)
        options.connections = connections
        options.messageSize = size
        options.duration = plan.duration
        options.warmup = plan.warmup
        options.threads = plan.generatorThreads
        options.cpus = plan.clientCPUs
        options.workload = plan.workload
        options.workMicroseconds = plan.workMicroseconds
        return options
    }

    /// Holds `idleConnections` idle connections open and measures the server's memory per connection.
    func measureIdle(_ target: Target) throws -> ResultRow {
        let (server, address, probe) = try attach(target)
        defer { server?.stop() }
        // Ask for stats once before the first sample: the first answer pages in the code and
        // data its JSON takes (about 0.9 MB of the binary and libraries, 92 B "per connection" at
        // 10,000, measured), which the wait for the connections below would otherwise count.
        _ = try? server?.stats()
        usleep(50_000)
        let rssBefore = probe?.sample()?.residentBytes ?? 0
        let start = ProcessResources.monotonicNanoseconds()
        let (fds, open) = try holdIdleConnections(plan.idleConnections, to: address, of: server, option: "--idle-connections")
        defer { for fd in fds { close(fd) } }
        let acceptSeconds = Double(ProcessResources.monotonicNanoseconds() - start) / 1e9
        usleep(100_000)
        let sample = probe?.sample()
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
    func holdIdleConnections(_ count: Int, to address: SocketAddress, of server: ServerProcess?, option: String) throws -> (fds: [Int32], open: Int) {
        let needed = count + 64
        let limit = ProcessResources.raiseDescriptorLimit()
        guard limit >= needed else {
            throw UsageError("holding \(count) idle connections needs \(needed) file descriptors but the limit is \(limit): raise it (ulimit -n) or lower \(option)")
        }
        var fds: [Int32] = []
        fds.reserveCapacity(count)
        for _ in 0..<count {
            switch Result(catching: { () throws(SystemError) -> Int32 in try Socket.connect(to: address) }) {
            case .success(let fd): fds.append(fd)
            case .failure(let error):
                for fd in fds { close(fd) }
                throw LoadError.cannotConnect(address, error.errno, connected: fds.count)
            }
        }
        let deadline = ProcessResources.monotonicNanoseconds() + 60_000_000_000
        var open = server == nil ? count : 0
        while let server, ProcessResources.monotonicNanoseconds() < deadline {
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

extension ResultRow {
    /// System calls per message from two stats readings; a peer that cannot count its system
    /// calls reports them as null, and the columns stay empty.
    mutating func fill(syscallsFrom before: StatsLine?, to after: StatsLine?, perMessage: Double) {
        guard let st0 = before, let st1 = after, let total0 = st0.syscallsTotal, let total1 = st1.syscallsTotal else { return }
        let delta = { (key: String) -> Double in
            Double((st1.syscalls?[key] ?? 0) - (st0.syscalls?[key] ?? 0))
        }
        set(.syscallsPerMessage, Double(total1 - total0) * perMessage)
        set(.ioUringEnterPerMessage, delta("io_uring_enter") * perMessage)
        set(.epollWaitPerMessage, delta("epoll_wait") * perMessage)
    }

    /// The load generator's figures.
    public mutating func fill(load: LoadResult) {
        self["size_bytes"] = "\(load.options.messageSize)"
        self["depth"] = load.options.rate == nil ? "\(load.options.depth)" : ""
        self["rate_msgs_per_s"] = load.options.rate.map { fixed($0, 0) } ?? ""
        self["duration_s"] = fixed(load.seconds, 3)
        self["messages"] = "\(load.messages)"
        self["incomplete"] = load.options.rate == nil ? "" : "\(load.incomplete)"
        set(.messagesPerSecond, load.messagesPerSecond)
        set(.megabytesPerSecond, load.megabytesPerSecond)
        let h = load.latency
        let us = { (ns: UInt64) in fixed(Double(ns) / 1000, 1) }
        if h.totalCount > 0 {
            self[.latencyP50] = us(h.valueAtPercentile(50))
            self[.latencyP90] = us(h.valueAtPercentile(90))
            self[.latencyP99] = us(h.valueAtPercentile(99))
            self[.latencyP999] = us(h.valueAtPercentile(99.9))
            self[.latencyP9999] = us(h.valueAtPercentile(99.99))
            self[.latencyMax] = us(h.max)
        }
        if let u = load.uncorrectedLatency, u.totalCount > 0 { self[.uncorrectedP99] = us(u.valueAtPercentile(99)) }
        if let lag = load.sendLag, lag.totalCount > 0 {
            self[.sendLagP99] = us(lag.valueAtPercentile(99))
            self[.sendLagMax] = us(lag.max)
        }
        self[.errors] = "\(load.errors)"
        set(.generatorCPUPerMessage, load.generatorCPUMicrosecondsPerMessage)
        set(.generatorCPUUtilisation, load.generatorUtilization)
    }
}

extension BenchError: HarnessError {}
