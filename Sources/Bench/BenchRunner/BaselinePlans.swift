import ResultReporting
import LoadGeneration
import ResultAnalysis
import Backends
import ServerKit
import Protocols
import BackendKit
import Foundation

/// Turns the rows of a baseline back into the plans that re-measure its cells, one plan per
/// cell so a cell that looks regressed can be measured again on its own.
public enum BaselinePlans {
    public struct CellPlan: Sendable {
        public let title: String
        public let plan: RunPlan
    }

    public static func plans(from rows: [ResultRow], executable: String, commandLine: String) throws -> (cells: [CellPlan], skipped: [String]) {
        var order: [String] = []
        var groups: [String: [ResultRow]] = [:]
        for row in rows {
            let key = row.cellKey + "|" + (row["server_threads"] ?? "")
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append(row)
        }
        var cells: [CellPlan] = []
        var skipped: Set<String> = []
        for key in order {
            let group = groups[key]!
            let first = group[0]
            var plan = RunPlan(executable: executable, commandLine: commandLine)
            var backends: [BackendKind] = []
            for row in group {
                guard let name = row["backend"] else { continue }
                if let kind = Backends.named(name)?.kind {
                    if !backends.contains(kind) { backends.append(kind) }
                } else {
                    skipped.insert(name)  // an external server: it may not be running now
                }
            }
            guard !backends.isEmpty else { continue }
            plan.backends = backends
            plan.method = MeasurementMethod(rawValue: first["method"] ?? "") ?? .timed
            plan.repetitions = max(1, group.compactMap { $0.int("repetition") }.max() ?? 1)
            plan.serverThreads = first.int("server_threads") ?? 1
            plan.serverCPUs = cpus(first["server_cpus"]) ?? [0]
            plan.clientCPUs = cpus(first["client_cpus"]) ?? [1]
            plan.generatorThreads = plan.clientCPUs.count
            if first["workload"] == "idle" {
                plan.connections = []
                plan.idleConnections = first.int("connections") ?? 0
            } else {
                guard let connections = first.int("connections"), let size = first.int("size_bytes") else {
                    throw CheckError.unusable("the baseline has a row without connections or size_bytes: it was not written by iobench")
                }
                plan.connections = [connections]
                plan.sizes = [size]
                if let rate = first.double("rate_msgs_per_s") {
                    plan.modes = [.open(rate: rate)]
                } else {
                    plan.modes = [.closed(depth: first.int("depth") ?? 1)]
                }
                let durations = group.compactMap { $0.double("duration_s") }
                plan.duration = ((Statistics.median(durations) ?? 1) * 10).rounded() / 10
                plan.warmup = first.double("warmup_s") ?? 0.3
                plan.idleConnections = 0
            }
            cells.append(CellPlan(title: RegressionCheck.title(of: first), plan: plan))
        }
        return (cells, skipped.sorted())
    }

    /// Makes `plan` the counted cells a baseline records and `check --against` compares: each
    /// server under callgrind, 64 B messages, closed loop at depth 1, a 2 s window after 0.5 s of
    /// warm-up, per connection count.
    public static func makeCounted(_ plan: inout RunPlan, connections: [Int], repetitions: Int) {
        plan.method = .counted
        plan.externals = []
        plan.connections = connections
        plan.sizes = [64]
        plan.modes = [.closed(depth: 1)]
        plan.repetitions = repetitions
        plan.duration = 2
        plan.warmup = 0.5
        plan.idleConnections = 0
    }

    static func cpus(_ text: String?) -> [Int]? {
        guard let text, !text.isEmpty else { return nil }
        let values = text.split(separator: " ").compactMap { Int($0) }
        return values.isEmpty ? nil : values
    }
}
