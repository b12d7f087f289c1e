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

/// The notification comparison (`iobench run --pattern`): the same events per second to the
/// same clients by push, long polling and short polling, on every backend, each cell with a
/// fresh pinned server, repeated, the order rotating between repetitions.
public struct NotificationPlan: Sendable {
    public typealias Cell = NotificationWorkload

    /// timed, or counted: each server under callgrind, its user-space instructions, allocator
    /// calls and system calls per delivered event over the window.
    public var method = MeasurementMethod.timed
    public var backends: [BackendKind] = Backends.kinds
    public var cells: [Cell] = []
    public var clients: [Int] = [1000]
    /// Events per second on the one topic every client listens to (the server's own events,
    /// Poisson arrivals, 64 B).
    public var eventRate = 10.0
    public var eventSize = 64
    /// The server's `--max-queue` (nil: its default).
    public var maxQueue: Int?
    public var repetitions = 3
    public var duration = 5.0
    public var warmup = 1.0
    public var holdTimeout = 30.0
    /// long-poll wake: events per second over all the clients' topics together.
    public var wakeRate = 1000.0
    /// long-poll timeouts: the WAITs' timeout.
    public var timeoutCellTimeout = 2.0
    public var serverCPUs = [0]
    public var clientCPU = 1
    public var executable: String
    /// The command that ran the comparison (the CSV's `run_command`).
    public var commandLine = ""

    public init(executable: String) { self.executable = executable }

}

public final class NotificationRunner {
    public let plan: NotificationPlan
    public let machine: MachineInfo
    public let runID: String
    /// Called with a line of progress before each cell.
    public var status: (String) -> Void = { _ in }
    /// Told as each cell starts: its number (from 1), how many there are, and what it is.
    public var cellStarted: (_ index: Int, _ total: Int, _ description: String) -> Void = { _, _, _ in }

    public init(plan: NotificationPlan, machine: MachineInfo = .current()) {
        self.plan = plan
        self.machine = machine
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd'T'HHmmss'Z'"
        formatter.timeZone = TimeZone(identifier: "UTC")
        runID = "\(formatter.string(from: Date()))-\(machine.host)"
    }

    public var cellCount: Int { plan.clients.count * plan.cells.count * plan.backends.count * plan.repetitions }

    /// Runs every cell; a cell's failure is recorded in its row (errors), not thrown, except
    /// when a server cannot start.
    public func run() throws -> [ResultRow] {
        var rows: [ResultRow] = []
        var done = 0
        for clients in plan.clients {
            for repetition in 1...plan.repetitions {
                // Rotate the backends' order between repetitions, as the echo matrix does.
                let shift = (repetition - 1) % max(plan.backends.count, 1)
                let backends = Array(plan.backends[shift...] + plan.backends[..<shift])
                for cell in plan.cells {
                    for backend in backends {
                        done += 1
                        cellStarted(done, cellCount, "\(clients) clients, \(cell), \(backend), repetition \(repetition)/\(plan.repetitions)")
                        status("[\(done)/\(cellCount)] \(clients) clients, \(cell), \(backend), repetition \(repetition)/\(plan.repetitions)")
                        rows.append(try measure(cell, backend: backend, clients: clients, repetition: repetition))
                    }
                }
            }
        }
        return rows
    }

    func serveArguments(_ cell: NotificationPlan.Cell, backend: BackendKind, clients: Int) -> [String] {
        let rate = cell == .longPollTimeouts ? 0 : cell == .longPollWake ? plan.wakeRate / Double(clients) : plan.eventRate
        return ["serve", "--backend", backend.rawValue, "--pattern", cell.servePattern, "--port", "0", "--quit-on-eof",
                "--threads", "1", "--cpus", plan.serverCPUs.map(String.init).joined(separator: ","),
                "--event-rate", "\(rate)", "--event-arrivals", "poisson", "--event-size", "\(plan.eventSize)"]
            + (plan.maxQueue.map { ["--max-queue", "\($0)"] } ?? [])
    }

    func loadOptions(_ cell: NotificationPlan.Cell, target: SocketAddress, clients: Int, serverPID: Int32) -> NotificationLoadOptions {
        var o = NotificationLoadOptions(target: target)
        o.connections = clients
        o.duration = plan.duration
        o.warmup = plan.warmup
        o.eventRate = plan.eventRate
        o.poissonEvents = true
        o.cpu = plan.clientCPU
        o.serverPID = serverPID
        o.holdTimeoutMilliseconds = UInt32(plan.holdTimeout * 1000)
        switch cell {
        case .push: o.mode = .push
        case .pushStalled:
            o.mode = .push
            o.stalled = max(1, clients / 100)
        case .longPoll: o.mode = .longPoll
        case .longPollWake:
            o.mode = .longPoll
            o.topics = clients
            o.eventRate = plan.wakeRate / Double(clients)
        case .longPollTimeouts:
            o.mode = .longPoll
            o.eventRate = 0
            o.warmup = 0
            o.holdTimeoutMilliseconds = UInt32(plan.timeoutCellTimeout * 1000)
            o.rearm = false
            // The window closes after the first round of timeouts, before the second.
            o.duration = plan.timeoutCellTimeout * 1.5
        case .shortPoll(let t):
            o.mode = .shortPoll
            o.pollInterval = t
        }
        return o
    }

