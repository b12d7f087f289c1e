@testable import Bench
import EchoCore
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The comparison logic on rows made up for the purpose.
@Suite struct RegressionLogicTests {
    func row(_ backend: String, rep: Int, _ values: [String: Double]) -> ResultRow {
        var row = ResultRow(["workload": "echo", "backend": backend, "run_id": "r", "connections": "16", "size_bytes": "64",
                             "depth": "1", "rate_msgs_per_s": "", "server_threads": "1", "repetition": "\(rep)"])
        for (k, v) in values { row[k] = "\(v)" }
        return row
    }

    @Test func baselineMedianAgainstTheBestFreshRepetition() {
        let baseline = [row("epoll", rep: 1, ["msgs_per_s": 100_000, "server_cpu_us_per_msg": 10]),
                        row("epoll", rep: 2, ["msgs_per_s": 90_000, "server_cpu_us_per_msg": 12])]
        // Baseline medians: 95k msgs/s, 11 µs. One slow repetition now (interference) and one as
        // good as ever: no regression.
        let noisy = [row("epoll", rep: 1, ["msgs_per_s": 40_000, "server_cpu_us_per_msg": 25]),
                     row("epoll", rep: 2, ["msgs_per_s": 98_000, "server_cpu_us_per_msg": 10.5])]
        let verdicts = RegressionCheck().compare(baseline: baseline, now: noisy)
        #expect(verdicts.allSatisfy { $0.verdict == .ok }, "\(verdicts.map { "\($0.metric) \($0.verdict)" })")
        // Every repetition slower: a regression in both metrics, each in its own direction.
        let slower = [row("epoll", rep: 1, ["msgs_per_s": 50_000, "server_cpu_us_per_msg": 16]),
                      row("epoll", rep: 2, ["msgs_per_s": 55_000, "server_cpu_us_per_msg": 17])]
        let regressed = RegressionCheck().compare(baseline: baseline, now: slower).filter { $0.verdict == .regressed }
        #expect(Set(regressed.map(\.metric)) == ["msgs_per_s", "server_cpu_us_per_msg"])
        #expect(regressed.allSatisfy { $0.cell == "16 conns × 64 B, depth 1" && $0.backend == "epoll" })
    }

    @Test func theAbsoluteThresholdKeepsTinyFiguresFromFlapping() {
        let baseline = [row("io_uring", rep: 1, ["syscalls_per_msg": 0.10, "ctx_switches_per_msg": 0.001])]
        let now = [row("io_uring", rep: 1, ["syscalls_per_msg": 0.30, "ctx_switches_per_msg": 0.004])]  // +200%, +300%
        let verdicts = RegressionCheck().compare(baseline: baseline, now: now)
        #expect(verdicts.allSatisfy { $0.verdict == .ok })
        let worse = [row("io_uring", rep: 1, ["syscalls_per_msg": 1.10, "ctx_switches_per_msg": 0.004])]  // +1 syscall/msg
        #expect(RegressionCheck().compare(baseline: baseline, now: worse).contains { $0.metric == "syscalls_per_msg" && $0.verdict == .regressed })
    }

    @Test func relativeToComparesRatiosMeasuredInTheSameRun() {
        let baseline = [row("epoll", rep: 1, ["msgs_per_s": 100_000, "syscalls_per_msg": 2.2]),
                        row("io_uring", rep: 1, ["msgs_per_s": 110_000, "syscalls_per_msg": 0.5])]
        // A machine half as fast: both halve, the ratio holds, counts hold.
        let slowMachine = [row("epoll", rep: 1, ["msgs_per_s": 50_000, "syscalls_per_msg": 2.2]),
                           row("io_uring", rep: 1, ["msgs_per_s": 56_000, "syscalls_per_msg": 0.5])]
        let relative = RegressionCheck(relativeTo: "epoll").compare(baseline: baseline, now: slowMachine)
        #expect(!relative.contains { $0.verdict == .regressed })
        #expect(relative.contains { $0.backend == "epoll" && $0.metric == "msgs_per_s" && $0.verdict == .reference })
        #expect(relative.contains { $0.backend == "io_uring" && $0.basis == "ratio to epoll" })
        // Without it, the slow machine reads as a regression.
        #expect(RegressionCheck().compare(baseline: baseline, now: slowMachine).contains { $0.verdict == .regressed })
        // io_uring alone falling behind epoll is caught in relative mode.
        let ioUringSlower = [row("epoll", rep: 1, ["msgs_per_s": 100_000, "syscalls_per_msg": 2.2]),
                             row("io_uring", rep: 1, ["msgs_per_s": 60_000, "syscalls_per_msg": 0.5])]
        #expect(RegressionCheck(relativeTo: "epoll").compare(baseline: baseline, now: ioUringSlower)
            .contains { $0.backend == "io_uring" && $0.metric == "msgs_per_s" && $0.verdict == .regressed })
    }

    @Test func thresholdsFileOverridesPerMetricAndBackend() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("thresholds-\(getpid()).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try #"{"metrics": {"p99_us": {"relative": 2.0, "absolute": 500}}, "backends": {"blocking": {"msgs_per_s": {"relative": 0.6, "absolute": 0}}}}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        let loaded = try Thresholds.load(path)
        #expect(loaded.threshold("p99_us", backend: "epoll") == Threshold(relative: 2.0, absolute: 500))
        #expect(loaded.threshold("msgs_per_s", backend: "blocking") == Threshold(relative: 0.6))
        #expect(loaded.threshold("msgs_per_s", backend: "epoll") == Thresholds.defaults.metrics["msgs_per_s"])
        try #"{"metrics": {"speed": {"relative": 1}}}"#.write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try Thresholds.load(path) } throws: { "\($0)".contains("unknown metric 'speed'") }
    }

    @Test func machineDifferencesAreNamed() {
        var baseline = ResultRow()
        baseline["host"] = "ci-1"
        var machine = MachineInfo.current()
        baseline["cpu_model"] = machine.cpuModel
        baseline["cores"] = "\(machine.cores)"
        baseline["kernel"] = machine.kernel
        baseline["swift_version"] = machine.swiftVersion
        machine.host = "laptop"
        #expect(RegressionCheck.machineDifferences(baseline: baseline, now: machine) == ["host was 'ci-1', now 'laptop'"])
    }
}

