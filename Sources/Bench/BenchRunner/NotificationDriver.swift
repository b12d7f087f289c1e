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

/// The notification workloads (`run --pattern push,long-poll,short-poll,...`): the same events
/// per second to the same clients by push, long polling and short polling, in cells of client
/// count × workload. The clients are ``NotificationLoad`` (one thread, on the first client CPU).
struct NotificationDriver: CellDriver {
    struct Cell {
        let workload: NotificationWorkload
        let clients: Int
    }

    let plan: RunPlan
    let settings: NotificationCells

    init(plan: RunPlan, cells: NotificationCells) {
        self.plan = plan
        settings = cells
    }

    var cells: [Cell] {
        settings.clients.flatMap { clients in settings.workloads.map { Cell(workload: $0, clients: clients) } }
    }

    func describe(_ cell: Cell, on target: Target, repetition: Int) -> String {
        "\(cell.clients) clients, \(cell.workload), \(target), repetition \(repetition)/\(plan.repetitions)"
    }

    func workload(of cell: Cell) -> String { cell.workload.workload }
    func connections(of cell: Cell) -> Int { cell.clients }

    func serveOptions(for cell: Cell) -> [String] {
        let rate = cell.workload == .longPollTimeouts ? 0 : cell.workload == .longPollWake ? settings.wakeRate / Double(cell.clients) : settings.eventRate
        return ["--pattern", cell.workload.servePattern,
                "--event-rate", "\(rate)", "--event-arrivals", "poisson", "--event-size", "\(settings.eventSize)"]
            + (settings.maxQueue.map { ["--max-queue", "\($0)"] } ?? [])
    }

    func loadOptions(_ cell: Cell, target: SocketAddress, serverPID: Int32?) -> NotificationLoadOptions {
        var o = NotificationLoadOptions(target: target)
        let clients = cell.clients
        o.connections = clients
        o.duration = plan.duration
        o.warmup = plan.warmup
        o.eventRate = settings.eventRate
        o.poissonEvents = true
        o.cpu = plan.clientCPUs.first
        o.serverPID = serverPID
        o.holdTimeoutMilliseconds = UInt32(settings.holdTimeout * 1000)
        switch cell.workload {
        case .push: o.mode = .push
        case .pushStalled:
            o.mode = .push
            o.stalled = max(1, clients / 100)
        case .longPoll: o.mode = .longPoll
        case .longPollWake:
            o.mode = .longPoll
            o.topics = clients
            o.eventRate = settings.wakeRate / Double(clients)
        case .longPollTimeouts:
            o.mode = .longPoll
            o.eventRate = 0
            o.warmup = 0
            o.holdTimeoutMilliseconds = UInt32(settings.timeoutCellTimeout * 1000)
            o.rearm = false
            // The window closes after the first round of timeouts, before the second.
            o.duration = settings.timeoutCellTimeout * 1.5
        case .shortPoll(let t):
            o.mode = .shortPoll
            o.pollInterval = t
        }
        return o
    }

    /// One timed cell: the clients in place, then warm-up and window; the server's CPU is read
    /// by the load at the window's edges, its counters when the load starts and as the window
    /// closes (system calls per delivery over the same span as the deliveries).
    func measure(_ cell: Cell, on server: CellServer, into row: inout ResultRow, label: String) throws {
        let options = loadOptions(cell, target: server.address, serverPID: server.probe?.pid)
        var result: NotificationLoadResult?
        var failure: String?
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
        if let result {
            for (name, value) in result.fields { row[name] = value }
            if !result.errors.isEmpty { failure = result.errors.prefix(3).joined(separator: "; ") }
        }
        row["event_size"] = "\(settings.eventSize)"
        if let held = row.int("server_rss_held"), let end = row.int("server_rss_end") { row[.serverRSSGrowth] = "\(end - held)" }
        if let n = stats?.notification("events_dropped") { row[.eventsDroppedByPolicy] = "\(n)" }
        if let n = stats?.notification("slow_disconnects") { row["server_slow_disconnects"] = "\(n)" }
        if let n = stats?.notification("events_delivered") { row["server_events_delivered"] = "\(n)" }
        if let n = stats?.notification("waits_timed_out") { row["server_waits_timed_out"] = "\(n)" }
        row["cell_command"] = server.command + " & " + NotificationLoad.commandLine(options)
        record(failure, in: &row)
    }

    /// A cell's failure in `error_detail` and `errors` (at least 1); none: the load's count.
    private func record(_ failure: String?, in row: inout ResultRow) {
        row["error_detail"] = failure ?? ""
        row[.errors] = failure == nil ? (row[.errors] ?? "0") : "\(max(1, row.int("errors") ?? 1))"
    }

    /// A server that did not exit cleanly failed the cell.
    func serverStopped(_ stopped: ServerProcess.Stopped, row: inout ResultRow) {
        if (row["error_detail"] ?? "").isEmpty && stopped.exitStatus != 0 {
            record("the server exited with status \(stopped.exitStatus)", in: &row)
        }
    }

    /// One counted cell: the same load against a server under callgrind, and the server's
    /// user-space instructions, allocator calls and system calls from the window's opening to
    /// its end, per event delivered in the window. Events arrive all the time, so the edges
    /// are not quiet: callgrind is zeroed as the window opens and dumped as it ends, each a
    /// `callgrind_control` call of similar lag. Only the counts and what identifies the cell
    /// are kept: times under valgrind say nothing.
    func measureCounted(_ cell: Cell, on server: CellServer, into row: inout ResultRow, label: String) throws {
        let options = loadOptions(cell, target: server.address, serverPID: nil)
        var before: StatsLine?, after: StatsLine?, counts: Callgrind.Counts?
        var probeError: (any Error)?
        var failure: String?
        var result: NotificationLoadResult?
        do {
            result = try NotificationLoad.run(options, windowStarted: {
                do {
                    before = try server.stats(timeout: 30)
                    try server.zeroCounts()
                } catch { probeError = error }
            }, windowEnded: {
                do {
                    counts = try server.dumpCounts()
                    after = try server.stats(timeout: 30)
                } catch { probeError = probeError ?? error }
            })
        } catch {
            failure = "\(error)"
        }
        if let probeError { throw BenchError.probeFailed("\(label): \(probeError)") }
        row["event_size"] = "\(settings.eventSize)"
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
        row["cell_command"] = server.command + " & " + NotificationLoad.commandLine(options)
        row["error_detail"] = failure ?? ""
        row[.errors] = failure == nil ? "0" : "1"
    }

    /// The CSV's columns: what the cell was, the machine and build, the load's figures
    /// (``NotificationLoadResult/fields``), the server's counters, the verdicts.
    public static var columns: [String] {
        let fields = NotificationLoadResult(options: NotificationLoadOptions(target: try! SocketAddress(host: "127.0.0.1", port: 1))).fields.map(\.name)
        return ["run_id", "workload", "method", "backend", "repetition", "host", "kernel", "cpu_model", "cores", "swift_version", "git_commit",
                "git_dirty", "build_config", "server_cpus", "client_cpus", "event_size"]
            + fields.filter { $0 != "errors" && $0 != "workload" }
            + ["command", "server_rss_growth", "server_syscalls_per_event", "server_events_delivered", "server_events_dropped", "server_slow_disconnects",
               "server_waits_timed_out", "bottleneck", "valid",
               Metric.userInstructionsPerEvent.column, Metric.allocationsPerEvent.column, Metric.countedSyscallsPerEvent.column,
               "errors", "error_detail", "cell_command"]
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