    func measure(_ cell: NotificationPlan.Cell, backend: BackendKind, clients: Int, repetition: Int) throws -> ResultRow {
        if plan.method == .counted { return try measureCounted(cell, backend: backend, clients: clients, repetition: repetition) }
        let arguments = serveArguments(cell, backend: backend, clients: clients)
        let server = try ServerProcess(executable: plan.executable, arguments: arguments)
        let options = loadOptions(cell, target: server.address, clients: clients, serverPID: server.pid)
        var row = ResultRow()
        var result: NotificationLoadResult?
        var failure: String?
        // The server's counters when the load starts and when its window closes: system calls
        // per delivery over the same span as the load's deliveries.
        var before: StatsLine?
        var after: StatsLine?
        do {
            result = try NotificationLoad.run(options, ready: { before = try? server.stats() }, windowEnded: { after = try? server.stats() })
        } catch {
            failure = "\(error)"
        }
        if let result, let b = before?.syscallsTotal, let a = after?.syscallsTotal, result.totalDeliveries > 0 {
            row["server_syscalls_per_event"] = String(format: "%.4f", Double(a - b) / Double(result.totalDeliveries))
        }
        let stats = try? server.stats()
        let stopped = server.stop()
        if let result {
            for (name, value) in result.fields { row[name] = value }
            if !result.errors.isEmpty { failure = result.errors.prefix(3).joined(separator: "; ") }
        }
        identify(&row, cell, backend: backend, clients: clients, repetition: repetition)
        if let held = row.int("server_rss_held"), let end = row.int("server_rss_end") { row[.serverRSSGrowth] = "\(end - held)" }
        if let n = stats?.notification("events_dropped") { row[.eventsDroppedByPolicy] = "\(n)" }
        if let n = stats?.notification("slow_disconnects") { row["server_slow_disconnects"] = "\(n)" }
        if let n = stats?.notification("events_delivered") { row["server_events_delivered"] = "\(n)" }
        if let n = stats?.notification("waits_timed_out") { row["server_waits_timed_out"] = "\(n)" }
        // The bottleneck: a side that used (nearly) all of its CPUs.
        let serverUtil = row.double(.serverCPUUtilisation) ?? 0
        let generatorUtil = row.double(.generatorCPUUtilisation) ?? 0
        let capacity = Double(Backends.descriptor(backend).cpuCapacity(pinned: plan.serverCPUs.count, threads: 1))
        row["bottleneck"] = serverUtil >= Bottleneck.saturation * capacity ? "server" : generatorUtil >= Bottleneck.saturation ? "generator" : "neither"
        let load = NotificationLoad.commandLine(options)
        row["cell_command"] = "iobench " + arguments.joined(separator: " ") + " & " + load
        if failure == nil && stopped.exitStatus != 0 { failure = "the server exited with status \(stopped.exitStatus)" }
        row["error_detail"] = failure ?? ""
        row[.errors] = failure == nil ? (row[.errors] ?? "0") : "\(max(1, row.int("errors") ?? 1))"
        return row
    }

    /// What a row measured: the columns the echo and rpc rows share, under the same names and
    /// formats (`workload`, `method`, `connections`, `command`, CPU lists with spaces), the machine.
    func identify(_ row: inout ResultRow, _ cell: NotificationPlan.Cell, backend: BackendKind, clients: Int, repetition: Int) {
        row["workload"] = cell.workload
        row["method"] = plan.method.rawValue
        row["backend"] = backend.rawValue
        row["repetition"] = "\(repetition)"
        row["connections"] = "\(clients)"
        row["run_id"] = runID
        row["command"] = plan.commandLine
        row.record(machine: machine)
        row["event_size"] = "\(plan.eventSize)"
        row["server_cpus"] = plan.serverCPUs.map(String.init).joined(separator: " ")
        row["client_cpus"] = "\(plan.clientCPU)"
    }

