import ArgumentParser
import Bench
import EchoCore
import Foundation

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Re-measure a baseline's cells and fail when a backend got slower.",
        discussion: """
        Every metric is compared with a direction (higher is better for msgs/s; lower for latency, \
        CPU, syscalls and context switches per message, and RSS per idle connection): the baseline's \
        median against the best of the fresh repetitions, since interference only ever makes a run \
        slower. A regression is \
        a change worse than both the relative and the absolute threshold of its metric; a cell that \
        looks regressed is measured again (--retries) before it counts. With --relative-to, time-based \
        metrics are compared as ratios to that backend measured in the same run, which a busy or \
        different machine disturbs far less. A machine different from the baseline's is a warning.

        Thresholds (defaults): msgs_per_s 40%; p50_us 50% and 50 µs; p99_us 100% and 200 µs; \
        server_cpu_us_per_msg 40% and 1.5 µs; syscalls_per_msg 25% and 0.4; ctx_switches_per_msg 50% \
        and 0.2; idle_rss_bytes_per_conn 25% and 64 B. Override them per metric and per backend with \
        a JSON file (--thresholds).

        Exit codes: 0 no regression; 2 a regression (the report names the cell and metric); \
        1 the check could not run (no baseline, a server failed, a bad thresholds file); 64 bad usage.
        """
    )

    @Option(help: "The baseline CSV (written by 'iobench baseline update').")
    var baseline: String = "results/baseline.csv"

    @Option(help: "A JSON file of thresholds per metric and per backend (default: results/thresholds.json when it exists).")
    var thresholds: String?

    @Option(help: "Compare time-based metrics as ratios to this backend measured in the same run.")
    var relativeTo: BackendKind?

    @Option(help: "Times a cell that looks regressed is measured again before it counts.")
    var retries: Int = 2

    @Option(help: "Report format: table or markdown (for CI job summaries).")
    var format: ReportFormat = .table

    @Flag(help: "No progress line.")
    var quiet = false

    @Option(name: .customLong("server-arg"), help: .hidden)
    var serverArguments: [String] = []

    enum ReportFormat: String, ExpressibleByArgument { case table, markdown }

    func run() throws {
        do {
            try check()
        } catch let error as CheckError {
            printError("iobench check: \(error)")
            throw ExitCode.failure
        }
    }

    private func check() throws {
        let text: String
        do { text = try String(contentsOfFile: baseline, encoding: .utf8) } catch {
            throw CheckError.unusable("no baseline at \(baseline): make one with 'iobench baseline update --out \(baseline)'")
        }
        let baseRows: [ResultRow]
        do { baseRows = try CSV.read(text) } catch { throw CheckError.unusable("the baseline \(baseline) is not a results CSV: \(error)") }
        guard let first = baseRows.first else { throw CheckError.unusable("the baseline \(baseline) has no rows") }

        var limits = Thresholds.defaults
        let thresholdsPath = thresholds ?? (FileManager.default.fileExists(atPath: "results/thresholds.json") ? "results/thresholds.json" : nil)
        if let thresholdsPath { limits = try Thresholds.load(thresholdsPath) }
        let checker = RegressionCheck(thresholds: limits, relativeTo: relativeTo?.rawValue)

        let machine = MachineInfo.current()
        for difference in RegressionCheck.machineDifferences(baseline: first, now: machine) {
            printError("iobench check: warning: this machine differs from the baseline's: \(difference)")
        }
        let commandLine = reproducibleCommandLine()
        let (cells, skipped) = try BaselinePlans.plans(from: baseRows, executable: selfExecutable(), commandLine: commandLine)
        if !skipped.isEmpty {
            printError("iobench check: note: external servers are not re-measured: \(skipped.joined(separator: ", "))")
        }
        let measuredRows = baseRows.filter { BackendKind(rawValue: $0["backend"] ?? "") != nil }

        var nowRows: [ResultRow] = []
        var measured: [String: [ResultRow]] = [:]
        for cell in cells {
            let rows = try measure(cell)
            measured[cell.title, default: []] += rows
            nowRows += rows
        }
        var comparisons = checker.compare(baseline: measuredRows, now: nowRows)
        var attempts = 0
        while attempts < retries {
            let suspect = Set(comparisons.filter { $0.verdict == .regressed }.map(\.cell))
            if suspect.isEmpty { break }
            attempts += 1
            for cell in cells where suspect.contains(cell.title) {
                printError("iobench check: \(cell.title) looks regressed; measuring it again (\(attempts)/\(retries))")
                nowRows += try measure(cell)
            }
            comparisons = checker.compare(baseline: measuredRows, now: nowRows)
        }

        let regressions = comparisons.filter { $0.verdict == .regressed }
        let markdown = format == .markdown
        if markdown { print("### iobench check against `\(baseline)`\n") }
        print(RegressionCheck.render(comparisons, markdown: markdown))
        if regressions.isEmpty {
            print("no regression: \(comparisons.filter { $0.verdict == .ok || $0.verdict == .improved }.count) comparisons within their thresholds")
        } else {
            print("\(regressions.count) regression(s):")
            for r in regressions {
                let change = r.change.map { String(format: "%+.1f%%", $0 * 100) } ?? "?"
                print("  - \(r.cell), \(r.backend): \(r.metric)\(r.basis.isEmpty ? "" : " (\(r.basis))") \(change) (threshold \(r.threshold?.description ?? "-"))")
            }
            throw ExitCode(2)
        }
    }

    private func measure(_ cell: BaselinePlans.CellPlan) throws -> [ResultRow] {
        var plan = cell.plan
        plan.extraServerArguments = serverArguments
        let runner = BenchmarkRunner(plan: plan)
        let progress = ProgressLine(quiet: quiet)
        runner.status = { progress.show("check: \($0)") }
        defer { progress.clear() }
        do {
            return try runner.run()
        } catch {
            throw CheckError.unusable("measuring \(cell.title) failed: \(error)")
        }
    }
}

