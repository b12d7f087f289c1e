import ArgumentParser
import BenchRunner
import LoadGeneration
import ResultAnalysis
import ResultReporting
import ServerKit
import Protocols
import BackendKit
import Foundation

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Print the results of CSVs written by 'iobench run' (and .hgrm spectra); draw them as SVG charts and one HTML page.",
        discussion: """
        Each CSV is reported as its own run: echo and rpc runs (iobench run), the notification \
        comparison (iobench run --pattern). A .hgrm file (iobench load --histogram) adds a latency \
        spectrum; several are drawn in one chart. --html writes one self-contained page (inline \
        SVG, no script, nothing fetched); --svg writes each chart as a file, and --markdown then \
        links them. Exit codes: 0 success, 1 a file cannot be read or written, 64 bad usage.
        """
    )

    @Argument(help: "CSVs written by 'iobench run' (each reported as its own run), and .hgrm files from 'iobench load --histogram'.")
    var inputs: [String] = []

    @Option(help: "The server the others are compared with: a backend, variant or external name. Charts draw it dashed. (default: the run's own --reference, else epoll, else its first server)")
    var reference: String?

    /// The server a run's ratios are to: the one asked for, else the run's own `--reference`
    /// (from its command), else epoll, else the first server measured.
    static func reference(_ asked: String?, for rows: [ResultRow]) -> String {
        if let asked { return asked }
        let servers = ReportCharts.servers(rows)
        if let words = rows.first?["command"]?.split(separator: " ").map(String.init),
           let at = words.firstIndex(of: "--reference"), at + 1 < words.count, servers.contains(words[at + 1]) {
            return words[at + 1]
        }
        return servers.contains("epoll") ? "epoll" : servers.first ?? "epoll"
    }

    /// The columns every results CSV of iobench has, whatever its workload.
    static let requiredColumns = ["workload", "backend", "connections"]

    @Flag(help: "Print the CSV columns and their meaning as a Markdown table instead.")
    var schema = false

    @Flag(help: "Rewrite each CSV in place under today's column names (files of older versions: the notification comparison's cell, clients, pattern, run_command), then stop.")
    var upgrade = false

    @Flag(help: "Print the results as Markdown (docs/RESULTS.md comes from this).")
    var markdown = false

    @Flag(help: "List every spread warning instead of one summary line.")
    var verbose = false

    @Option(help: "Write one self-contained HTML page (charts, tables, machine, commit, commands) to this file.")
    var html: String?

    @Option(help: "Write every chart as an SVG file into this directory (created if missing).")
    var svg: String?

    func validate() throws {
        if !schema && inputs.isEmpty { throw ValidationError("give a CSV or .hgrm file to report on, or --schema") }
        if let html, !html.hasSuffix(".html") && !html.hasSuffix(".htm") {
            throw ValidationError("--html \(html) does not end in .html: name the page it writes")
        }
    }

    func run() throws {
        if upgrade {
            for input in inputs where !input.hasSuffix(".hgrm") {
                do {
                    let text = try String(contentsOfFile: input, encoding: .utf8)
                    guard let upgraded = try ResultUpgrade.upgrade(csv: text) else { print("\(input): current"); continue }
                    try upgraded.write(toFile: input, atomically: true, encoding: .utf8)
                    print("\(input): upgraded")
                } catch {
                    printError("iobench: cannot upgrade \(input): \(error)")
                    throw ExitCode.failure
                }
            }
            return
        }
        if schema {
            // Generated from the registry: a metric's unit and which way is better come from `Metric`.
            print("| column | unit | better | meaning |\n| --- | --- | --- | --- |")
            for column in ResultRow.schema {
                print("| `\(column.name)` | \(column.metric?.unit ?? "") | \(column.metric?.polarity.rawValue ?? "") | \(column.meaning) |")
            }
            return
        }
        // Read everything first: a bad file fails before anything is written.
        var runs: [(path: String, rows: [ResultRow])] = []
        var spectra: [ReportCharts.Spectrum] = []
        for input in inputs {
            if input.hasSuffix(".hgrm") {
                do {
                    let text = try String(contentsOfFile: input, encoding: .utf8)
                    let name = URL(fileURLWithPath: input).deletingPathExtension().lastPathComponent
                    spectra.append(try ReportCharts.parseHgrm(text, name: name))
                } catch {
                    printError("iobench: cannot read \(input): \(error)")
                    throw ExitCode.failure
                }
            } else {
                let rows = try readResults(input)
                guard !rows.isEmpty else {
                    printError("iobench: \(input) holds no result rows")
                    throw ExitCode.failure
                }
                let missing = Self.requiredColumns.filter { column in rows.allSatisfy { $0[column] == nil } }
                guard missing.isEmpty else {
                    let has = rows[0].values.keys.sorted().prefix(8).joined(separator: ", ")
                    printError("iobench: \(input) is not a results file of iobench run: it has no \(missing.joined(separator: ", ")) column (it has \(has))")
                    throw ExitCode.failure
                }
                if let reference, !NotificationWorkload.isNotification(rows[0]), !rows.contains(where: { $0.serverLabel == reference }) {
                    let servers = ReportCharts.servers(rows)
                    throw UsageError("--reference \(reference) is not measured in \(input): use one of \(servers.joined(separator: ", "))")
                }
                runs.append((input, rows))
            }
        }
        var palette = Palette()
        for run in runs { for name in ReportCharts.servers(run.rows) { palette.register(name) } }
        for spectrum in spectra { palette.register(spectrum.name) }

        var sections: [HTMLReport.Section] = []
        var usedIDs: Set<String> = []
        for (index, run) in runs.enumerated() {
            let rows = run.rows
            let notification = rows.first.map(NotificationWorkload.isNotification) ?? false
            // Two runs in one report keep their charts apart.
            let prefix = runs.count > 1 ? "run\(index + 1)-" : ""
            var charts = notification
                ? ReportCharts.notificationCharts(rows, palette: palette, prefix: prefix)
                : ReportCharts.echoCharts(rows, reference: Self.reference(reference, for: rows), palette: palette, prefix: prefix)
            for i in charts.indices {
                while usedIDs.contains(charts[i].id) { charts[i].id += "-2" }
                usedIDs.insert(charts[i].id)
            }
            let table = render(rows, markdown: true).table
            let runID = rows.first?["run_id"] ?? URL(fileURLWithPath: run.path).lastPathComponent
            sections.append(HTMLReport.Section(heading: (notification ? "Notification comparison " : "Run ") + runID,
                                               facts: [("file", run.path)] + HTMLReport.facts(rows), charts: charts, markdown: table))
        }
        if let chart = ReportCharts.spectrumChart(spectra, palette: palette) {
            sections.append(HTMLReport.Section(heading: "Latency spectra", facts: spectra.map { ("file", $0.name + ".hgrm") }, charts: [chart], markdown: ""))
        }

        var written: [String: String] = [:]  // chart id → SVG path
        if let svg {
            do {
                try FileManager.default.createDirectory(atPath: svg, withIntermediateDirectories: true)
                for chart in sections.flatMap(\.charts) {
                    let path = (svg as NSString).appendingPathComponent(chart.id + ".svg")
                    try (#"<?xml version="1.0" encoding="UTF-8"?>"# + "\n" + chart.svg()).write(toFile: path, atomically: true, encoding: .utf8)
                    written[chart.id] = path
                }
            } catch {
                printError("iobench: cannot write the charts into \(svg): \(error.localizedDescription)")
                throw ExitCode.failure
            }
        }
        if let html {
            let command = (["iobench"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
            let page = HTMLReport(generatedBy: command, sections: sections).html()
            do {
                let directory = URL(fileURLWithPath: html).deletingLastPathComponent()
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                try page.write(toFile: html, atomically: true, encoding: .utf8)
            } catch {
                printError("iobench: cannot write \(html): \(error.localizedDescription)")
                throw ExitCode.failure
            }
        }

        for (i, run) in runs.enumerated() {
            if i > 0 { print("") }
            let (heading, table) = markdown ? (render(run.rows, markdown: true).heading, sections[i].markdown) : render(run.rows, markdown: false)
            if let heading { print(heading) }
            print(table, terminator: "")
            printChartLinks(sections[i].charts, written)
        }
        if !spectra.isEmpty {
            if !runs.isEmpty { print("") }
            print(markdown ? "**latency spectra** (µs)\n" : "latency spectra (µs)")
            for s in spectra {
                let at = { (p: Double) in s.lines.first { $0.percentile >= p }.map { String(format: "%.1f", $0.value) } ?? "-" }
                print("\(markdown ? "- " : "  ")\(s.name): p50 \(at(0.5)), p99 \(at(0.99)), p99.9 \(at(0.999)), max \(s.lines.last.map { String(format: "%.1f", $0.value) } ?? "-") over \(Int(s.lines.last?.count ?? 0)) samples")
            }
            if let section = sections.last, section.heading == "Latency spectra" { printChartLinks(section.charts, written) }
        }
        if let html { printError("iobench: wrote \(html)") }
    }

    /// A run's heading line (its id, machine and command) and its table: the notification
    /// comparison (iobench run --pattern) has its own.
    private func render(_ rows: [ResultRow], markdown: Bool) -> (heading: String?, table: String) {
        let first = rows.first
        let heading = first?["run_id"].map { id in
            let how = first?["command"].map { ": `\($0)`" } ?? ""
            return markdown ? "Run `\(id)` on \(first?["cpu_model"] ?? "?"), \(first?["cores"] ?? "?") cores, kernel \(first?["kernel"] ?? "?")\(how)"
                            : "run \(id)\(how.replacingOccurrences(of: "`", with: ""))"
        }
        let table = SummaryTable.render(rows, reference: Self.reference(reference, for: rows), markdown: markdown, verbose: verbose)
        return (heading, table)
    }

    /// With --svg, where each chart went (as Markdown images with --markdown).
    private func printChartLinks(_ charts: [Chart], _ written: [String: String]) {
        let paths = charts.compactMap { chart in written[chart.id].map { (chart.title, $0) } }
        guard !paths.isEmpty else { return }
        print("")
        for (title, path) in paths {
            print(markdown ? "![\(title)](\(path))" : "chart: \(path)  (\(title))")
        }
    }
}
