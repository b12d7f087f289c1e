import Foundation

/// A figure the regression check compares, and which way is better.
public struct CheckedMetric: Sendable, Equatable {
    public enum Direction: Sendable { case higherIsBetter, lowerIsBetter }
    /// Time-based figures move with machine load; counts per message barely do.
    public enum Nature: Sendable { case time, count }

    public let column: String
    public let direction: Direction
    public let nature: Nature

    public static let all: [CheckedMetric] = [
        CheckedMetric(column: "msgs_per_s", direction: .higherIsBetter, nature: .time),
        CheckedMetric(column: "p50_us", direction: .lowerIsBetter, nature: .time),
        CheckedMetric(column: "p99_us", direction: .lowerIsBetter, nature: .time),
        CheckedMetric(column: "server_cpu_us_per_msg", direction: .lowerIsBetter, nature: .time),
        CheckedMetric(column: "syscalls_per_msg", direction: .lowerIsBetter, nature: .count),
        CheckedMetric(column: "ctx_switches_per_msg", direction: .lowerIsBetter, nature: .count),
        CheckedMetric(column: "idle_rss_bytes_per_conn", direction: .lowerIsBetter, nature: .count),
    ]

    /// The best of several repetitions: interference from other work only ever makes a run
    /// slower (fewer messages per second, more CPU, syscalls and wake-ups per message), so the
    /// best repetition is the closest to what the code itself costs. Used for the fresh run.
    public func best(_ values: [Double]) -> Double? {
        direction == .higherIsBetter ? values.max() : values.min()
    }

    /// The typical figure of the baseline: its median. A baseline's luckiest repetition is not
    /// what the code costs either (seen here: one repetition at half the CPU of the others),
    /// and held as the bar it would fail every later run.
    public func typical(_ values: [Double]) -> Double? { SummaryTable.median(values) }

    /// How much worse `now` is than `baseline`, as a fraction (positive: worse).
    public func worsening(baseline: Double, now: Double) -> Double {
        guard baseline != 0 else { return now == 0 ? 0 : .infinity }
        let change = (now - baseline) / abs(baseline)
        return direction == .higherIsBetter ? -change : change
    }
}

/// When a change counts as a regression: worse by more than `relative` (a fraction of the
/// baseline) AND by more than `absolute` (in the metric's unit), so tiny figures do not flap.
public struct Threshold: Sendable, Equatable, Codable {
    public var relative: Double
    public var absolute: Double

    public init(relative: Double, absolute: Double = 0) {
        self.relative = relative
        self.absolute = absolute
    }

    private enum CodingKeys: String, CodingKey { case relative, absolute }

    /// `absolute` may be left out of a thresholds file (it is then 0).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        relative = try container.decode(Double.self, forKey: .relative)
        absolute = try container.decodeIfPresent(Double.self, forKey: .absolute) ?? 0
    }

    public var description: String {
        absolute > 0 ? "\(Int((relative * 100).rounded()))% & \(fixed(absolute, absolute < 1 ? 2 : 0))" : "\(Int((relative * 100).rounded()))%"
    }
}

/// Thresholds per metric, optionally per backend, with defaults chosen for a shared 2-core
/// machine: counts per message are compared tightly, times loosely.
public struct Thresholds: Sendable, Equatable {
    public var metrics: [String: Threshold]
    public var backends: [String: [String: Threshold]]

    public static let defaults = Thresholds(metrics: [
        "msgs_per_s": Threshold(relative: 0.40),
        "p50_us": Threshold(relative: 0.50, absolute: 50),
        "p99_us": Threshold(relative: 1.00, absolute: 200),
        "server_cpu_us_per_msg": Threshold(relative: 0.40, absolute: 1.5),
        "syscalls_per_msg": Threshold(relative: 0.25, absolute: 0.4),
        "ctx_switches_per_msg": Threshold(relative: 0.50, absolute: 0.2),
        "idle_rss_bytes_per_conn": Threshold(relative: 0.25, absolute: 64),
    ], backends: [:])

    public func threshold(_ metric: String, backend: String) -> Threshold? {
        backends[backend]?[metric] ?? metrics[metric]
    }

