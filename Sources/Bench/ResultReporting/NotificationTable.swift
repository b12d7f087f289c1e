import ResultAnalysis
import Foundation

/// The notification workloads' table (`SummaryTable.render` hands their rows here).
public enum NotificationTable {
    /// The comparison: per client count, one row per backend and a column per cell, each
    /// figure a median with its interval over the repetitions; per backend the cell with the
    /// least server CPU per delivered event is starred.
    public static func render(_ rows: [ResultRow], markdown: Bool) -> String {
        var out = ""
        var clientCounts: [String] = []
        for row in rows where !clientCounts.contains(row["connections"] ?? "") { clientCounts.append(row["connections"] ?? "") }
        for clients in clientCounts {
            let these = rows.filter { $0["connections"] == clients }
            var cells: [String] = []
            var backends: [String] = []
            for row in these {
                if !cells.contains(NotificationWorkload.label(row)) { cells.append(NotificationWorkload.label(row)) }
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
                    let values = these.filter { $0["backend"] == backend && NotificationWorkload.label($0) == cell && ($0.int("errors") ?? 0) == 0 }.compactMap { $0.double(.serverCPUPerEvent) }
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
                        let runs = these.filter { $0["backend"] == backend && NotificationWorkload.label($0) == cell }
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
            out += markdown ? SummaryTable.markdownTable(table) : SummaryTable.align(table)
        }
        return out
    }
}
