import ResultAnalysis
import Foundation

extension RegressionCheck {
    /// The report: every cell and metric with baseline, now, change, threshold and verdict.
    public static func render(_ comparisons: [Comparison], markdown: Bool, names: (baseline: String, now: String) = ("baseline", "now")) -> String {
        var table = [["cell", "backend", "metric", names.baseline, names.now, "change", "threshold", "verdict"]]
        for c in comparisons {
            let metric = c.basis.isEmpty || c.basis == "reference" ? c.metric : "\(c.metric) (\(c.basis))"
            table.append([
                c.cell, c.backend, metric,
                c.baseline.map(format) ?? "-", c.now.map(format) ?? "-",
                c.change.map { String(format: "%+.1f%%", $0 * 100) } ?? "-",
                c.threshold?.description ?? "-",
                c.verdict == .regressed ? "REGRESSED" : c.verdict == .missing ? "MISSING" : c.verdict.rawValue,
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

    package static func format(_ value: Double) -> String {
        switch abs(value) {
        case 1000...: String(format: "%.0f", value)
        case 10...: String(format: "%.1f", value)
        default: String(format: "%.3f", value)
        }
    }
}