    /// One counted cell: a fresh server under callgrind (with the options its backend needs
    /// there), the same load, and the server's user-space instructions, allocator calls and
    /// system calls from the window's opening to its end, per event delivered in the window.
    /// Events arrive all the time, so the edges are not quiet: callgrind is zeroed as the
    /// window opens and dumped as it ends, each a `callgrind_control` call of similar lag.
    /// Only the counts and what identifies the cell are kept: times under valgrind say nothing.
    func measureCounted(_ cell: NotificationPlan.Cell, backend: BackendKind, clients: Int, repetition: Int) throws -> ResultRow {
        let descriptor = Backends.descriptor(backend)
        let arguments = serveArguments(cell, backend: backend, clients: clients) + descriptor.countedServeOptions
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-callgrind-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try Callgrind.startServer(executable: plan.executable, arguments: arguments, outputDirectory: directory)
        defer { server.stopUnderValgrind() }
        var options = loadOptions(cell, target: server.address, clients: clients, serverPID: server.pid)
        options.serverPID = nil
        var before: StatsLine?, after: StatsLine?, counts: Callgrind.Counts?
        var probeError: (any Error)?
        var failure: String?
        var result: NotificationLoadResult?
        do {
            result = try NotificationLoad.run(options, windowStarted: {
                do {
                    before = try server.stats(timeout: 30)
                    try Callgrind.zero(pid: server.pid)
                } catch { probeError = error }
            }, windowEnded: {
                do {
                    counts = try Callgrind.dump(pid: server.pid, outputDirectory: directory)
                    after = try server.stats(timeout: 30)
                } catch { probeError = probeError ?? error }
            })
        } catch {
            failure = "\(error)"
        }
        if let probeError { throw BenchError.probeFailed("\(cell), \(backend): \(probeError)") }
        var row = ResultRow()
        identify(&row, cell, backend: backend, clients: clients, repetition: repetition)
        if let result {
            let kept = ["topics", "stalled", "event_rate", "poll_interval_ms", "hold_timeout_ms", "seconds", "deliveries", "gaps", "duplicates", "reorders", "payload_errors"]
            for (name, value) in result.fields where kept.contains(name) { row[name] = value }
            if !result.errors.isEmpty { failure = result.errors.prefix(3).joined(separator: "; ") }
            if let counts, result.deliveries > 0 {
                let perEvent = 1.0 / Double(result.deliveries)
                row.set(.userInstructionsPerEvent, Double(counts.instructions) * perEvent)
                row.set(.allocationsPerEvent, Double(counts.allocations) * perEvent)
                if let b = before?.syscallsTotal, let a = after?.syscallsTotal { row.set(.countedSyscallsPerEvent, Double(a - b) * perEvent) }
            } else if failure == nil {
                failure = "no event was delivered in the counted window"
            }
        }
        row["cell_command"] = "valgrind --tool=callgrind iobench " + arguments.joined(separator: " ") + " & " + NotificationLoad.commandLine(options)
        row["error_detail"] = failure ?? ""
        row[.errors] = failure == nil ? "0" : "1"
        return row
    }

    /// The CSV's columns: what the cell was, the machine and build, the load's figures
    /// (``NotificationLoadResult/fields``), the server's counters, the verdicts.
    public static var columns: [String] {
        let fields = NotificationLoadResult(options: NotificationLoadOptions(target: try! SocketAddress(host: "127.0.0.1", port: 1))).fields.map(\.name)
        return ["run_id", "workload", "method", "backend", "repetition", "host", "kernel", "cpu_model", "cores", "swift_version", "git_commit",
                "git_dirty", "build_config", "server_cpus", "client_cpus", "event_size"]
            + fields.filter { $0 != "errors" && $0 != "workload" }
            + ["command", "server_rss_growth", "server_syscalls_per_event", "server_events_delivered", "server_events_dropped", "server_slow_disconnects",
               "server_waits_timed_out", "bottleneck",
               Metric.userInstructionsPerEvent.column, Metric.allocationsPerEvent.column, Metric.countedSyscallsPerEvent.column,
               "errors", "error_detail", "cell_command"]
    }

    // MARK: The table

