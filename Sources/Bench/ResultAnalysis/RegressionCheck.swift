import Foundation

/// A figure the regression check compares, from which kind of row, and which way is better.
public struct CheckedMetric: Sendable, Equatable {
    public enum Direction: Sendable { case higherIsBetter, lowerIsBetter }
    /// Counts (instructions, allocations, system calls under the counted method, memory per idle
    /// connection) do not depend on the machine's speed and are compared across machines;
    /// times (and everything measured under timed load) are judged only against a baseline
    /// from this machine, or paired within one run (`check --against`).
    public enum Nature: Sendable { case time, count }
    /// Which rows carry it.
    public enum Source: Sendable { case counted, timed, idle }

    public let metric: Metric
    public let direction: Direction
    public let nature: Nature
    public let source: Source

    public var column: String { metric.column }

    /// Its name in reports and thresholds files (`Metric.id`).
    public var id: String { metric.id }

    /// A metric of the registry, compared as `nature` says; which way is better and which rows
    /// carry it come from the registry.
    public init(_ metric: Metric, _ nature: Nature) {
        precondition(metric.polarity != .neither, "\(metric) has no better direction to check")
        self.metric = metric
        direction = metric.polarity == .higherIsBetter ? .higherIsBetter : .lowerIsBetter
        self.nature = nature
        switch metric.source {
        case .counted: source = .counted
        case .idle: source = .idle
        case .timed, .notification: source = .timed
        }
    }

    public static let all: [CheckedMetric] = [
        CheckedMetric(.userInstructionsPerMessage, .count),
        CheckedMetric(.allocationsPerMessage, .count),
        CheckedMetric(.countedSyscallsPerMessage, .count),
        CheckedMetric(.messagesPerSecond, .time),
        CheckedMetric(.latencyP50, .time),
        CheckedMetric(.latencyP99, .time),
        CheckedMetric(.serverCPUPerMessage, .time),
        // Under load these depend on how far the server falls behind (batching): timed figures.
        CheckedMetric(.syscallsPerMessage, .time),
        CheckedMetric(.contextSwitchesPerMessage, .time),
        CheckedMetric(.idleBytesPerConnection, .count),
    ]

    public static func source(of row: ResultRow) -> Source {
        if row["workload"] == "idle" { return .idle }
        return row["method"] == MeasurementMethod.counted.rawValue ? .counted : .timed
    }

    /// The fresh figure of several repetitions (a cell measured again counts all of them): the
    /// best, since interference only ever makes a run worse: fewer messages per second, more CPU,
    /// and for counts extra wake-ups and events that add instructions, never remove them.
    public func fresh(_ values: [Double]) -> Double? {
        direction == .higherIsBetter ? values.max() : values.min()
    }

    /// The baseline's figure: its median (its luckiest repetition is no fair bar either).
    public func typical(_ values: [Double]) -> Double? { Statistics.median(values) }

    /// How much worse `now` is than `baseline`, as a fraction (positive: worse).
    public func worsening(baseline: Double, now: Double) -> Double {
        guard baseline != 0 else { return now == 0 ? 0 : (direction == .lowerIsBetter) == (now > 0) ? .infinity : -.infinity }
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
        let percent = relative * 100 < 10 && relative > 0 ? String(format: "%.1f%%", relative * 100) : "\(Int((relative * 100).rounded()))%"
        guard absolute > 0 else { return percent }
        let amount = fixed(absolute, absolute == absolute.rounded() ? 0 : absolute < 1 ? 2 : 1)
        return relative > 0 ? "\(percent) & \(amount)" : "+\(amount)"
    }

    /// Why this threshold would disable its check, or nil when it is usable.
    package func problem(for metric: CheckedMetric) -> String? {
        guard relative.isFinite, absolute.isFinite, relative >= 0, absolute >= 0 else {
            return "thresholds must be finite and not negative"
        }
        if metric.nature == .count && relative > 1.0 {
            return "a relative threshold above 1.0 lets a count double unseen"
        }
        if metric.direction == .higherIsBetter && relative >= 1.0 {
            return "a relative threshold of 1.0 or more can never be crossed by a figure that falls"
        }
        return nil
    }
}

/// Thresholds per metric, optionally per backend. Counts are held tightly (they repeat to well
/// under 1%); times loosely, since a baseline recorded on another day measured another machine.
public struct Thresholds: Sendable, Equatable {
    public var metrics: [String: Threshold]
    public var backends: [String: [String: Threshold]]

