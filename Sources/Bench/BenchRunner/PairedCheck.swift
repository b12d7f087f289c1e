import ResultReporting
import LoadGeneration
import ResultAnalysis
import ServerKit
import Protocols
import BackendKit
import Foundation

/// `iobench check --against REF`: the server built from REF ("old") and this binary's ("new")
/// measured interleaved within every repetition (old new, new old, …: the runner rotates the
/// order), on the same CPUs, and judged on the per-repetition ratios. A machine that is faster or
/// slower today moves both halves of a pair alike, so the ratio holds what the code changed.
public struct PairedCheck: Sendable {
    /// The timed figures judged, and which way is better.
    public static let metrics: [CheckedMetric] = [CheckedMetric(.serverCPUPerMessage, .time), CheckedMetric(.messagesPerSecond, .time)]

    /// A regression: the 95% interval of how many times worse new is than old lies wholly
    /// above 1 + threshold.
    public var threshold: Double

    public init(threshold: Double = 0.05) { self.threshold = threshold }

    public struct Outcome: Sendable {
        public enum Verdict: String, Sendable {
            case ok, regressed, improved
            /// The interval straddles the threshold: too noisy to say either way (not a failure).
            case cannotTell = "cannot tell"
            /// Fewer than two valid pairs.
            case missing
        }

        public let backend: String
        public let metric: String
        public let old: Double?
        public let new: Double?
        /// new ÷ old per repetition: the geometric mean and its 95% interval.
        public let ratio: Estimate?
        public let verdict: Verdict

        public init(backend: String, metric: String, old: Double?, new: Double?, ratio: Estimate?, verdict: Verdict) {
            self.backend = backend
            self.metric = metric
            self.old = old
            self.new = new
            self.ratio = ratio
            self.verdict = verdict
        }

        /// How many times worse new is than old, by the point estimate (above 1: worse).
        public var worsening: Double? {
            guard let ratio else { return nil }
            return metric == Metric.messagesPerSecond.column ? 1 / ratio.value : ratio.value
        }
    }

    /// Whether more pairs are worth measuring: the interval straddles the threshold while the
    /// point estimate lies beyond it (a likely regression that the noise hides so far).
    public func needsMorePairs(_ outcome: Outcome) -> Bool {
        outcome.verdict == .cannotTell && (outcome.worsening ?? 0) > 1 + threshold
    }

    /// Judges `rows` (`pairs` repetitions); while a comparison ``needsMorePairs(_:)`` and fewer
    /// than `maxPairs` were measured, adds `more(n)` (n more repetitions, numbered after the
    /// others) and judges all of them again. `announce` hears why before each batch.
    public func judgeEscalating(_ rows: [ResultRow], backend: String, oldLabel: String, newLabel: String, pairs: Int,
                                batch: Int, maxPairs: Int, more: (Int) throws -> [ResultRow],
                                announce: (String) -> Void = { _ in }) rethrows -> (rows: [ResultRow], outcomes: [Outcome], pairs: Int) {
        var rows = rows
        var pairs = pairs
        var outcomes = judge(rows, backend: backend, oldLabel: oldLabel, newLabel: newLabel)
        while outcomes.contains(where: needsMorePairs) && pairs < maxPairs {
            let count = min(max(batch, 1), maxPairs - pairs)
            let unsure = outcomes.filter(needsMorePairs).map { "\($0.metric) ×\($0.ratio?.formatted(3) ?? "?")" }.joined(separator: ", ")
            announce("\(backend) cannot tell yet (\(unsure)) after \(pairs) pairs; measuring \(count) more")
            rows = PairedCountedCheck.appending(try more(count), to: rows)
            pairs += count
            outcomes = judge(rows, backend: backend, oldLabel: oldLabel, newLabel: newLabel)
        }
        return (rows, outcomes, pairs)
    }