    /// The comparison: per client count, one row per backend and a column per cell, each
    /// figure a median with its interval over the repetitions; per backend the cell with the
    /// least server CPU per delivered event is starred.
    public static func render(_ rows: [ResultRow], markdown: Bool = true) -> String {
        var out = ""
        var clientCounts: [String] = []
        for row in rows where !clientCounts.contains(row["connections"] ?? "") { clientCounts.append(row["connections"] ?? "") }
        for clients in clientCounts {
            let these = rows.filter { $0["connections"] == clients }
            var cells: [String] = []
            var backends: [String] = []
            for row in these {
                if !cells.contains(NotificationPlan.Cell.label(row)) { cells.append(NotificationPlan.Cell.label(row)) }
                if !backends.contains(row["backend"] ?? "") { backends.append(row["backend"] ?? "") }
            }
            let rate = these.first?["event_rate"] ?? "?"
            let size = these.first.flatMap { $0.int("bytes_received") != nil ? $0["event_size"] : nil } ?? "64"
            let runs = these.compactMap { $0.int("repetition") }.max() ?? 0
            let coverage = Statistics.medianInterval((0..<runs).map(Double.init))?.confidence ?? 0
            out += "\n**\(clients) clients, \(rate) events/s (Poisson, \(size) B) on one topic**: medians of \(runs) runs [a distribution-free interval, \(Int((coverage * 100).rounded()))% coverage]; ★ the least server CPU per delivered event, per backend (stalled, wake and timeout cells aside).\n\n"
            // The figures and their labels and formats: the registry's (`Metric.notificationTable`).
            let figures: [(String, String, (Double) -> String)] = (Metric.notificationTable + Metric.countedNotificationTable).map { ($0.column, $0.display.label, $0.display.format) }
            var table: [[String]] = [["backend", "figure"] + cells]
            for backend in backends {
                let cost: [String: Double] = Dictionary(uniqueKeysWithValues: cells.compactMap { cell in
                    let values = these.filter { $0["backend"] == backend && NotificationPlan.Cell.label($0) == cell && ($0.int("errors") ?? 0) == 0 }.compactMap { $0.double(.serverCPUPerEvent) }
                    return Statistics.median(values).map { (cell, $0) }
                })
                let cheapest = cost.filter { !$0.key.contains("timeouts") && !$0.key.contains("stalled") && !$0.key.contains("wake") }.min { $0.value < $1.value }?.key
                var named = false
                for (index, figure) in figures.enumerated() {
                    // A figure no cell of this backend has is left out; the backend is named on its first line.
                    guard these.contains(where: { $0["backend"] == backend && !($0[figure.0] ?? "").isEmpty }) else { continue }
                    var line = [named ? "" : backend, figure.1]
                    named = true
                    for cell in cells {
                        let runs = these.filter { $0["backend"] == backend && NotificationPlan.Cell.label($0) == cell }
                        let failed = runs.contains { ($0.int("errors") ?? 0) > 0 }
                        let values = runs.compactMap { $0.double(figure.0) }
                        guard let estimate = Statistics.medianInterval(values) else { line.append(failed ? "failed" : "-"); continue }
                        var text = figure.2(estimate.value)
                        if values.count > 1 { text += " [\(figure.2(estimate.low)), \(figure.2(estimate.high))]" }
                        if index == 0 && cell == cheapest { text += " ★" }
                        if index == 0 && runs.contains(where: { $0["bottleneck"] == "server" }) { text += " (server saturated)" }
                        if index == 0 && runs.contains(where: { $0["bottleneck"] == "generator" }) { text += " (generator saturated)" }
                        if failed { text += " (errors)" }
                        line.append(text)
                    }
                    table.append(line)
                }
            }
            out += markdown ? markdownTable(table) : SummaryTable.align(table)
        }
        return out
    }

    static func markdownTable(_ table: [[String]]) -> String {
        table.enumerated().map { index, row in
            let line = "| " + row.joined(separator: " | ") + " |"
            return index == 0 ? line + "\n|" + String(repeating: " --- |", count: row.count) : line
        }.joined(separator: "\n") + "\n"
    }
}

extension NotificationLoad {
    /// The `iobench load` command that runs `options` (for the CSV's command column).
    public static func commandLine(_ o: NotificationLoadOptions) -> String {
        var parts = ["iobench load --target \(o.target) --pattern \(o.mode.rawValue) --subscribers \(o.connections)",
                     "--duration \(o.duration) --warmup \(o.warmup)"]
        if let cpu = o.cpu { parts.append("--cpus \(cpu)") }
        if o.eventRate > 0 { parts.append("--event-rate \(o.eventRate)") }
        if o.publishers > 0 { parts.append("--publishers \(o.publishers)") }
        if o.poissonEvents { parts.append("--poisson-events") }
        if o.stalled > 0 { parts.append("--stalled \(o.stalled)") }
        if o.topics > 1 { parts.append("--topics \(o.topics)") }
        if !o.rearm { parts.append("--no-rearm") }
        switch o.mode {
        case .push: break
        case .longPoll: parts.append("--hold-timeout \(o.holdTimeoutMilliseconds)ms")
        case .shortPoll:
            parts.append("--poll-interval \(NotificationWorkload.milliseconds(o.pollInterval))")
            if let d = o.jobDuration { parts.append("--job-duration \(NotificationWorkload.milliseconds(d))") }
        }
        parts.append("--server-pid PID")
        return parts.joined(separator: " ")
    }
}
