import EchoCore
import Foundation

/// Renders result rows (fresh from a run or read back from a CSV) as the table people read:
/// one block per cell, one line per backend, medians over repetitions with min–max, and each
/// backend's ratio to a reference backend.
public enum SummaryTable {
    /// Repetitions spreading more than this (max−min over median) earn a warning.
    public static let spreadWarning = 0.10

    public static func median(_ values: [Double]) -> Double? {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return nil }
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }

    /// Medians of one metric per backend within one cell.
    struct BackendFigures {
        let backend: String
        let rows: [ResultRow]

        func values(_ column: String) -> [Double] { rows.compactMap { $0.double(column) } }
        func median(_ column: String) -> Double? { SummaryTable.median(values(column)) }
        func spread(_ column: String) -> Double? {
            let v = values(column)
            guard v.count > 1, let m = SummaryTable.median(v), m > 0 else { return nil }
            return (v.max()! - v.min()!) / m
        }
        var bottleneck: String {
            let verdicts = rows.compactMap { $0["bottleneck"] }.filter { !$0.isEmpty }
            let counts = Dictionary(grouping: verdicts, by: { $0 }).mapValues(\.count)
            return counts.max { $0.value < $1.value }?.key ?? "-"
        }
    }

    /// - Parameter markdown: Markdown tables (for a README or a CI job summary) instead of aligned text.
    public static func render(_ rows: [ResultRow], reference: String = "epoll", markdown: Bool = false) -> String {
        func table(_ lines: [[String]]) -> String { markdown ? markdownTable(lines) : align(lines) }
        var out = ""
        var warnings: [String] = []
        let echo = rows.filter { $0["workload"] == "echo" }
        var cellOrder: [String] = []
        var cells: [String: [ResultRow]] = [:]
        for row in echo {
            if cells[row.cellKey] == nil { cellOrder.append(row.cellKey) }
            cells[row.cellKey, default: []].append(row)
        }
        let header = ["backend", "msgs/s", "(min–max)", "×\(reference)", "MB/s", "p50 µs", "p99 µs", "p99.9 µs",
                      "srv µs/msg", "×\(reference)", "sys/msg", "ctxsw/msg", "gen µs/msg", "errors", "bottleneck"]
        for key in cellOrder {
            let cellRows = cells[key]!
            let first = cellRows[0]
            var title = "\(first["connections"] ?? "?") connections × \(first["size_bytes"] ?? "?") B, "
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
            var lines: [[String]] = [header]
            /// The median of per-repetition ratios: each repetition measures every server back to
            /// back, so pairing them cancels the machine's drift between repetitions. With fewer
            /// than two pairs, the ratio of the medians.
            func relative(_ f: BackendFigures, _ column: String) -> String {
                guard let ref else { return "-" }
                var base: [String: Double] = [:]
                for row in ref.rows { if let rep = row["repetition"], let v = row.double(column), v > 0 { base[rep] = v } }
                let ratios = f.rows.compactMap { row -> Double? in
                    guard let rep = row["repetition"], let v = row.double(column), let b = base[rep] else { return nil }
                    return v / b
                }
                if ratios.count >= 2, let m = median(ratios) { return String(format: "%.2f", m) }
                return ratio(f.median(column), ref.median(column))
            }
            for f in figures {
                let name = BackendKind(rawValue: f.backend)?.isReferencePeer == true ? f.backend + " (peer)" : f.backend
                let rate = f.median("msgs_per_s")
                let values = f.values("msgs_per_s")
                let cpu = f.median("server_cpu_us_per_msg")
                lines.append([
                    name,
                    rate.map(formatCount) ?? "-",
                    values.count > 1 ? "(\(formatCount(values.min()!))–\(formatCount(values.max()!)))" : "",
                    relative(f, "msgs_per_s"),
                    f.median("mb_per_s").map { fixed($0, 1) } ?? "-",
                    f.median("p50_us").map { fixed($0, 1) } ?? "-",
                    f.median("p99_us").map { fixed($0, 1) } ?? "-",
                    f.median("p999_us").map { fixed($0, 1) } ?? "-",
                    cpu.map { fixed($0, 2) } ?? "-",
                    relative(f, "server_cpu_us_per_msg"),
                    f.median("syscalls_per_msg").map { fixed($0, 2) } ?? "-",
                    f.median("ctx_switches_per_msg").map { fixed($0, 3) } ?? "-",
                    f.median("generator_cpu_us_per_msg").map { fixed($0, 2) } ?? "-",
                    "\(Int(f.values("errors").reduce(0, +)))",
                    f.bottleneck,
                ])
                for column in ["msgs_per_s", "server_cpu_us_per_msg"] {
                    if let spread = f.spread(column), spread > spreadWarning {
                        warnings.append("\(title.components(separatedBy: " (").first!), \(f.backend): \(column) spread \(Int(spread * 100))% across repetitions; the machine was noisy, compare with care")
                    }
                }
            }
            out += table(lines)
        }
        if !cellOrder.isEmpty {
            out += "\n×\(reference): the median of per-repetition ratios to \(reference) (every repetition measures each server back to back).\n"
        }
        let idle = rows.filter { $0["workload"] == "idle" }
        if !idle.isEmpty {
            out += markdown ? "\n**idle connections**\n\n" : "\nidle connections\n"
            var lines = [["backend", "connections", "RSS/conn", "accept all (s)", "not accepted"]]
            for row in idle {
                lines.append([row["backend"] ?? "", row["connections"] ?? "",
                              row.double("idle_rss_bytes_per_conn").map { formatBytes($0) } ?? "-",
                              row["idle_accept_s"] ?? "-", row["errors"] ?? "-"])
            }
            out += table(lines)
        }
        if !warnings.isEmpty && markdown {
            // A README wants the gist; the text table lists every one.
            out += "\n\(warnings.count) figures (messages/s or server CPU per message of one server in one cell) spread more than \(Int(spreadWarning * 100))% across repetitions: the machine was noisy; `iobench report` without `--markdown` lists them.\n"
        } else if !warnings.isEmpty {
            out += "\nwarnings:\n" + warnings.map { "  - " + $0 }.joined(separator: "\n") + "\n"
        }
        return out
    }

    static func ratio(_ value: Double?, _ reference: Double?) -> String {
        guard let value, let reference, reference > 0 else { return "-" }
        return String(format: "%.2f", value / reference)
    }

    static func formatBytes(_ bytes: Double) -> String {
        bytes >= 1024 ? String(format: "%.1f KiB", bytes / 1024) : String(format: "%.0f B", bytes)
    }

    static func markdownTable(_ table: [[String]]) -> String {
        guard let header = table.first else { return "" }
        var lines = ["| " + header.joined(separator: " | ") + " |",
                     "| --- |" + String(repeating: " ---: |", count: header.count - 1)]
        lines += table.dropFirst().map { "| " + $0.joined(separator: " | ") + " |" }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Left-aligns the first column, right-aligns the rest.
    static func align(_ table: [[String]]) -> String {
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