    /// Judges rows of one run in which `oldLabel` and `newLabel` were measured in the same
    /// repetitions of one cell.
    public func judge(_ rows: [ResultRow], backend: String, oldLabel: String, newLabel: String) -> [Outcome] {
        let trusted = RegressionCheck.trusted(rows)
        let old = trusted.filter { $0.serverLabel == oldLabel }
        let new = trusted.filter { $0.serverLabel == newLabel }
        // At a fixed open-loop rate messages/s is the schedule's, not the server's: not judged.
        let openLoop = rows.contains { !($0["rate_msgs_per_s"] ?? "").isEmpty }
        return Self.metrics.filter { !openLoop || $0.metric != .messagesPerSecond }.map { metric in
            var ratios: [Double] = []
            for row in new {
                guard let value = row.double(metric.column), value > 0,
                      let partner = old.first(where: { $0["repetition"] == row["repetition"] }),
                      let reference = partner.double(metric.column), reference > 0 else { continue }
                ratios.append(value / reference)
            }
            let estimate = Statistics.ratioInterval(ratios)
            let verdict: Outcome.Verdict
            if let estimate, estimate.count >= 2 {
                // How many times worse: new/old for lower-is-better, old/new for higher-is-better.
                let (low, high) = metric.direction == .lowerIsBetter ? (estimate.low, estimate.high) : (1 / estimate.high, 1 / estimate.low)
                if low > 1 + threshold {
                    verdict = .regressed
                } else if high < 1 + threshold {
                    verdict = high < 1 / (1 + threshold) ? .improved : .ok
                } else {
                    verdict = .cannotTell
                }
            } else {
                verdict = .missing
            }
            return Outcome(backend: backend, metric: metric.column,
                           old: Statistics.median(old.compactMap { $0.double(metric.column) }),
                           new: Statistics.median(new.compactMap { $0.double(metric.column) }),
                           ratio: estimate, verdict: verdict)
        }
    }

    public func render(_ outcomes: [Outcome], oldName: String, newName: String, markdown: Bool) -> String {
        var table = [["backend", "metric", oldName, newName, "new ÷ old [95% CI]", "pairs", "threshold", "verdict"]]
        for o in outcomes {
            table.append([
                o.backend, o.metric,
                o.old.map(RegressionCheck.format) ?? "-", o.new.map(RegressionCheck.format) ?? "-",
                o.ratio.map { $0.formatted(3) } ?? "-", o.ratio.map { "\($0.count)" } ?? "-",
                (o.metric == Metric.messagesPerSecond.column ? "÷" : "×") + String(format: "%.2f", 1 + threshold),
                o.verdict == .regressed ? "REGRESSED" : o.verdict == .missing ? "MISSING" : o.verdict.rawValue,
            ])
        }
        return markdown ? SummaryTable.markdownTable(table) : SummaryTable.align(table)
    }
}

/// The counted half of `check --against REF`, judged before the timed half: the counted
/// baseline's cells (``BaselinePlans/makeCounted(_:connections:repetitions:)``), REF's server and
/// this binary's each under callgrind in the same repetitions, compared with the baseline
/// check's counted thresholds (+2% user-space instructions, +0.01 allocations, +0.05 system
/// calls per message; io_uring +5% and +0.25): REF's figures stand as the baseline (their
/// median), this binary's as the fresh run (their best). Counts do not depend on the machine's
/// speed or load, so this sees a code change that timing under a closed loop partly hides.
public enum PairedCountedCheck {
    public static func oldLabel(_ kind: BackendKind) -> String { "\(kind.rawValue)@old" }
    public static func newLabel(_ kind: BackendKind) -> String { "\(kind.rawValue)@new" }

    /// The plan: both servers of every backend, interleaved in every repetition.
    public static func plan(executable: String, commandLine: String, oldExecutable: String, backends: [BackendKind],
                            connections: [Int], repetitions: Int, serverArguments: [String], candidateArguments: [String]) -> RunPlan {
        var plan = RunPlan(executable: executable, commandLine: commandLine)
        plan.backends = []
        plan.variants = backends.flatMap { kind in [
            ServerVariant(name: oldLabel(kind), backend: kind, arguments: serverArguments, executable: oldExecutable),
            ServerVariant(name: newLabel(kind), backend: kind, arguments: serverArguments + candidateArguments),
        ] }
        BaselinePlans.makeCounted(&plan, connections: connections, repetitions: repetitions)
        return plan
    }

