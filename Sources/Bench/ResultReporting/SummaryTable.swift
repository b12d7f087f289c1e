import ResultAnalysis
import Backends
import ServerKit
import Protocols
import BackendKit
import Foundation

/// Renders result rows (fresh from a run or read back from a CSV) as the table people read:
/// one block per cell, one line per backend, medians over repetitions with min–max, and each
/// backend's ratio to a reference backend.
public enum SummaryTable {
    /// Repetitions spreading more than this (max−min over median) earn a warning.
    public static let spreadWarning = 0.10

    public static func median(_ values: [Double]) -> Double? { Statistics.median(values) }

    /// Medians of one metric per backend within one cell.
    struct BackendFigures {
        let backend: String
        let rows: [ResultRow]

        func values(_ metric: Metric) -> [Double] { rows.compactMap { $0.double(metric) } }
        func median(_ metric: Metric) -> Double? { SummaryTable.median(values(metric)) }
        /// The median as the registry shows the metric, "-" when there is none.
        func shown(_ metric: Metric) -> String { median(metric).map(metric.display.format) ?? "-" }
        func spread(_ metric: Metric) -> Double? {
            let v = values(metric)
            guard v.count > 1, let m = SummaryTable.median(v), m > 0 else { return nil }
            return (v.max()! - v.min()!) / m
        }
        var bottleneck: String {
            let verdicts = rows.compactMap { $0["bottleneck"] }.filter { !$0.isEmpty }
            let counts = Dictionary(grouping: verdicts, by: { $0 }).mapValues(\.count)
            return counts.max { $0.value < $1.value }?.key ?? "-"
        }
    }