    /// Reads overrides from JSON: `{"metrics": {"p99_us": {"relative": 1.5, "absolute": 300}},
    /// "backends": {"blocking": {"msgs_per_s": {"relative": 0.5, "absolute": 0}}}}`.
    /// Metrics the file leaves out keep their defaults.
    public static func load(_ path: String) throws -> Thresholds {
        struct File: Decodable {
            var metrics: [String: Threshold]?
            var backends: [String: [String: Threshold]]?
        }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw CheckError.unusable("cannot read the thresholds file \(path): \(error.localizedDescription)")
        }
        let file: File
        do { file = try JSONDecoder().decode(File.self, from: data) } catch {
            throw CheckError.unusable("the thresholds file \(path) is not valid: \(error); see README.md for its form")
        }
        var result = Thresholds.defaults
        let known = Set(CheckedMetric.all.map(\.column))
        for (name, threshold) in file.metrics ?? [:] {
            guard known.contains(name) else { throw CheckError.unusable("the thresholds file \(path) names an unknown metric '\(name)': use one of \(known.sorted().joined(separator: ", "))") }
            result.metrics[name] = threshold
        }
        for (backend, metrics) in file.backends ?? [:] {
            for name in metrics.keys where !known.contains(name) {
                throw CheckError.unusable("the thresholds file \(path) names an unknown metric '\(name)' for \(backend)")
            }
            result.backends[backend] = metrics
        }
        return result
    }
}

public enum CheckError: Error, CustomStringConvertible {
    /// The check could not run (exit 1).
    case unusable(String)
    public var description: String {
        switch self { case .unusable(let why): why }
    }
}

/// One comparison: a metric of one backend in one cell.
public struct Comparison: Sendable {
    public enum Verdict: String, Sendable { case ok, regressed, improved, reference, missing }

    public let cell: String
    public let backend: String
    public let metric: String
    /// "ratio to epoll" when compared relative to a reference backend, else empty.
    public let basis: String
    public let baseline: Double?
    public let now: Double?
    public let threshold: Threshold?
    public let verdict: Verdict

    /// The change as a signed fraction of the baseline (positive: the number went up).
    public var change: Double? {
        guard let baseline, let now, baseline != 0 else { return nil }
        return (now - baseline) / abs(baseline)
    }
}

/// Compares a fresh run with a baseline, cell by cell and metric by metric.
public struct RegressionCheck: Sendable {
    public var thresholds: Thresholds
    /// Compare time-based metrics as ratios to this backend measured in the same run.
    public var relativeTo: String?

    public init(thresholds: Thresholds = .defaults, relativeTo: String? = nil) {
        self.thresholds = thresholds
        self.relativeTo = relativeTo
    }

    /// A human title for a cell key (workload|connections|size|depth|rate).
    public static func title(of row: ResultRow) -> String {
        if row["workload"] == "idle" { return "idle, \(row["connections"] ?? "?") connections" }
        var title = "\(row["connections"] ?? "?") conns × \(row["size_bytes"] ?? "?") B"
        if let rate = row["rate_msgs_per_s"], !rate.isEmpty { title += ", \(rate)/s" } else { title += ", depth \(row["depth"] ?? "1")" }
        return title
    }

    public func compare(baseline: [ResultRow], now: [ResultRow]) -> [Comparison] {
        var comparisons: [Comparison] = []
        var cellOrder: [String] = []
        for row in baseline where !cellOrder.contains(row.cellKey) { cellOrder.append(row.cellKey) }
        for cell in cellOrder {
            let baseRows = baseline.filter { $0.cellKey == cell }
            let nowRows = now.filter { $0.cellKey == cell }
            let title = Self.title(of: baseRows[0])
            var servers: [String] = []
            for row in baseRows where !servers.contains(row.serverLabel) { servers.append(row.serverLabel) }
            for server in servers {
                let b = baseRows.filter { $0.serverLabel == server }
                let n = nowRows.filter { $0.serverLabel == server }
                for metric in CheckedMetric.all {
                    let baseValues = b.compactMap { $0.double(metric.column) }
                    guard !baseValues.isEmpty else { continue }  // not measured for this cell or server
                    let threshold = thresholds.threshold(metric.column, backend: server)
                    var baseValue = metric.typical(baseValues)
                    var nowValue = metric.best(n.compactMap { $0.double(metric.column) })
                    var basis = ""
                    if let reference = relativeTo, metric.nature == .time {
                        if server == reference {
                            comparisons.append(Comparison(cell: title, backend: server, metric: metric.column, basis: "reference",
                                                          baseline: baseValue, now: nowValue, threshold: nil, verdict: .reference))
                            continue
                        }
                        // Pair each repetition with the reference's measured beside it (same run, same
                        // repetition number), so drift between repetitions cancels out.
                        basis = "ratio to \(reference)"
                        baseValue = metric.typical(pairedRatios(b, baseRows.filter { $0.serverLabel == reference }, metric.column))
                        nowValue = metric.best(pairedRatios(n, nowRows.filter { $0.serverLabel == reference }, metric.column))
                    }
                    comparisons.append(judge(cell: title, server: server, metric: metric, basis: basis,
                                             baseline: baseValue, now: nowValue, threshold: threshold))
                }
            }
        }
        return comparisons
    }

