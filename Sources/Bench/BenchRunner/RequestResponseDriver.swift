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

/// The request/response workloads (echo, rpc, or a test's own `Workload`): closed- or
/// open-loop clients that check every answer byte against the workload's wire, in cells of
/// load mode × connections × message size. The generator is ``LoadGenerator``.
struct RequestResponseDriver: CellDriver {
    struct Cell {
        let mode: LoadMode
        let connections: Int
        let size: Int
    }

    let plan: RunPlan
    let status: (String) -> Void

    var cells: [Cell] {
        plan.modes.flatMap { mode in
            plan.connections.flatMap { connections in plan.sizes.map { Cell(mode: mode, connections: connections, size: $0) } }
        }
    }

    func describe(_ cell: Cell, on target: Target, repetition: Int) -> String {
        "\(target) \(cell.connections) conns \(cell.size) B \(cell.mode) rep \(repetition)/\(plan.repetitions)"
    }

    func workload(of cell: Cell) -> String { plan.workload.name }
    func connections(of cell: Cell) -> Int { cell.connections }

    func serveOptions(for cell: Cell) -> [String] {
        plan.workload.servePattern.map { $0 == .echo ? [] : ["--pattern", $0.rawValue] } ?? []
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
    private func readProbes(_ server: CellServer, _ progress: LoadProgress) throws -> ProbeReading {
        let first = progress.messagesReceived()
        let stats = try server.stats()
        let sample = server.probe?.sample()
        return ProbeReading(stats: stats, sample: sample, messages: (first + progress.messagesReceived()) / 2)
    }

    /// One timed cell: the server's CPU clock read as the window opens and closes; its stats
    /// and threads (the slow probes) read just outside the window.
    func measure(_ cell: Cell, on server: CellServer, into row: inout ResultRow, label: String) throws {
        // Idle connections beside the active ones: what waiting on many quiet descriptors costs.
        var idle: [Int32] = []
        defer { for fd in idle { close(fd) } }
        if plan.idleBeside > 0 {
            status("\(label): opening \(plan.idleBeside) idle connections")
            let (fds, open) = try BenchmarkRunner.holdIdleConnections(plan.idleBeside, to: server, option: "--idle-beside")
            idle = fds
            guard open >= plan.idleBeside else {
                throw BenchError.probeFailed("\(label): the server accepted \(open) of \(plan.idleBeside) idle connections within 60 s")
            }
            row["idle_beside"] = "\(plan.idleBeside)"
        }
        var options = loadOptions(server.address, cell)
        switch cell.mode {
        case .closed(let depth): options.depth = depth
        case .open(let rate): options.rate = rate
        }
        let probe = server.probe
        var before: ProbeReading?, after: ProbeReading?
        var cpuStart: UInt64?, cpuEnd: UInt64?
        var probeError: (any Error)?
        var hooks = LoadHooks()
        hooks.beforeWindow = { progress in
            do { before = try readProbes(server, progress) } catch { probeError = error }
        }
        hooks.windowOpened = { cpuStart = probe?.cpuNanoseconds() }
        hooks.windowClosed = { cpuEnd = probe?.cpuNanoseconds() }
        hooks.afterWindow = { progress in
            do { after = try readProbes(server, progress) } catch { probeError = probeError ?? error }
        }
        hooks.progress = { [status, duration = plan.duration] elapsed, messages in
            status("\(label): \(String(format: "%.1f", elapsed))/\(duration) s, \(formatCount(Double(messages) / max(elapsed, 0.001))) msgs/s")
        }
        status("\(label): warming up")
        let load = try LoadGenerator.run(options, hooks: hooks)
        if let probeError { throw BenchError.probeFailed("\(label): \(probeError)") }

        row.fill(load: load)
        if probe != nil {
            guard let cpuStart, let cpuEnd, let s0 = before?.sample, let s1 = after?.sample, let before, let after else {
                throw BenchError.probeFailed("\(label): the server (\(server.target)) could not be probed at the window's edges; it may have exited")
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
        }
        if load.errors > 0 {
            reportError("iobench: \(label): \(load.errors) errors: \(load.errorDetails.joined(separator: "; "))")
        }
    }

    /// One counted cell: closed loop, a window opened and closed with nothing in flight, so
    /// every instruction, allocator call and system call the server made in it belongs to the
    /// window's messages.
    func measureCounted(_ cell: Cell, on server: CellServer, into row: inout ResultRow, label: String) throws {
        var options = loadOptions(server.address, cell)
        options.quietEdges = true
        var before: StatsLine?, after: StatsLine?, counts: Callgrind.Counts?
        var probeError: (any Error)?
        var hooks = LoadHooks()
        // Quiet edges: nothing is in flight, so the stats and the zero/dump see the same messages.
        hooks.beforeWindow = { _ in
            do {
                before = try server.stats(timeout: 30)
                try server.zeroCounts()
            } catch { probeError = error }
        }
        hooks.afterWindow = { _ in
            do {
                counts = try server.dumpCounts()
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
    }

    private func loadOptions(_ address: SocketAddress, _ cell: Cell) -> LoadOptions {
        var options = LoadOptions(target: address)
        options.connections = cell.connections
        options.messageSize = cell.size
        options.duration = plan.duration
        options.warmup = plan.warmup
        options.threads = plan.generatorThreads
        options.cpus = plan.clientCPUs
        options.workload = plan.workload
        options.workMicroseconds = plan.workMicroseconds
        return options
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