    /// Any run's table: the notification workloads' rows go to ``NotificationTable``.
    /// - Parameters:
    ///   - markdown: Markdown tables (for a README or a CI job summary) instead of aligned text.
    ///   - verbose: list every spread warning instead of one summary line.
    public static func render(_ rows: [ResultRow], reference: String = "epoll", markdown: Bool = false, verbose: Bool = false) -> String {
        if let first = rows.first, NotificationWorkload.isNotification(first) { return NotificationTable.render(rows, markdown: markdown) }
        func table(_ lines: [[String]]) -> String { markdown ? markdownTable(lines) : align(lines) }
        var out = ""
        var warnings: [String] = []
        let untrusted = rows.filter { !($0["valid"] ?? "").isEmpty && $0["valid"] != "yes" }
        let trusted = RegressionCheck.trusted(rows)
        let echo = trusted.filter { $0["workload"] != "idle" }
        var cellOrder: [String] = []
        var cells: [String: [ResultRow]] = [:]
        for row in echo {
            if cells[row.cellKey] == nil { cellOrder.append(row.cellKey) }
            cells[row.cellKey, default: []].append(row)
        }
        // The headers are the registry's labels (`Metric.display`).
        let timedShown: [Metric] = [.latencyP50, .latencyP99, .latencyP999]
        let header = ["backend", Metric.messagesPerSecond.display.label, "[95% CI]", "×\(reference) [95% CI]", Metric.megabytesPerSecond.display.label]
            + timedShown.map(\.display.label)
            + [Metric.serverCPUPerMessage.display.label, "[95% CI]", "×\(reference) [95% CI]", Metric.syscallsPerMessage.display.label,
               Metric.contextSwitchesPerMessage.display.label, Metric.generatorCPUPerMessage.display.label, "errors", "bottleneck"]
        let countedHeader = ["backend", Metric.userInstructionsPerMessage.display.label, "[95% CI]", "×\(reference)",
                             Metric.allocationsPerMessage.display.label, Metric.countedSyscallsPerMessage.display.label, "messages", "errors"]
        for key in cellOrder {
            let cellRows = cells[key]!
            let first = cellRows[0]
            let counted = first["method"] == MeasurementMethod.counted.rawValue
            var title = (counted ? "counted (callgrind): " : "") + "\(first["connections"] ?? "?") connections × \(first["size_bytes"] ?? "?") B, "
            if let rate = first["rate_msgs_per_s"], !rate.isEmpty {
                title += "open loop \(rate) msgs/s"
            } else {
                title += "depth \(first["depth"] ?? "1")"
            }
            let repetitions = Set(cellRows.compactMap { $0["repetition"] }).count
            title += repetitions > 1 ? " (median of \(repetitions))" : ""
            out += markdown ? "\n**\(title)**\n\n" : "\n" + title + "\n"
            var backends: [String] = []
            for row in cellRows where !backends.contains(row.serverLabel) { backends.append(row.serverLabel) }
            let figures = backends.map { b in BackendFigures(backend: b, rows: cellRows.filter { $0.serverLabel == b }) }
            let ref = figures.first { $0.backend == reference } ?? figures.first { $0.rows.first?["backend"] == reference }
            /// Per-repetition ratios to the reference (each repetition measures every server back to
            /// back, so pairing cancels the machine's drift between repetitions): their geometric
            /// mean with a 95% t-interval. With fewer than two pairs, the ratio of the medians.
            func pairedRatios(_ f: BackendFigures, _ column: Metric) -> [Double] {
                guard let ref else { return [] }
                var base: [String: Double] = [:]
                for row in ref.rows { if let rep = row["repetition"], let v = row.double(column), v > 0 { base[rep] = v } }
                return f.rows.compactMap { row -> Double? in
                    guard let rep = row["repetition"], let v = row.double(column), let b = base[rep] else { return nil }
                    return v / b
                }
            }
            func relative(_ f: BackendFigures, _ column: Metric) -> String {
                guard let ref else { return "-" }
                if f.backend == ref.backend { return "1" }
                let ratios = pairedRatios(f, column)
                if ratios.count >= 2, let estimate = Statistics.ratioInterval(ratios) { return estimate.formatted(2) }
                return ratio(f.median(column), ref.median(column))
            }
            func interval(_ f: BackendFigures, _ column: Metric, _ format: (Double) -> String) -> String {
                guard let e = Statistics.medianInterval(f.values(column)), e.count > 1 else { return "" }
                let label = e.confidence >= 0.949 ? "" : " \(Int((e.confidence * 100).rounded(.down)))%"
                return "[\(format(e.low)), \(format(e.high))]\(label)"
            }
            var lines: [[String]] = [counted ? countedHeader : header]
            for f in figures {
                let name = Backends.named(f.backend)?.isReferencePeer == true ? f.backend + " (peer)" : f.backend
                let errors = "\(Int(f.values(.errors).reduce(0, +)))"
                if counted {
                    lines.append([
                        name,
                        f.shown(.userInstructionsPerMessage),
                        interval(f, .userInstructionsPerMessage, Metric.userInstructionsPerMessage.display.format),
                        ratio(f.median(.userInstructionsPerMessage), ref?.median(.userInstructionsPerMessage)),
                        f.shown(.allocationsPerMessage),
                        f.shown(.countedSyscallsPerMessage),
                        SummaryTable.median(f.rows.compactMap { $0.double("messages") }).map { fixed($0, 0) } ?? "-",
                        errors,
                    ])
                    continue
                }
                lines.append([
                    name,
                    f.median(.messagesPerSecond).map(formatCount) ?? "-",
                    interval(f, .messagesPerSecond, formatCount),
                    relative(f, .messagesPerSecond),
                    f.shown(.megabytesPerSecond),
                ] + timedShown.map(f.shown) + [
                    f.shown(.serverCPUPerMessage),
                    interval(f, .serverCPUPerMessage, Metric.serverCPUPerMessage.display.format),
                    relative(f, .serverCPUPerMessage),
                    f.shown(.syscallsPerMessage),
                    f.shown(.contextSwitchesPerMessage),
                    f.shown(.generatorCPUPerMessage),
                    errors,
                    f.bottleneck,
                ])
                for column in [Metric.messagesPerSecond, .serverCPUPerMessage] {
                    if let spread = f.spread(column), spread > spreadWarning {
                        warnings.append("\(title.components(separatedBy: " (").first!), \(f.backend): \(column) spread \(Int(spread * 100))% across repetitions")
                    }
                }
            }
            out += table(lines)
            // The answer in words: each server's CPU per message against the reference's.
            if !counted, let ref {
                var verdicts: [String] = []
                for f in figures where f.backend != ref.backend {
                    let ratios = pairedRatios(f, .serverCPUPerMessage)
                    guard ratios.count >= 2, let e = Statistics.ratioInterval(ratios) else { continue }
                    verdicts.append(Self.verdict(f.backend, against: ref.backend, e, repetitions: ratios.count))
                }
                if !verdicts.isEmpty { out += (markdown ? "\n" : "") + verdicts.map { (markdown ? "- " : "  ") + $0 }.joined(separator: "\n") + "\n" }
            }
        }
        if cellOrder.contains(where: { cells[$0]?.first?["method"] != MeasurementMethod.counted.rawValue }) {
            out += "\nMedians with a distribution-free 95% interval from order statistics (with fewer than 6 repetitions no such interval exists: min–max, its real coverage shown, 75% for 3). ×\(reference): the geometric mean of per-repetition ratios to \(reference) (every repetition measures each server back to back) with a 95% t-interval.\n"
        }
        let idle = trusted.filter { $0["workload"] == "idle" }
        if !idle.isEmpty {
            out += markdown ? "\n**idle connections**\n\n" : "\nidle connections\n"
            var lines = [["backend", "connections", "RSS/conn", "accept all (s)", "not accepted"]]
            for row in idle {
                lines.append([row["backend"] ?? "", row["connections"] ?? "",
                              row.double(.idleBytesPerConnection).map { formatBytes($0) } ?? "-",
                              row[.idleAcceptSeconds] ?? "-", row[.errors] ?? "-"])
            }
            out += table(lines)
        }
        if !untrusted.isEmpty {
            out += "\n\(untrusted.count) row(s) left out: their window could not be trusted after retries (\(untrusted[0]["valid"] ?? "")\(untrusted.count > 1 ? "; see the valid column" : "")).\n"
        }
        if !warnings.isEmpty && verbose {
            out += "\nspread warnings (the machine was noisy; compare with care):\n" + warnings.map { "  - " + $0 }.joined(separator: "\n") + "\n"
        } else if !warnings.isEmpty {
            out += "\n\(warnings.count) figures (messages/s or server CPU per message of one server in one cell) spread more than \(Int(spreadWarning * 100))% across repetitions: the machine was noisy; the intervals show how much. \(markdown ? "`iobench report --verbose`" : "--verbose") lists them.\n"
        }
        return out
    }

    /// One server's server CPU per message against the reference's, in words: a difference
    /// only when the whole 95% interval of the paired ratio lies on one side of 1.
    static func verdict(_ backend: String, against reference: String, _ e: Estimate, repetitions: Int) -> String {
        let shown = e.formatted(2)
        if e.low <= 1 && e.high >= 1 {
            return "\(backend) against \(reference): ×\(shown) server CPU per message: cannot tell with \(repetitions) repetitions\(repetitions < 10 ? " (try --repeat 10)" : "")"
        }
        let percent = { (x: Double) in "\(Int((abs(1 - x) * 100).rounded()))%" }
        if e.high < 1 {
            return "\(backend) uses \(percent(e.value)) less server CPU per message than \(reference) [\(percent(e.high)), \(percent(e.low))]"
        }
        return "\(backend) uses \(percent(e.value)) more server CPU per message than \(reference) [\(percent(e.low)), \(percent(e.high))]"
    }

    static func ratio(_ value: Double?, _ reference: Double?) -> String {
        guard let value, let reference, reference > 0 else { return "-" }
        return String(format: "%.2f", value / reference)
    }

    static func formatBytes(_ bytes: Double) -> String {
        bytes >= 1024 ? String(format: "%.1f KiB", bytes / 1024) : String(format: "%.0f B", bytes)
    }

    package static func markdownTable(_ table: [[String]]) -> String {
        guard let header = table.first else { return "" }
        var lines = ["| " + header.joined(separator: " | ") + " |",
                     "| --- |" + String(repeating: " ---: |", count: header.count - 1)]
        lines += table.dropFirst().map { "| " + $0.joined(separator: " | ") + " |" }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Left-aligns the first column, right-aligns the rest.
    package static func align(_ table: [[String]]) -> String {
        guard let width = table.first?.count else { return "" }
        let widths = (0..<width).map { c in table.map { $0[c].count }.max() ?? 0 }
        return table.map { row in
            row.enumerated().map { c, cell in
                let pad = String(repeating: " ", count: widths[c] - cell.count)
                return c == 0 ? cell + pad : pad + cell
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }
}