    public static let defaults = Thresholds(metrics: [
        Metric.userInstructionsPerMessage.id: Threshold(relative: 0.02),
        Metric.allocationsPerMessage.id: Threshold(relative: 0, absolute: 0.01),
        Metric.countedSyscallsPerMessage.id: Threshold(relative: 0, absolute: 0.05),
        Metric.messagesPerSecond.id: Threshold(relative: 0.40),
        Metric.latencyP50.id: Threshold(relative: 0.50, absolute: 50),
        Metric.latencyP99.id: Threshold(relative: 1.00, absolute: 200),
        Metric.serverCPUPerMessage.id: Threshold(relative: 0.40, absolute: 1.5),
        Metric.syscallsPerMessage.id: Threshold(relative: 0.25, absolute: 0.4),
        Metric.contextSwitchesPerMessage.id: Threshold(relative: 0.50, absolute: 0.2),
        Metric.idleBytesPerConnection.id: Threshold(relative: 0.25, absolute: 64),
    ], backends: [
        // Counted io_uring waits in poll(2) (valgrind cannot run it waiting in io_uring_enter):
        // whether a wait blocks (poll and a second enter) or finds a completion ready depends on
        // how the server under valgrind races the generator, so its system calls per message
        // move by up to ~0.1 and its instructions by up to ~3.5% (debug build; release at 16
        // connections ~2%) between runs. +1 system call or +5% instructions still shows.
        "io_uring": [Metric.countedSyscallsPerMessage.id: Threshold(relative: 0, absolute: 0.25),
                     Metric.userInstructionsPerMessage.id: Threshold(relative: 0.05)],
    ])

    public func threshold(_ metric: String, backend: String) -> Threshold? {
        backends[backend]?[metric] ?? metrics[metric]
    }