    /// Compares the new servers' rows with the old ones', cell by cell (each labelled with its
    /// backend's name again, so the baseline check's comparison and thresholds apply as they are).
    public static func compare(_ rows: [ResultRow], backends: [BackendKind], thresholds: Thresholds = .defaults) -> [Comparison] {
        func relabel(_ label: (BackendKind) -> String) -> [ResultRow] {
            rows.compactMap { row in
                guard let kind = backends.first(where: { label($0) == row["backend"] }) else { return nil }
                var row = row
                row["backend"] = kind.rawValue
                return row
            }
        }
        return RegressionCheck(thresholds: thresholds).compare(baseline: relabel(oldLabel), now: relabel(newLabel))
    }

    /// Numbers the repetitions of `more` after those of `rows`, so a cell measured again adds
    /// repetitions instead of repeating their numbers.
    public static func appending(_ more: [ResultRow], to rows: [ResultRow]) -> [ResultRow] {
        let offset = rows.compactMap { $0.int("repetition") }.max() ?? 0
        return rows + more.map { row in
            var row = row
            row["repetition"] = "\((row.int("repetition") ?? 0) + offset)"
            return row
        }
    }
}

/// Builds iobench at a git ref in a worktree of this repository, in the configuration of the
/// running binary (release, or debug under the test suite: like is compared with like), and
/// returns the binary. The worktree and its build folder keep stable paths under `.build/against/`, so a
/// second build of a nearby ref is incremental.
public enum RefBuild {
    /// The backends another iobench binary serves, from its `serve --help` ("(values: …)" of
    /// `--backend`); nil when it does not say.
    public static func backends(of executable: String) -> [String]? {
        let (status, help) = Subprocess.run(executable, ["serve", "--help"], discardErrors: true)
        guard status == 0 else { return nil }
        // ArgumentParser folds the help text: join the lines before looking.
        let flat = help.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
        guard let option = flat.range(of: "--backend <backend>", options: .backwards),
              let values = flat.range(of: "(values: ", range: option.upperBound..<flat.endIndex),
              let end = flat.range(of: ")", range: values.upperBound..<flat.endIndex) else { return nil }
        return flat[values.upperBound..<end.lowerBound].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    }

    public static func build(ref: String, repository: String, status: (String) -> Void) throws -> (executable: String, commit: String) {
        let git = "/usr/bin/git"
        let (resolved, commitText) = Subprocess.run(git, ["-C", repository, "rev-parse", "--verify", "--quiet", "\(ref)^{commit}"])
        let commit = commitText.trimmingCharacters(in: .whitespacesAndNewlines)
        guard resolved == 0, !commit.isEmpty else {
            throw CheckError.unusable("--against \(ref) is not a commit of the repository at \(repository): give a branch, tag or commit (a shallow clone may lack it: fetch more history)")
        }
        let worktree = repository + "/.build/against/src"
        let registered = FileManager.default.fileExists(atPath: worktree + "/.git")
        let steps: [[String]]
        if registered {
            steps = [["-C", worktree, "checkout", "--quiet", "--detach", "--force", commit],
                     ["-C", worktree, "clean", "-ffdqx", "-e", "/.build"]]
        } else {
            try? FileManager.default.removeItem(atPath: worktree)  // a leftover that is not a worktree
            steps = [["-C", repository, "worktree", "prune"],
                     ["-C", repository, "worktree", "add", "--quiet", "--detach", "--force", worktree, commit]]
        }
        for step in steps {
            let (code, output) = Subprocess.run(git, step)
            guard code == 0 else { throw CheckError.unusable("git \(step.joined(separator: " ")) failed: \(output.trimmingCharacters(in: .whitespacesAndNewlines))") }
        }
        let configuration = MachineInfo.buildConfiguration
        status("building \(ref) (\(commit.prefix(12))) in \(worktree), \(configuration) mode")
        let swift = ProcessInfo.processInfo.environment["SWIFT"] ?? "swift"
        let (code, output) = Subprocess.run("/usr/bin/env", [swift, "build", "-c", configuration, "--package-path", worktree, "--product", "iobench"])
        guard code == 0 else {
            let tail = output.split(separator: "\n").suffix(15).joined(separator: "\n")
            throw CheckError.unusable("building \(ref) failed (swift build -c \(configuration) in \(worktree)):\n\(tail)")
        }
        let executable = worktree + "/.build/\(configuration)/iobench"
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw CheckError.unusable("building \(ref) produced no binary at \(executable)")
        }
        return (executable, String(commit.prefix(12)))
    }
}