/// `iobench check` end to end against real servers: it must fail on a real regression and hold
/// still on an unchanged server with the machine loaded.
@Suite(.serialized) struct CheckCommandTests {
    static let baselinePath = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-baseline-\(getpid()).csv").path

    static let madeBaseline: Result<Void, Error> = Result {
        let result = try runCLI(["baseline", "update", "--backends", "epoll,io_uring", "--connections", "16", "--sizes", "64",
                                 "--repeat", "3", "--duration", "1s", "--warmup", "300ms", "--out", baselinePath, "--quiet"], timeout: 120)
        guard result.status == 0 else { throw CheckError.unusable("baseline update failed: \(result.stderr)") }
    }

    func baseline() throws -> String {
        try Self.madeBaseline.get()
        return Self.baselinePath
    }

    @Test func anExtraSyscallPerMessageIsARegression() throws {
        let result = try runCLI(["check", "--baseline", try baseline(), "--quiet", "--retries", "1",
                                 "--server-arg=--inject-syscalls=2"], timeout: 180)
        #expect(result.status == 2, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("16 conns × 64 B, depth 1, io_uring: syscalls_per_msg"), "\(result.stdout)")
        #expect(result.stdout.contains("REGRESSED"))
    }

    @Test func aFixedDelayPerMessageIsARegression() throws {
        let result = try runCLI(["check", "--baseline", try baseline(), "--quiet", "--retries", "1",
                                 "--server-arg=--inject-delay-us=40"], timeout: 180)
        #expect(result.status == 2, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("server_cpu_us_per_msg"), "\(result.stdout)")
        #expect(result.stdout.contains("regression(s):"))
    }

    @Test func anUnchangedServerOnALoadedMachinePasses() throws {
        let path = try baseline()
        // A CPU burner on every core, at normal priority, for the whole check.
        let burners = (0..<2).map { _ -> Process in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", "while :; do :; done"]
            try? p.run()
            return p
        }
        // SIGKILL: the test runner's blocked signals are inherited, so SIGTERM may never arrive.
        defer { for p in burners { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        let result = try runCLI(["check", "--baseline", path, "--relative-to", "epoll", "--quiet", "--format", "markdown"], timeout: 300)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("| cell | backend | metric |"))
        #expect(result.stdout.contains("no regression"))
    }

    @Test func aMissingBaselineOrBadThresholdsCannotRun() throws {
        let missing = try runCLI(["check", "--baseline", "/nonexistent/baseline.csv"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("no baseline at /nonexistent/baseline.csv"), "\(missing.stderr)")
        let bad = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(getpid()).json").path
        defer { try? FileManager.default.removeItem(atPath: bad) }
        try "not json".write(toFile: bad, atomically: true, encoding: .utf8)
        let result = try runCLI(["check", "--baseline", try baseline(), "--thresholds", bad])
        #expect(result.status == 1)
        #expect(result.stderr.contains("is not valid"), "\(result.stderr)")
    }

    @Test func baselineShowPrintsTheMachineAndTable() throws {
        let result = try runCLI(["baseline", "show", "--baseline", try baseline()])
        #expect(result.status == 0)
        #expect(result.stdout.contains("machine: "))
        #expect(result.stdout.contains("16 connections × 64 B, depth 1 (median of 3)"))
    }
}