    /// Reads overrides from JSON: `{"metrics": {"p99_us": {"relative": 1.5, "absolute": 300}},
    /// "backends": {"blocking": {"counted.syscalls_per_msg": {"relative": 0, "absolute": 0.1}}}}`.
    /// Metrics the file leaves out keep their defaults. A value that would disable a check
    /// (negative, or a relative threshold above 1.0 on a count) is refused.
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
        let known = Dictionary(CheckedMetric.all.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        func validate(_ name: String, _ threshold: Threshold, _ scope: String) throws {
            guard let metric = known[name] else {
                throw CheckError.unusable("the thresholds file \(path) names an unknown metric '\(name)'\(scope): use one of \(known.keys.sorted().joined(separator: ", "))")
            }
            if let problem = threshold.problem(for: metric) {
                throw CheckError.unusable("the thresholds file \(path) sets \(name)\(scope) to \(threshold.relative)/\(threshold.absolute), which would disable the check: \(problem)")
            }
        }
        for (name, threshold) in file.metrics ?? [:] {
            try validate(name, threshold, "")
            result.metrics[name] = threshold
        }
        for (backend, metrics) in file.backends ?? [:] {
            for (name, threshold) in metrics {
                try validate(name, threshold, " for \(backend)")
                result.backends[backend, default: [:]][name] = threshold
            }
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
    public enum Verdict: String, Sendable {
        case ok, regressed, improved, reference, missing
        /// A time against a baseline from another machine: shown, not judged.
        case notJudged = "not judged"
    }

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
    /// Whether timed figures are judged: only against a baseline from this machine.
    public var judgeTimes: Bool

    public init(thresholds: Thresholds = .defaults, relativeTo: String? = nil, judgeTimes: Bool = true) {
        self.thresholds = thresholds
        self.relativeTo = relativeTo
        self.judgeTimes = judgeTimes
    }

    /// A human title for a cell key (method|workload|connections|size|depth|rate).
    public static func title(of row: ResultRow) -> String {
        if row["workload"] == "idle" { return "idle, \(row["connections"] ?? "?") connections" }
        var title = "\(row["connections"] ?? "?") conns × \(row["size_bytes"] ?? "?") B"
        if row["workload"] == "rpc" { title = "rpc (work \(row["work_us"] ?? "0") µs), " + title }
        if let rate = row["rate_msgs_per_s"], !rate.isEmpty { title += ", \(rate)/s" } else { title += ", depth \(row["depth"] ?? "1")" }
        return row["method"] == MeasurementMethod.counted.rawValue ? "counted: " + title : title
    }

    /// Rows whose window can be trusted (`valid` empty in files written before it existed).
    package static func trusted(_ rows: [ResultRow]) -> [ResultRow] {
        rows.filter { ($0["valid"] ?? "").isEmpty || $0["valid"] == "yes" }
    }

    public func compare(baseline: [ResultRow], now: [ResultRow]) -> [Comparison] {
        var comparisons: [Comparison] = []
        var cellOrder: [String] = []
        let baseline = Self.trusted(baseline)
        let trustedNow = Self.trusted(now)
        for row in baseline where !cellOrder.contains(row.cellKey) { cellOrder.append(row.cellKey) }
        for cell in cellOrder {
            let baseRows = baseline.filter { $0.cellKey == cell }
            let nowRows = trustedNow.filter { $0.cellKey == cell }
            let title = Self.title(of: baseRows[0])
            let source = CheckedMetric.source(of: baseRows[0])
            var servers: [String] = []
            for row in baseRows where !servers.contains(row.serverLabel) { servers.append(row.serverLabel) }
            for server in servers {
                let b = baseRows.filter { $0.serverLabel == server }
                let n = nowRows.filter { $0.serverLabel == server }
                // Errors in a fresh run fail the check, whatever else it measured.
                let errors = now.filter { $0.cellKey == cell && $0.serverLabel == server }.compactMap { $0.int("errors") }.reduce(0, +)
                if errors > 0 {
                    comparisons.append(Comparison(cell: title, backend: server, metric: "errors", basis: "", baseline: 0, now: Double(errors),
                                                  threshold: Threshold(relative: 0, absolute: 0), verdict: .regressed))
                }
                for metric in CheckedMetric.all where metric.source == source {
                    let baseValues = b.compactMap { $0.double(metric.column) }
                    guard !baseValues.isEmpty else { continue }  // not measured for this cell or server
                    let threshold = thresholds.threshold(metric.id, backend: server)
                    var baseValue = metric.typical(baseValues)
                    var nowValue = metric.fresh(n.compactMap { $0.double(metric.column) })
                    var basis = ""
                    // In ratio form, the metric's unit per unit of ratio: the reference's value today.
                    var scale: Double? = nil
                    if metric.nature == .time && !judgeTimes {
                        comparisons.append(Comparison(cell: title, backend: server, metric: metric.id, basis: "", baseline: baseValue,
                                                      now: nowValue, threshold: threshold, verdict: nowValue == nil ? .missing : .notJudged))
                        continue
                    }
                    if let reference = relativeTo, metric.nature == .time {
                        if server == reference {
                            comparisons.append(Comparison(cell: title, backend: server, metric: metric.id, basis: "reference",
                                                          baseline: baseValue, now: nowValue, threshold: nil, verdict: nowValue == nil ? .missing : .reference))
                            continue
                        }
                        // Pair each repetition with the reference's measured beside it (same run, same
                        // repetition number), so drift between repetitions cancels out.
                        basis = "ratio to \(reference)"
                        baseValue = metric.typical(pairedRatios(b, baseRows.filter { $0.serverLabel == reference }, metric.column))
                        nowValue = metric.fresh(pairedRatios(n, nowRows.filter { $0.serverLabel == reference }, metric.column))
                        scale = Statistics.median(nowRows.filter { $0.serverLabel == reference }.compactMap { $0.double(metric.column) })
                    }
                    comparisons.append(judge(cell: title, server: server, metric: metric, basis: basis,
                                             baseline: baseValue, now: nowValue, threshold: threshold, scale: scale))
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
                       baseline: Double?, now: Double?, threshold: Threshold?, scale: Double? = nil) -> Comparison {
        guard let baseline, let now, let threshold else {
            return Comparison(cell: cell, backend: server, metric: metric.id, basis: basis, baseline: baseline, now: now,
                              threshold: threshold, verdict: .missing)
        }
        let worse = metric.worsening(baseline: baseline, now: now)
        // The absolute threshold is in the metric's unit. In ratio form it is held against the
        // change the ratio implies at the reference's value today: io_uring's context switches
        // per message doubling from 0.0012 to 0.0026 (a ratio to epoll of 0.2 → 0.43 when epoll
        // makes 0.006) is noise on a loaded machine, not a regression.
        let absoluteWorse: Double
        if basis.isEmpty {
            absoluteWorse = abs(now - baseline)
        } else if let scale {
            absoluteWorse = abs(now - baseline) * scale
        } else {
            absoluteWorse = .infinity
        }
        let verdict: Comparison.Verdict
        if worse > threshold.relative && absoluteWorse > threshold.absolute && worse > 0 {
            verdict = .regressed
        } else if -worse > threshold.relative && absoluteWorse > threshold.absolute && worse < 0 {
            verdict = .improved
        } else {
            verdict = .ok
        }
        return Comparison(cell: cell, backend: server, metric: metric.id, basis: basis, baseline: baseline, now: now,
                          threshold: threshold, verdict: verdict)
    }

}