    /// value / reference for each repetition both measured in the same run.
    private func pairedRatios(_ rows: [ResultRow], _ referenceRows: [ResultRow], _ column: String) -> [Double] {
        rows.compactMap { row in
            guard let value = row.double(column),
                  let partner = referenceRows.first(where: { $0["run_id"] == row["run_id"] && $0["repetition"] == row["repetition"] }),
                  let reference = partner.double(column), reference > 0 else { return nil }
            return value / reference
        }
    }

    private func judge(cell: String, server: String, metric: CheckedMetric, basis: String,
                       baseline: Double?, now: Double?, threshold: Threshold?) -> Comparison {
        guard let baseline, let now, let threshold else {
            return Comparison(cell: cell, backend: server, metric: metric.column, basis: basis, baseline: baseline, now: now,
                              threshold: threshold, verdict: .missing)
        }
        let worse = metric.worsening(baseline: baseline, now: now)
        // In ratio form the absolute threshold (in the metric's unit) does not apply.
        let absoluteWorse = basis.isEmpty ? abs(now - baseline) : .infinity
        let verdict: Comparison.Verdict
        if worse > threshold.relative && absoluteWorse > threshold.absolute {
            verdict = .regressed
        } else if -worse > threshold.relative && absoluteWorse > threshold.absolute {
            verdict = .improved
        } else {
            verdict = .ok
        }
        return Comparison(cell: cell, backend: server, metric: metric.column, basis: basis, baseline: baseline, now: now,
                          threshold: threshold, verdict: verdict)
    }

    /// The machine fields that must match for absolute comparisons to be fair.
    public static func machineDifferences(baseline: ResultRow, now: MachineInfo) -> [String] {
        var differences: [String] = []
        let pairs: [(String, String)] = [("host", now.host), ("cpu_model", now.cpuModel), ("cores", "\(now.cores)"),
                                         ("kernel", now.kernel), ("swift_version", now.swiftVersion)]
        for (column, value) in pairs where (baseline[column] ?? "") != value {
            differences.append("\(column) was '\(baseline[column] ?? "")', now '\(value)'")
        }
        return differences
    }

    /// The report: every cell and metric with baseline, now, change, threshold and verdict.
    public static func render(_ comparisons: [Comparison], markdown: Bool) -> String {
        var table = [["cell", "backend", "metric", "baseline", "now", "change", "threshold", "verdict"]]
        for c in comparisons {
            let metric = c.basis.isEmpty || c.basis == "reference" ? c.metric : "\(c.metric) (\(c.basis))"
            table.append([
                c.cell, c.backend, metric,
                c.baseline.map(format) ?? "-", c.now.map(format) ?? "-",
                c.change.map { String(format: "%+.1f%%", $0 * 100) } ?? "-",
                c.threshold?.description ?? "-",
                c.verdict == .regressed ? "REGRESSED" : c.verdict.rawValue,
            ])
        }
        if markdown {
            let lines = table.enumerated().map { index, row -> String in
                let line = "| " + row.joined(separator: " | ") + " |"
                return index == 0 ? line + "\n|" + String(repeating: " --- |", count: row.count) : line
            }
            return lines.joined(separator: "\n") + "\n"
        }
        return SummaryTable.align(table)
    }

    static func format(_ value: Double) -> String {
        switch abs(value) {
        case 1000...: String(format: "%.0f", value)
        case 10...: String(format: "%.1f", value)
        default: String(format: "%.3f", value)
        }
    }
}
