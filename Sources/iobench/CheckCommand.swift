import Backends
import ArgumentParser
import BenchRunner
import LoadGeneration
import ResultAnalysis
import ResultReporting
import ServerKit
import Protocols
import BackendKit
import Foundation

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Fail when a backend got slower: counted costs against a baseline, or paired timing against a git ref.",
        discussion: """
        Against a baseline (default): re-measures its cells. Counted cells (instructions, allocator \
        calls and system calls per message, the server under callgrind) do not depend on the \
        machine's speed and are compared across machines, tightly: +2% instructions, +0.01 \
        allocations, +0.05 system calls per message. Timed cells are judged only when the baseline \
        was recorded on this machine (host, CPU, cores, kernel, Swift); otherwise they are shown, \
        marked 'not judged', with a sentence saying so. Errors in the fresh run are a regression; \
        a cell or metric the fresh run lacks makes the check fail (exit 1).

        --against REF: builds REF in a worktree (.build/against/, release mode) and compares its \
        server with this binary's, counted first, then timed (--metrics picks one). Counted: the \
        counted baseline's cells (each server under callgrind, 64 B, closed loop, at \
        --counted-connections), both servers in every repetition, judged with the counted \
        thresholds (REF's median against the new binary's best). Timed: both servers interleaved in \
        every repetition (old new, new old, ...) on the same CPUs, judged on the per-repetition \
        ratios new/old: their geometric mean and a 95% t-interval on their logarithms. A regression \
        when the interval lies wholly beyond --threshold; 'cannot tell' when it straddles it, and \
        when its point estimate is beyond the threshold it is measured again, --repeat pairs at a \
        time, up to --max-repeat. --control adds an A/A comparison (REF against itself). --gate \
        counted reports timed regressions without failing (CI's use).

        Thresholds for baseline checks can be overridden per metric and per backend with a JSON file \
        (--thresholds; see README.md); values that would disable a check are refused.

        Exit codes: 0 no regression; 2 a regression (the report names the cell and metric); \
        1 the check could not run or could not compare everything (no baseline, a server failed, a \
        missing cell or metric, a bad thresholds file); 64 bad usage.
        """
    )

    enum ReportFormat: String, ExpressibleByArgument { case table, markdown }
    enum Scope: String, ExpressibleByArgument { case counted, timed, all }

    @Option(help: "The baseline CSV (written by 'iobench baseline update').")
    var baseline: String = "results/baseline.csv"

    @Option(help: "Which cells to measure: counted, timed or all (of the baseline's; with --against, the counted and the timed comparison).")
    var metrics: Scope = .all

    @Option(help: "A JSON file of thresholds per metric and per backend (default: results/thresholds.json when it exists).")
    var thresholds: String?

    @Option(help: "Compare time-based metrics as ratios to this backend measured in the same run.")
    var relativeTo: BackendKind?

    @Option(help: "Times a cell that looks regressed is measured again before it counts.")
    var retries: Int = 2

    @Option(help: "Paired A/B mode: a git ref (for example HEAD~1 or main) whose server is measured interleaved with this binary's.")
    var against: String?

    @Option(help: "--against: the servers to compare (comma-separated).")
    var backends: ListOf<BackendKind> = ListOf(Backends.kinds)

    @Option(name: .customLong("repeat"), help: "--against: repetitions (pairs) per server.")
    var repetitions: Int = 10

    @Option(help: "--against: measured time per repetition.")
    var duration: Duration = Duration(1)

    @Option(help: "--against: warm-up per repetition.")
    var warmup: Duration = Duration(0.3)

    @Option(help: "--against: connections.")
    var connections: Int = 16

    @Option(help: "--against: an open-loop rate in messages per second, in total (0: closed loop, depth 1). A rate that saturates neither side measures the server's cost without the bottleneck's amplification.")
    var rate: Double = 0

    @Option(help: "--against: message size.")
    var size: ByteSize = ByteSize(64)

    @Option(help: "--against: the worsening (a fraction) a whole 95% interval must lie beyond to be a regression.")
    var threshold: Double = 0.05

    @Option(help: "--against: also write the paired rows to this CSV.")
    var out: String?

    @Option(help: "--against: compare with this prebuilt iobench binary instead of building REF (REF then only names it in the report).")
    var againstExecutable: String?

    @Option(help: "--against: connection counts of the counted cells (each server under callgrind, 64 B, closed loop), as in the counted baseline.")
    var countedConnections: ListOf<Int> = ListOf([1, 16])

    @Option(help: "--against: repetitions of each counted cell (both servers in each).")
    var countedRepeat: Int = 2

    @Option(help: "--against: the most timed pairs per server: a 'cannot tell' whose point estimate is beyond the threshold is measured again, --repeat pairs at a time, up to this many.")
    var maxRepeat: Int = 30

    @Flag(help: "--against: an A/A control: REF's server measured a second time in every repetition and compared with itself, to show the day's noise (reported, not judged).")
    var control = false

    enum Gate: String, ExpressibleByArgument { case counted, all }

    @Option(help: "--against: which regressions fail the check (exit 2): 'all', or 'counted' only (timed ones are then reported, as CI does).")
    var gate: Gate = .all

    @Option(help: "Report format: table or markdown (for CI job summaries).")
    var format: ReportFormat = .table

    @Flag(help: "No progress line.")
    var quiet = false

    @Option(name: .customLong("server-arg"), help: .hidden)
    var serverArguments: [String] = []

    /// Extra serve options for the new server only (--against): how tests inject a regression.
    @Option(name: .customLong("candidate-server-arg"), help: .hidden)
    var candidateServerArguments: [String] = []

    func validate() throws {
        guard repetitions >= 2 else { throw ValidationError("--repeat must be at least 2: an interval needs two pairs") }
        guard threshold >= 0 && threshold < 1 else { throw ValidationError("--threshold must be from 0 to 1 (a fraction: 0.05 is 5%)") }
        guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
        guard rate >= 0 && rate.isFinite else { throw ValidationError("--rate must be a positive number of messages per second, or 0 for a closed loop") }
        guard retries >= 0 else { throw ValidationError("--retries must not be negative") }
        guard maxRepeat >= repetitions else { throw ValidationError("--max-repeat \(maxRepeat) must be at least --repeat \(repetitions)") }
        guard countedRepeat >= 1 else { throw ValidationError("--counted-repeat must be at least 1") }
        guard countedConnections.values.allSatisfy({ $0 >= 1 }) else { throw ValidationError("--counted-connections must list connection counts of at least 1") }
        guard againstExecutable == nil || against != nil else { throw ValidationError("--against-executable goes with --against REF (the name the report gives it)") }
    }

    func run() throws {
        do {
            if let against { try checkAgainst(against) } else { try checkBaseline() }
        } catch let error as CheckError {
            printError("iobench check: \(error)")
            throw ExitCode.failure
        }
    }

    // MARK: Against a baseline

    private func checkBaseline() throws {
        let text: String
        do { text = try String(contentsOfFile: baseline, encoding: .utf8) } catch {
            throw CheckError.unusable("no baseline at \(baseline): make one with 'iobench baseline update --out \(baseline)'")
        }
        var baseRows: [ResultRow]
        do { baseRows = try CSV.read(text) } catch { throw CheckError.unusable("the baseline \(baseline) is not a results CSV: \(error)") }
        guard let first = baseRows.first else { throw CheckError.unusable("the baseline \(baseline) has no rows") }
        baseRows = baseRows.filter { row in
            switch metrics {
            case .all: true
            case .counted: CheckedMetric.source(of: row) == .counted
            case .timed: CheckedMetric.source(of: row) != .counted
            }
        }
        guard !baseRows.isEmpty else { throw CheckError.unusable("the baseline \(baseline) has no \(metrics.rawValue) cells: record them with 'iobench baseline update'") }

        var limits = Thresholds.defaults
        let thresholdsPath = thresholds ?? (FileManager.default.fileExists(atPath: "results/thresholds.json") ? "results/thresholds.json" : nil)
        if let thresholdsPath { limits = try Thresholds.load(thresholdsPath) }

        let machine = MachineInfo.current()
        let differences = RegressionCheck.machineDifferences(baseline: first, now: machine)
        var checker = RegressionCheck(thresholds: limits, relativeTo: relativeTo?.rawValue, judgeTimes: differences.isEmpty)
        var notes: [String] = []
        if !differences.isEmpty && baseRows.contains(where: { CheckedMetric.source(of: $0) == .timed }) {
            notes.append("times are not judged: the baseline was recorded on another machine (\(differences.joined(separator: "; "))), and this kind of machine's speed changes by 2× from day to day; compare times with --against REF, or record a baseline on this machine")
        }
        if checker.relativeTo != nil && !checker.judgeTimes { checker.relativeTo = nil }
        let toolchain = [("swift_version", machine.swiftVersion), ("build_config", machine.buildConfiguration)]
            .filter { column, value in !(first[column] ?? "").isEmpty && first[column] != value }
            .map { column, value in "\(column) was '\(first[column] ?? "")', now '\(value)'" }
        if !toolchain.isEmpty && baseRows.contains(where: { CheckedMetric.source(of: $0) == .counted }) {
            notes.append("counted figures come from a binary of another toolchain or build (\(toolchain.joined(separator: "; "))): differences may be the compiler's, not the code's")
        }

        let commandLine = reproducibleCommandLine()
        let (cells, skipped) = try BaselinePlans.plans(from: baseRows, executable: selfExecutable(), commandLine: commandLine)
        if !skipped.isEmpty {
            printError("iobench check: note: external servers are not re-measured: \(skipped.joined(separator: ", "))")
        }
        let measuredRows = baseRows.filter { Backends.named($0["backend"] ?? "") != nil }

        var nowRows: [ResultRow] = []
        for cell in cells { nowRows += try measure(cell) }
        var comparisons = checker.compare(baseline: measuredRows, now: nowRows)
        var attempts = 0
        while attempts < retries {
            let suspect = Set(comparisons.filter { $0.verdict == .regressed && $0.metric != "errors" }.map(\.cell))
            if suspect.isEmpty { break }
            attempts += 1
            for cell in cells where suspect.contains(cell.title) {
                printError("iobench check: \(cell.title) looks regressed; measuring it again (\(attempts)/\(retries))")
                nowRows += try measure(cell)
            }
            comparisons = checker.compare(baseline: measuredRows, now: nowRows)
        }

        let markdown = format == .markdown
        if markdown { print("### iobench check against `\(baseline)`\n") }
        print(RegressionCheck.render(comparisons, markdown: markdown))
        for note in notes { print("note: \(note)") }
        let regressions = comparisons.filter { $0.verdict == .regressed }
        let missing = comparisons.filter { $0.verdict == .missing }
        let judged = comparisons.filter { $0.verdict == .ok || $0.verdict == .improved }
        let unjudged = comparisons.filter { $0.verdict == .notJudged }.count
        if !regressions.isEmpty {
            print("\(regressions.count) regression(s):")
            for r in regressions {
                let change = r.change.map { String(format: "%+.1f%%", $0 * 100) } ?? "?"
                print("  - \(r.cell), \(r.backend): \(r.metric)\(r.basis.isEmpty ? "" : " (\(r.basis))") \(r.metric == "errors" ? "\(Int(r.now ?? 0)) errors" : change) (threshold \(r.threshold?.description ?? "-"))")
            }
            throw ExitCode(2)
        }
        if !missing.isEmpty {
            throw CheckError.unusable("the fresh run lacks \(missing.count) figure(s) the baseline has (\(missing.prefix(3).map { "\($0.cell), \($0.backend): \($0.metric)" }.joined(separator: "; "))): nothing can be said of them")
        }
        let counted = judged.filter { $0.metric.hasPrefix("counted.") || $0.metric == "idle_rss_bytes_per_conn" }.count
        // A gate that judged nothing must not pass.
        if judged.isEmpty {
            throw CheckError.unusable("nothing was judged: \(unjudged > 0 ? "the baseline's \(unjudged) timed figures are from another machine and its cells hold no counts" : "the baseline and this run share no figure") — record a baseline here (iobench baseline update), use --metrics counted with a counted baseline, or compare with --against REF")
        }
        if unjudged > 0 {
            // Not "no regression": the times were not looked at.
            print("counts: no regression in \(counted) comparisons. times: \(unjudged) figures NOT judged, since this baseline is from another machine; use --against REF, or a baseline recorded here")
        } else {
            print("no regression: \(judged.count) comparisons within their thresholds (\(counted) counted, \(judged.count - counted) timed)")
        }
    }

    private func measure(_ cell: BaselinePlans.CellPlan) throws -> [ResultRow] {
        var plan = cell.plan
        plan.extraServerArguments = serverArguments + candidateServerArguments
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

    // MARK: Paired against a git ref

    private func checkAgainst(_ ref: String) throws {
        let progress = ProgressLine(quiet: quiet)
        let oldExecutable: String, oldName: String
        if let againstExecutable {
            guard FileManager.default.isExecutableFile(atPath: againstExecutable) else {
                throw CheckError.unusable("--against-executable \(againstExecutable) is not an executable file: give the path of an iobench binary")
            }
            oldExecutable = againstExecutable
            oldName = "\(ref) (\(MachineInfo.current(executable: againstExecutable).gitCommit))"
        } else {
            let repository = MachineInfo.packageDirectory(of: selfExecutable())
            let (executable, commit) = try RefBuild.build(ref: ref, repository: repository) { progress.show("check: \($0)") }
            progress.clear()
            oldExecutable = executable
            oldName = "\(ref) (\(commit))"
        }
        let newBuild = MachineInfo.current()
        let newName = "new (\(newBuild.gitCommit)\(newBuild.gitDirty ? "+dirty" : ""))"
        // A backend REF does not have (added since) has nothing to be compared with.
        var kinds = backends.values
        if let known = RefBuild.backends(of: oldExecutable) {
            let missing = kinds.filter { !known.contains($0.rawValue) }
            if !missing.isEmpty {
                print("\(ref) has no \(missing.map(\.rawValue).joined(separator: ", ")) backend: nothing to compare \(missing.count == 1 ? "it" : "them") with (not judged)")
                kinds.removeAll { missing.contains($0) }
            }
            guard !kinds.isEmpty else {
                throw CheckError.unusable("\(ref) has none of the backends asked for (\(backends.values.map(\.rawValue).joined(separator: ", "))): nothing to compare")
            }
        }
        let markdown = format == .markdown
        var allRows: [ResultRow] = []
        var failures: [String] = []
        var regressions: [String] = []

        // Counted first: it sees what the timing may not, whatever the machine's speed today.
        if metrics != .timed {
            if let reason = Callgrind.unavailableReason() {
                throw CheckError.unusable("the counted comparison needs valgrind: \(reason) (or pass --metrics timed)")
            }
            let (comparisons, rows) = try countedAgainst(kinds, oldExecutable: oldExecutable, ref: ref, progress: progress)
            allRows += rows
            if markdown { print("### iobench check against `\(ref)`: counted (callgrind)\n") } else { print("counted (callgrind), \(oldName) against \(newName):") }
            print(RegressionCheck.render(comparisons, markdown: markdown, names: (String(ref), "new")), terminator: "")
            print("counted: user-space instructions, allocations and system calls per message of each server under callgrind, \(countedRepeat) repetition(s) per cell, \(ref)'s median against the new binary's best; thresholds as for the counted baseline.")
            let counted = comparisons.filter { $0.verdict == .regressed }
            if counted.isEmpty {
                let judged = comparisons.filter { $0.verdict == .ok || $0.verdict == .improved }.count
                guard judged > 0 else {
                    throw CheckError.unusable("the counted comparison judged nothing: neither binary's servers gave a figure to compare")
                }
                print("counted: no regression in \(judged) comparisons")
            } else {
                print("counted: \(counted.count) regression(s):")
                for r in counted {
                    let change = r.change.map { String(format: "%+.1f%%", $0 * 100) } ?? "?"
                    print("  - \(r.cell), \(r.backend): \(r.metric) \(r.metric == "errors" ? "\(Int(r.now ?? 0)) errors" : change) (threshold \(r.threshold?.description ?? "-"))")
                    regressions.append("counted \(r.backend) \(r.metric)")
                }
            }
            if let missing = comparisons.first(where: { $0.verdict == .missing }) {
                failures.append("counted \(missing.cell), \(missing.backend): \(missing.metric) was not measured for both servers")
            }
            print("")
        }

        if metrics != .counted {
            let checker = PairedCheck(threshold: threshold)
            var outcomes: [PairedCheck.Outcome] = []
            var controls: [PairedCheck.Outcome] = []
            var escalations: [String] = []
            for kind in kinds {
                let oldLabel = "\(kind.rawValue)@old", newLabel = "\(kind.rawValue)@new", controlLabel = "\(kind.rawValue)@old-again"
                var variants = [
                    ServerVariant(name: oldLabel, backend: kind, arguments: serverArguments, executable: oldExecutable),
                    ServerVariant(name: newLabel, backend: kind, arguments: serverArguments + candidateServerArguments),
                ]
                if control { variants.append(ServerVariant(name: controlLabel, backend: kind, arguments: serverArguments, executable: oldExecutable)) }
                // A likely regression the noise hides so far: more pairs, up to the budget.
                let (rows, judged, pairs) = try checker.judgeEscalating(
                    try timedPairs(kind, variants: variants, repetitions: repetitions, ref: ref, progress: progress),
                    backend: kind.rawValue, oldLabel: oldLabel, newLabel: newLabel, pairs: repetitions, batch: repetitions, maxPairs: maxRepeat,
                    more: { try timedPairs(kind, variants: variants, repetitions: $0, ref: ref, progress: progress) },
                    announce: { printError("iobench check: \($0)") })
                if pairs > repetitions {
                    let outcome = judged.filter { $0.verdict != .missing }.map { "\($0.metric) \($0.verdict.rawValue)" }.joined(separator: ", ")
                    escalations.append("\(kind): \(pairs) pairs (\(repetitions), then \(pairs - repetitions) more): \(outcome)")
                }
                allRows += rows
                outcomes += judged
                if control { controls += checker.judge(rows, backend: kind.rawValue, oldLabel: oldLabel, newLabel: controlLabel) }
                let errors = rows.compactMap { $0.int("errors") }.reduce(0, +)
                if errors > 0 { outcomes.append(.init(backend: kind.rawValue, metric: "errors", old: nil, new: Double(errors), ratio: nil, verdict: .regressed)) }
            }
            if markdown { print("### iobench check against `\(ref)`: timed (paired, \(repetitions) repetitions, up to \(maxRepeat))\n") } else { print("timed (paired), \(oldName) against \(newName):") }
            print(checker.render(outcomes, oldName: oldName, newName: newName, markdown: markdown), terminator: "")
            print("timed: new ÷ old is the geometric mean of the per-repetition ratios (old and new measured back to back, alternating order) with its 95% t-interval; a regression when the whole interval is beyond the threshold. A 'cannot tell' whose point estimate is beyond the threshold is measured again, up to --max-repeat \(maxRepeat) pairs.")
            for line in escalations { print("timed: measured again: \(line)") }
            if control {
                if markdown { print("\n#### A/A control: \(ref) against itself\n") } else { print("A/A control, \(oldName) against itself (the day's noise; not judged):") }
                print(checker.render(controls, oldName: oldName, newName: "\(ref) again", markdown: markdown), terminator: "")
            }
            let unsure = outcomes.filter { $0.verdict == .cannotTell }
            if !unsure.isEmpty {
                print("timed: cannot tell: \(unsure.map { "\($0.backend) \($0.metric)" }.joined(separator: ", ")) (the interval straddles the threshold: too noisy to decide)")
            }
            let timed = outcomes.filter { $0.verdict == .regressed }
            if !timed.isEmpty {
                let list = timed.map { "\($0.backend) \($0.metric)\($0.ratio.map { " ×" + $0.formatted(3) } ?? "")" }.joined(separator: "; ")
                if gate == .counted {
                    print("timed: \(timed.count) regression(s), reported, not gating (--gate counted): \(list)")
                } else {
                    print("timed: \(timed.count) regression(s): \(list)")
                    regressions += timed.map { "timed \($0.backend) \($0.metric)" }
                }
            } else {
                let ok = outcomes.filter { $0.verdict == .ok || $0.verdict == .improved }.count
                print("timed: no regression found: \(ok) of \(outcomes.count) comparisons within the threshold, \(unsure.count) cannot tell")
            }
            if let missing = outcomes.first(where: { $0.verdict == .missing }) {
                failures.append("timed \(missing.backend) \(missing.metric): fewer than two valid pairs were measured")
            }
        }
        if let out {
            let path = try writeCSV(allRows, to: out, runID: allRows.first?["run_id"] ?? "against")
            printError("iobench check: paired rows in \(path)")
        }
        if !regressions.isEmpty {
            print("\(regressions.count) regression(s): \(regressions.joined(separator: "; "))")
            throw ExitCode(2)
        }
        if !failures.isEmpty {
            throw CheckError.unusable("nothing can be said of: \(failures.joined(separator: "; "))")
        }
    }

    /// The counted cells of every backend whose counted figures the baseline keeps (the three
    /// models and the NIO peer), both servers in every repetition; a cell that looks regressed is
    /// measured again (both servers) up to --retries times.
    private func countedAgainst(_ kinds: [BackendKind], oldExecutable: String, ref: String, progress: ProgressLine) throws -> ([Comparison], [ResultRow]) {
        var limits = Thresholds.defaults
        if let thresholds { limits = try Thresholds.load(thresholds) }
        func measure(_ connections: [Int], _ kinds: [BackendKind]) throws -> [ResultRow] {
            let plan = PairedCountedCheck.plan(executable: selfExecutable(), commandLine: reproducibleCommandLine(), oldExecutable: oldExecutable,
                                               backends: kinds, connections: connections, repetitions: countedRepeat,
                                               serverArguments: serverArguments, candidateArguments: candidateServerArguments)
            let runner = BenchmarkRunner(plan: plan)
            runner.status = { progress.show("check --against \(ref), counted: \($0)") }
            defer { progress.clear() }
            do { return try runner.run() } catch { throw CheckError.unusable("counting against \(ref) failed: \(error)") }
        }
        var rows = try measure(countedConnections.values, kinds)
        var comparisons = PairedCountedCheck.compare(rows, backends: kinds, thresholds: limits)
        var attempt = 0
        while attempt < retries {
            let suspect = comparisons.filter { $0.verdict == .regressed && $0.metric != "errors" }
            guard !suspect.isEmpty else { break }
            attempt += 1
            printError("iobench check: counted \(suspect.map { "\($0.cell) \($0.backend) \($0.metric)" }.joined(separator: ", ")) looks regressed; measuring it again (\(attempt)/\(retries))")
            // Only the suspect cells, both servers of each: more repetitions of REF's move its
            // median, more of the new binary's give it more chances at its best.
            for connections in countedConnections.values {
                let suspects = kinds.filter { kind in suspect.contains { $0.backend == kind.rawValue && $0.cell.contains(": \(connections) conns ") } }
                if !suspects.isEmpty { rows = PairedCountedCheck.appending(try measure([connections], suspects), to: rows) }
            }
            comparisons = PairedCountedCheck.compare(rows, backends: kinds, thresholds: limits)
        }
        return (comparisons, rows)
    }

    /// `repetitions` repetitions of the timed cell, every variant in each (the runner alternates
    /// their order from one repetition to the next).
    private func timedPairs(_ kind: BackendKind, variants: [ServerVariant], repetitions: Int, ref: String, progress: ProgressLine) throws -> [ResultRow] {
        var plan = RunPlan(executable: selfExecutable(), commandLine: reproducibleCommandLine())
        plan.backends = []
        plan.variants = variants
        plan.connections = [connections]
        plan.sizes = [size.bytes]
        plan.modes = [rate > 0 ? .open(rate: rate) : .closed(depth: 1)]
        plan.repetitions = repetitions
        plan.duration = duration.seconds
        plan.warmup = warmup.seconds
        plan.idleConnections = 0
        let allowed = Array(0..<ProcessInfo.processInfo.activeProcessorCount)
        plan.clientCPUs = allowed.count > 1 ? allowed.filter { $0 != 0 } : allowed
        plan.generatorThreads = plan.clientCPUs.count
        let runner = BenchmarkRunner(plan: plan)
        runner.status = { progress.show("check --against \(ref): \($0)") }
        defer { progress.clear() }
        do { return try runner.run() } catch { throw CheckError.unusable("measuring \(kind) against \(ref) failed: \(error)") }
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

        @Option(help: "Connection counts of the counted cells (each backend under callgrind, 64 B, closed loop); 'none' records none.")
        var countedConnections: String = "1,16"

        @Option(help: "Repetitions of each counted cell.")
        var countedRepeat: Int = 2

        @Flag(help: "No progress line.")
        var quiet = false

        func run() throws {
            let plan: RunPlan
            var countedPlan: RunPlan?
            do {
                plan = try matrix.makePlan(quick: !full)
                if countedConnections != "none" {
                    guard let connections = ListOf<Int>(argument: countedConnections), connections.values.allSatisfy({ $0 >= 1 }) else {
                        throw UsageError("--counted-connections '\(countedConnections)' is not a list of connection counts (or 'none')")
                    }
                    if let reason = Callgrind.unavailableReason() { throw UsageError(reason) }
                    var counted = plan
                    guard countedRepeat >= 1 else { throw UsageError("--counted-repeat must be at least 1") }
                    BaselinePlans.makeCounted(&counted, connections: connections.values, repetitions: countedRepeat)
                    countedPlan = counted
                }
            } catch let error as UsageError { throw error }
            warnIfShared(plan)
            let timed = try execute(plan, quiet: quiet)
            if let interrupted = timed.interrupted { printError("iobench: \(interrupted); no baseline written"); throw ExitCode(130) }
            var rows = timed.rows
            if let countedPlan {
                let counted = try execute(countedPlan, quiet: quiet)
                if let interrupted = counted.interrupted { printError("iobench: \(interrupted); no baseline written"); throw ExitCode(130) }
                rows += counted.rows
            }
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