struct BaselineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baseline",
        abstract: "Record or show the baseline that 'iobench check' compares with.",
        subcommands: [Update.self, Show.self]
    )

    struct Update: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a matrix (default: the --quick one) and store it, with the machine, as the baseline.",
            discussion: "Exit codes: 0 stored; 1 the run failed; 64 bad usage."
        )

        @OptionGroup var matrix: MatrixOptions

        @Flag(help: "Use the full default matrix instead of the quick one.")
        var full = false

        @Option(help: "Where to store the baseline.")
        var out: String = "results/baseline.csv"

        @Flag(help: "No progress line.")
        var quiet = false

        func run() throws {
            let plan: RunPlan
            do { plan = try matrix.makePlan(quick: !full) } catch let error as UsageError { exitForUsage(error) }
            warnIfShared(plan)
            let rows = try execute(plan, quiet: quiet)
            if rows.contains(where: { ($0.int("errors") ?? 0) > 0 }) {
                printError("iobench baseline: the run had errors; the baseline was not stored")
                throw ExitCode.failure
            }
            let path = try writeCSV(rows, to: out, runID: rows.first?["run_id"] ?? "baseline")
            print(SummaryTable.render(rows))
            print("baseline stored in \(path) (\(rows.count) rows)")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a baseline: its machine and its table.")

        @Option(help: "The baseline CSV.")
        var baseline: String = "results/baseline.csv"

        func run() throws {
            let rows = try readResults(baseline, command: "iobench baseline")
            guard let first = rows.first else {
                printError("iobench baseline: \(baseline) has no rows")
                throw ExitCode.failure
            }
            print("baseline \(baseline): run \(first["run_id"] ?? "?") at \(first["timestamp"] ?? "?")")
            print("machine: \(first["host"] ?? "?"), \(first["cpu_model"] ?? "?"), \(first["cores"] ?? "?") cores, kernel \(first["kernel"] ?? "?"), Swift \(first["swift_version"] ?? "?"), liburing \(first["liburing_version"] ?? "?"), commit \(first["git_commit"] ?? "?")")
            print("command: \(first["command"] ?? "?")")
            print(SummaryTable.render(rows), terminator: "")
        }
    }
}
