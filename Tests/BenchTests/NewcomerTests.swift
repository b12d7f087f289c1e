@testable import BenchRunner
@testable import ResultAnalysis
@testable import ResultReporting
import TestSupport
import Testing
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Issue 22: what a newcomer runs into in the first hour — results that survive an
/// interruption, inputs refused before anything runs, answers that do not pass silently.
@Suite(.serialized)
struct NewcomerTests {
    static func temporary(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("iobench-\(name)-\(getpid())").path
    }

    /// Processes whose command line holds `marker` (the servers a run started, found by a value
    /// only they were given).
    static func processes(holding marker: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\0", with: " ").contains(marker)
        }
    }

    @Test func anInterruptedRunKeepsTheRowsItMeasuredAndLeavesNoServer() throws {
        let out = Self.temporary("interrupted") + ".csv"
        defer { try? FileManager.default.removeItem(atPath: out) }
        // A value only this run's servers are given, to find them in /proc afterwards.
        let marker = "--max-connections=\(40_000 + Int(getpid() % 20_000))"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: iobenchPath)
        process.arguments = ["run", "--backends", "epoll,ppoll", "--connections", "4", "--sizes", "64", "--repeat", "4",
                             "--duration", "500ms", "--warmup", "100ms", "--idle-connections", "0", "--quiet", "--out", out,
                             "--server-arg=\(marker)"]
        let stdout = Pipe(), stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        // Each row is in the file as soon as it is measured: wait for two, then press Ctrl-C.
        let twoRows = eventually(timeout: 60) {
            ((try? CSV.read(String(contentsOfFile: out, encoding: .utf8))) ?? []).count >= 2
        }
        #expect(twoRows, "the CSV did not get two rows while the run went on")
        kill(process.processIdentifier, SIGINT)
        let ended = eventually(timeout: 30) { !process.isRunning }
        #expect(ended, "the run did not stop after SIGINT")
        if !ended { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let printed = String(decoding: stdout.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let complaints = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 130, "\(printed)\n\(complaints)")
        // The file is a valid CSV holding every row measured, and the run says how far it got.
        let rows = try CSV.read(String(contentsOfFile: out, encoding: .utf8))
        #expect(rows.count >= 2 && rows.count < 8, "\(rows.count) rows")
        #expect(rows.allSatisfy { $0["valid"] == "yes" && ($0.double("msgs_per_s") ?? 0) > 0 })
        #expect(complaints.contains("interrupted after \(rows.count) of 8 cells"), "\(complaints)")
        #expect(printed.contains("4 connections × 64 B"), "the table of the rows so far: \(printed)")
        // No server outlived it.
        #expect(eventually(timeout: 10) { Self.processes(holding: marker).isEmpty }, "servers still running: \(Self.processes(holding: marker))")
    }

    @Test func anUnwritableOutputIsRefusedBeforeAnyServerStarts() throws {
        let started = Date()
        let result = try runCLI(["run", "--backends", "epoll", "--connections", "4", "--sizes", "64", "--repeat", "1",
                                 "--idle-connections", "0", "--out", "/proc/forbidden.csv"], timeout: 60)
        #expect(result.status == 64, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stderr.contains("/proc/forbidden.csv"), "\(result.stderr)")
        #expect(!result.stderr.contains("[1/"), "a cell ran: \(result.stderr)")
        #expect(Date().timeIntervalSince(started) < 10)
    }

    @Test("inputs that used to fail after other cells ran are refused before the first", arguments: [
        (["--duration", "0s"], "--duration"),
        (["--sizes", "0"], "--sizes"),
        (["--server-cpus", "99"], "--server-cpus 99"),
        (["--variant", "x=epoll --no-such-flag"], "--variant"),
        (["--external", "e=127.0.0.1:1"], "--external e=127.0.0.1:1"),
    ])
    func lateFailingInputsAreUsageErrors(_ extra: [String], _ named: String) throws {
        let out = Self.temporary("refused") + ".csv"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try runCLI(["run", "--backends", "epoll", "--connections", "4", "--sizes", "64", "--repeat", "1",
                                 "--idle-connections", "0", "--quiet", "--out", out] + extra, timeout: 60)
        #expect(result.status == 64, "\(extra): \(result.stdout)\n\(result.stderr)")
        #expect(result.stderr.contains(named), "\(extra): \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out), "\(extra): a CSV was started")
    }

    @Test func aFileThatIsNotAResultsCSVIsRefusedByReport() throws {
        let path = Self.temporary("abc") + ".csv"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "a,b,c\n1,2,3\n".write(toFile: path, atomically: true, encoding: .utf8)
        let result = try runCLI(["report", path])
        #expect(result.status == 1, "\(result.stdout)")
        #expect(result.stderr.contains("has no workload, backend, connections column"), "\(result.stderr)")
        let missing = try runCLI(["report", "/nonexistent.csv"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("no such file") && !missing.stderr.contains("NSCocoaErrorDomain"), "\(missing.stderr)")
        // A reference the run did not measure is refused, not drawn as empty columns.
        let run = try #require(try FileManager.default.contentsOfDirectory(atPath: "results/runs").filter { $0.hasSuffix(".csv") }.sorted().last)
        let nope = try runCLI(["report", "results/runs/" + run, "--reference", "nope"])
        #expect(nope.status == 64 && nope.stderr.contains("--reference nope is not measured"), "\(nope.stderr)")
    }

    @Test("--help shows values as they are typed, each default once", arguments: ["serve", "load", "run", "report", "check", "baseline update", "audit"])
    func helpIsWrittenForPeople(_ command: String) throws {
        let result = try runCLI(command.split(separator: " ").map(String.init) + ["--help"])
        #expect(result.status == 0)
        for leak in ["ListOf", "CPUList", "ByteSize(", "Duration(", "BackendKind("] {
            #expect(!result.stdout.contains(leak), "\(command) --help shows \(leak)")
        }
        // An option's help (its line and the lines wrapped under it) says its default once.
        var blocks: [String] = []
        for line in result.stdout.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("  -") || blocks.isEmpty { blocks.append(String(line)) } else { blocks[blocks.count - 1] += " " + line }
        }
        let doubled = blocks.filter { $0.lowercased().components(separatedBy: "(default").count > 2 }
        #expect(doubled.isEmpty, "\(command): \(doubled)")
    }

    @Test func versionNamesTheCommitAndTheBuild() throws {
        let result = try runCLI(["--version"])
        #expect(result.status == 0)
        let head = try runProcess("/usr/bin/git", ["-C", MachineInfo.packageDirectory(of: iobenchPath), "rev-parse", "HEAD"])
        let commit = String(head.stdout.prefix(12))
        #expect(result.stdout.hasPrefix("iobench ") && result.stdout.contains("(commit \(commit), debug build)"), "\(result.stdout) against \(commit)")
    }

    static var root: URL {
        URL(fileURLWithPath: MachineInfo.packageDirectory(of: iobenchPath))
    }

    @Test func theReadmeIsShortAndWhatItShowsComesFromTheTool() throws {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        #expect(readme.utf8.count < 15_000, "README.md is \(readme.utf8.count) bytes")
        // Its table is what `iobench report` prints for the committed run it names, verbatim.
        let run = "results/runs/2026-12-07T175334Z-vm.csv"
        #expect(readme.contains("iobench report\n\(run)") || readme.contains("iobench report \(run)"))
        let report = try runCLI(["report", Self.root.appendingPathComponent(run).path, "--markdown"])
        #expect(report.status == 0, "\(report.stderr)")
        let table = report.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!table.isEmpty && readme.contains(table), "README.md's table is not what iobench report prints:\n\(table)")
        // Every file it links to exists.
        let links = readme.split(separator: "(").compactMap { part -> String? in
            guard let end = part.firstIndex(of: ")") else { return nil }
            let target = String(part[..<end])
            let file = String(target.split(separator: "#").first ?? "")
            return (file.hasPrefix("docs/") || file.hasPrefix("results/")) ? file : nil
        }
        #expect(links.count >= 8)
        for link in links {
            #expect(FileManager.default.fileExists(atPath: Self.root.appendingPathComponent(link).path), "README.md links to \(link), which is not there")
        }
        // The commands it gives are ones iobench takes: each `iobench SUBCOMMAND` line parses
        // (`--help` appended: nothing runs).
        let commands = readme.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { $0.hasPrefix("iobench ") }
        #expect(!commands.isEmpty)
        for command in commands {
            let words = command.split(separator: " ").dropFirst().prefix { !$0.hasPrefix("#") }.map(String.init)
            let result = try runCLI(words + ["--help"])
            #expect(result.status == 0, "README.md: `\(command)`: \(result.stderr)")
        }
    }

    @Test func everyComparisonEndsWithItsAnswerInWords() throws {
        let unsure = Estimate(value: 0.83, low: 0.55, high: 1.25, confidence: 0.95, count: 3)
        #expect(SummaryTable.verdict("io_uring", against: "epoll", unsure, repetitions: 3)
                == "io_uring against epoll: ×0.83 [0.55, 1.25] server CPU per message: cannot tell with 3 repetitions (try --repeat 10)")
        let less = Estimate(value: 0.83, low: 0.76, high: 0.91, confidence: 0.95, count: 10)
        #expect(SummaryTable.verdict("io_uring", against: "epoll", less, repetitions: 10)
                == "io_uring uses 17% less server CPU per message than epoll [9%, 24%]")
        // A committed run's table carries them, one per server against the reference.
        let report = try runCLI(["report", Self.root.appendingPathComponent("results/runs/2026-12-07T175334Z-vm.csv").path])
        #expect(report.stdout.contains("blocking uses 43% more server CPU per message than epoll [13%, 81%]"), "\(report.stdout)")
        #expect(report.stdout.contains("io_uring against epoll: ×0.96 [0.67, 1.39] server CPU per message: cannot tell with 3 repetitions"), "\(report.stdout)")
    }

    @Test func loadTakesTheShortFlagsWrkUsersType() throws {
        let server = try ServerProcess(executable: iobenchPath, arguments: ["serve", "--backend", "epoll", "--port", "0", "--quit-on-eof"])
        defer { server.stop() }
        let result = try runCLI(["load", "--target", "\(server.address)", "-c", "3", "-d", "300ms", "-t", "1", "-R", "2000", "-s", "100",
                                 "--warmup", "100ms", "--format", "csv"], timeout: 30)
        #expect(result.status == 0, "\(result.stderr)")
        let row = try #require(try CSV.read(result.stdout).first)
        #expect(row["connections"] == "3" && row["size_bytes"] == "100" && row["rate_msgs_per_s"] == "2000", "\(row.values)")
        #expect((row.int("messages") ?? 0) > 0 && row.int("errors") == 0, "\(row.values)")
    }

    @Test("a negative number is named as out of range, not a missing value", arguments: [
        (["run", "--repeat", "-1"], "--repeat -1: must be at least 1"),
        (["run", "--connections", "16,-4"], "--connections -4: must be at least 1"),
        (["serve", "--backend", "epoll", "--port", "-1"], "port -1 is out of range"),
    ])
    func negativeNumbersAreOutOfRange(_ arguments: [String], _ said: String) throws {
        let result = try runCLI(arguments, timeout: 30)
        #expect(result.status == 64, "\(arguments): \(result.stderr)")
        #expect(result.stderr.contains(said) && !result.stderr.contains("Missing value"), "\(arguments): \(result.stderr)")
    }
}
