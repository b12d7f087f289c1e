@testable import BenchRunner
@testable import LoadGeneration
@testable import ResultAnalysis
@testable import ResultReporting
import Backends
import ServerKit
import Protocols
import BackendKit
import Foundation
import TestSupport
import Testing

@Suite struct ReportTests {
    @Test func csvRoundTripsAwkwardFields() throws {
        var a = ResultRow()
        a["backend"] = "epoll"
        a["command"] = "iobench run --sizes 64,4k --note \"quoted\""
        a["cpu_model"] = "AMD EPYC, 2 cores\nsecond line"
        a["msgs_per_s"] = "123456.7"
        var b = ResultRow()
        b["backend"] = "io_uring"
        b["p99_us"] = "88.5"
        let text = CSV.write([a, b])
        let back = try CSV.read(text)
        #expect(back.count == 2)
        for (original, read) in zip([a, b], back) {
            for (column, value) in original.values { #expect(read[column] == value, "\(column)") }
            #expect(Set(read.values.keys) == Set(ResultRow.columnNames))
        }
        #expect(back[0].double("msgs_per_s") == 123456.7)
    }

    @Test func csvReadRejectsRaggedRows() {
        #expect(throws: CSV.ParseError.self) { try CSV.read("a,b\n1,2,3\n") }
        #expect(throws: CSV.ParseError.self) { try CSV.read("a\n\"open") }
    }

    @Test func histogramsMergeAcrossGeneratorThreads() {
        var first = LatencyHistogram.latency()
        var second = LatencyHistogram.latency()
        for v in 1...1000 { first.record(UInt64(v) * 1000) }            // 1 µs … 1 ms
        for v in 1...1000 { second.record(UInt64(v) * 1000 + 1_000_000) } // 1 ms … 2 ms
        var merged = LatencyHistogram.latency()
        merged.add(first)
        merged.add(second)
        #expect(merged.totalCount == 2000)
        #expect(merged.valuesAreEquivalent(merged.valueAtPercentile(50), 1_000_000))
        #expect(merged.valuesAreEquivalent(merged.max, 2_000_000))
        #expect(merged.valuesAreEquivalent(merged.min, 1000))
        // 3 significant digits: a recorded value comes back within 0.1%.
        let p99 = Double(merged.valueAtPercentile(99))
        #expect(abs(p99 - 1_980_000) / 1_980_000 < 0.001)
    }

    @Test func openLoopScheduleKeepsTheRateWithoutDrift() {
        var schedule = OpenLoopSchedule(totalRate: 3, threads: 1, index: 0, start: 1_000)
        var due: [UInt64] = []
        for _ in 0..<4 { due.append(schedule.nextDue); schedule.advance() }
        // 1/3 s does not divide into whole nanoseconds; it must not accumulate rounding error.
        #expect(due == [1_000, 333_334_333, 666_667_666, 1_000_001_000])
        var many = OpenLoopSchedule(totalRate: 100_000, threads: 1, index: 0, start: 0)
        for _ in 0..<100_000 { many.advance() }
        #expect(many.nextDue == 1_000_000_000)
    }

    @Test func openLoopThreadsInterleave() {
        let threads = (0..<4).map { OpenLoopSchedule(totalRate: 4000, threads: 4, index: $0, start: 0) }
        // 1000/s each, i.e. every 1 ms, offset by a quarter of that.
        #expect(threads.map(\.interval) == [1e6, 1e6, 1e6, 1e6])
        #expect(threads.map(\.nextDue) == [0, 250_000, 500_000, 750_000])
    }

    @Test func bottleneckVerdicts() {
        #expect(Bottleneck.verdict(serverUtilization: 0.97, generatorUtilization: 0.5) == "server")
        #expect(Bottleneck.verdict(serverUtilization: 0.5, generatorUtilization: 0.99) == "generator")
        #expect(Bottleneck.verdict(serverUtilization: 0.9, generatorUtilization: 0.95) == "generator")
        #expect(Bottleneck.verdict(serverUtilization: 0.3, generatorUtilization: 0.4) == "neither")
    }

    @Test func summaryTableShowsMediansRatiosAndSpreadWarnings() {
        func row(_ backend: String, _ rep: Int, _ rate: Double, _ cpu: Double) -> ResultRow {
            ResultRow(["workload": "echo", "backend": backend, "connections": "128", "size_bytes": "64", "depth": "1",
                       "rate_msgs_per_s": "", "server_threads": "1", "repetition": "\(rep)",
                       "msgs_per_s": "\(rate)", "server_cpu_us_per_msg": "\(cpu)", "errors": "0", "bottleneck": "server"])
        }
        // The machine drifts between repetitions (epoll 100k, 200k, 150k); io_uring is 1.1× epoll
        // in two of the three back-to-back pairs.
        let rows = [row("epoll", 1, 100_000, 5), row("epoll", 2, 200_000, 5), row("epoll", 3, 150_000, 5),
                    row("io_uring", 1, 110_000, 4), row("io_uring", 2, 220_000, 4), row("io_uring", 3, 90_000, 4)]
        let text = SummaryTable.render(rows, reference: "epoll")
        #expect(text.contains("128 connections × 64 B, depth 1 (median of 3)"))
        #expect(text.contains("150.0k  [100.0k, 200.0k] 75%"))  // three values: min–max, which covers 75%
        #expect(text.contains("0.90 [0.38, 2.14]"))  // geometric mean of the paired ratios 1.10, 1.10, 0.60, t-interval
        #expect(!text.contains("0.73"))  // not the ratio of the medians, 110k / 150k
        #expect(text.contains("0.80 [0.80, 0.80]"))  // server CPU ratio 4 / 5 in every pair
        #expect(text.contains("geometric mean of per-repetition ratios"))
        // Spread warnings: one line by default, each with --verbose.
        #expect(text.contains("2 figures (messages/s or server CPU per message of one server in one cell) spread more than 10%"))
        #expect(!text.contains("io_uring: msgs_per_s spread"))
        let verbose = SummaryTable.render(rows, reference: "epoll", verbose: true)
        #expect(verbose.contains("io_uring: msgs_per_s spread"))
        #expect(!verbose.contains("server_cpu_us_per_msg spread"))  // every repetition the same
    }
}

/// `iobench run` end to end: a tiny matrix, its CSV read back by the tool's own reader.
@Suite(.serialized) struct RunCommandTests {
    @Test func anExternalServerIsMeasuredBesideTheBackends() throws {
        let external = try ServerProcess(executable: iobenchPath, arguments: ["serve", "--backend", "blocking", "--port", "0", "--quit-on-eof"])
        defer { external.stop() }
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-ext-\(getpid()).csv").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try runCLI(["run", "--backends", "epoll", "--external", "peer=\(external.address)",
                                 "--external-pid", "peer=\(external.pid)", "--connections", "2", "--sizes", "64",
                                 "--repeat", "1", "--duration", "300ms", "--warmup", "100ms", "--idle-connections", "0",
                                 "--out", out, "--quiet"], timeout: 60)
        #expect(result.status == 0, "\(result.stderr)")
        let rows = try CSV.read(try String(contentsOfFile: out, encoding: .utf8))
        let peer = try #require(rows.first { $0["backend"] == "peer" })
        #expect((peer.double("msgs_per_s") ?? 0) > 0)
        #expect((peer.double("server_cpu_us_per_msg") ?? 0) > 0, "the external's CPU comes from its pid")
        #expect(peer["syscalls_per_msg"] == "", "an external server has no counters to read")
        #expect(result.stdout.contains("peer"))
    }

    @Test func badExternalsAreUsageErrors() throws {
        let noName = try runCLI(["run", "--external", "127.0.0.1:7000"])
        #expect(noName.status == 64 && noName.stderr.contains("is not NAME=HOST:PORT"), "\(noName.stderr)")
        let taken = try runCLI(["run", "--external", "epoll=127.0.0.1:7000"])
        #expect(taken.status == 64 && taken.stderr.contains("is taken"), "\(taken.stderr)")
        let pid = try runCLI(["run", "--external", "x=127.0.0.1:7000", "--external-pid", "x=999999999"])
        #expect(pid.status == 64 && pid.stderr.contains("not the id of a running process"), "\(pid.stderr)")
    }

    @Test func aVariantIsMeasuredAsAServerOfItsOwn() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-variant-\(getpid()).csv").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try runCLI(["run", "--backends", "io_uring", "--variant", "io_uring+wait=io_uring --batch-wait 200us",
                                 "--connections", "64", "--sizes", "64", "--repeat", "1", "--duration", "300ms",
                                 "--warmup", "100ms", "--idle-connections", "0", "--out", out, "--quiet"], timeout: 60)
        #expect(result.status == 0, "\(result.stderr)")
        let rows = try CSV.read(try String(contentsOfFile: out, encoding: .utf8))
        #expect(rows.map { $0["backend"] ?? "" }.sorted() == ["io_uring", "io_uring+wait"])
        let variant = try #require(rows.first { $0["backend"] == "io_uring+wait" })
        #expect((variant.double("msgs_per_s") ?? 0) > 0 && variant["errors"] == "0")
        #expect(variant.double("io_uring_enter_per_msg") != nil, "a variant is our server: its counters are read")
        #expect(variant["server_threads"] == "1")
        // The recorded command runs again as it stands: the variant's spec stays one word.
        #expect(variant["command"]?.contains("--variant 'io_uring+wait=io_uring --batch-wait 200us' --connections 64") == true, "\(variant["command"] ?? "")")
        #expect(result.stdout.contains("io_uring+wait"))
        // The report compares against any server of the run and prints each CSV given.
        let report = try runCLI(["report", "--reference", "io_uring+wait", out, out])
        #expect(report.status == 0, "\(report.stderr)")
        #expect(report.stdout.split(separator: "\n").filter { $0.hasPrefix("run ") }.count == 2, "\(report.stdout)")
        #expect(report.stdout.contains("×io_uring+wait"))
    }

    @Test func badVariantsAreUsageErrors() throws {
        let noBackend = try runCLI(["run", "--variant", "x=kqueue --fast"])
        #expect(noBackend.status == 64 && noBackend.stderr.contains("'kqueue' is not a backend"), "\(noBackend.stderr)")
        let noName = try runCLI(["run", "--variant", "io_uring --batch-wait 50us"])
        #expect(noName.status == 64 && noName.stderr.contains("is not NAME=BACKEND OPTIONS"), "\(noName.stderr)")
        let taken = try runCLI(["run", "--variant", "epoll=io_uring"])
        #expect(taken.status == 64 && taken.stderr.contains("is a backend's name"), "\(taken.stderr)")
        let twice = try runCLI(["run", "--variant", "a=epoll", "--external", "a=127.0.0.1:7000"])
        #expect(twice.status == 64 && twice.stderr.contains("is given twice"), "\(twice.stderr)")
        let reference = try runCLI(["run", "--backends", "epoll", "--reference", "c-floor"])
        #expect(reference.status == 64 && reference.stderr.contains("--reference c-floor is not measured in this run"), "\(reference.stderr)")
    }

    /// On a terminal (a real pty) a bar with the cell, its repetition and an ETA, redrawn in
    /// place; redirected, one plain line per cell; with --quiet, nothing.
    @Test func progressIsABarOnATerminalAndLinesWhenRedirected() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-progress-\(getpid()).csv").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let arguments = ["run", "--backends", "epoll", "--connections", "4", "--sizes", "64", "--repeat", "2", "--duration", "300ms",
                         "--warmup", "100ms", "--idle-connections", "0", "--out", out]
        let redirected = try runCLI(arguments, timeout: 120)
        #expect(redirected.status == 0, "\(redirected.stderr)")
        let lines = redirected.stderr.split(separator: "\n").filter { $0.hasPrefix("iobench: [") }
        #expect(lines.count == 2 && lines[0].hasPrefix("iobench: [1/2] epoll 4 conns 64 B depth 1 rep 1/2 (ETA ")
                && lines[1].hasPrefix("iobench: [2/2] epoll 4 conns 64 B depth 1 rep 2/2 (ETA "), "\(redirected.stderr)")
        #expect(!redirected.stderr.contains("\r") && redirected.stderr.contains("iobench: 2 cells in "), "\(redirected.stderr)")
        let quiet = try runCLI(arguments + ["--quiet"], timeout: 120)
        #expect(quiet.status == 0 && !quiet.stderr.contains("[1/2]"), "\(quiet.stderr)")
        // The same run on a pseudo-terminal: what a person at a terminal sees.
        let pty = """
        import os, pty, sys
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(sys.argv[1], sys.argv[1:])
        out = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(out.decode("utf-8", "replace"))
        sys.exit(os.waitstatus_to_exitcode(status))
        """
        // A window of 1.5 s, so the bar shows the window's live figures at least once.
        let longer = arguments.map { $0 == "300ms" ? "1500ms" : $0 }
        let terminal = try runProcess("/usr/bin/env", ["python3", "-c", pty, iobenchPath] + longer, timeout: 120)
        #expect(terminal.status == 0, "\(terminal.stdout)")
        #expect(terminal.stdout.contains("\r[--------------------] 1/2 epoll 4 conns 64 B depth 1 rep 1/2"), "\(terminal.stdout)")
        #expect(terminal.stdout.contains("] 2/2 epoll 4 conns 64 B depth 1 rep 2/2") && terminal.stdout.contains(" · ETA "), "\(terminal.stdout)")
        #expect(terminal.stdout.contains("msgs/s · ETA"), "no live figure in the bar: \(terminal.stdout)")
        #expect(!terminal.stdout.contains("iobench: [1/2]"), "plain lines on a terminal: \(terminal.stdout)")
    }

    @Test func aLoopThatFailsMarksTheServerFailedAndItsRowsInvalid() throws {
        // Every event-loop backend's loop takes its failed-wait path 500 ms after start, inside
        // the window; the blocking server, which has no loop, is the control.
        let loops = Backends.all.filter { $0.threading == .eventLoops }.map(\.kind.rawValue)
        #expect(loops.count >= 3)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-failed-\(getpid()).csv").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try runCLI(["run", "--backends", (loops + ["blocking"]).joined(separator: ","), "--connections", "4", "--sizes", "64",
                                 "--repeat", "1", "--duration", "1s", "--warmup", "100ms", "--idle-connections", "0", "--out", out, "--quiet",
                                 "--server-arg=--inject-loop-failure-after=500ms"], timeout: 180)
        #expect(result.stdout.contains("left out: their window could not be trusted"), "\(result.stdout)")
        let rows = try CSV.read(try String(contentsOfFile: out, encoding: .utf8))
        for backend in loops {
            let row = try #require(rows.first { $0["backend"] == backend }, "\(backend) has no row")
            #expect(row["valid"]?.hasPrefix("the server reported a failed loop: ") == true, "\(backend): \(row["valid"] ?? "")")
            #expect(row["valid"]?.contains("loop 0 stopped: its wait failed") == true, "\(backend): \(row["valid"] ?? "")")
        }
        #expect(rows.first { $0["backend"] == "blocking" }?["valid"] == "yes")
        // The server says so itself: a stats line with its failure, and null while it has none.
        let server = try ServerProcess(executable: iobenchPath, arguments: ["serve", "--backend", "epoll", "--port", "0", "--quit-on-eof",
                                                                            "--inject-loop-failure-after=100ms"])
        defer { server.stop() }
        #expect(try server.stats().failure == nil)
        usleep(400_000)
        #expect(try server.stats().failure?.contains("epoll loop 0 stopped") == true)
    }

    @Test func idleConnectionsBesideTheActiveOnesAreHeldThroughTheCell() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-beside-\(getpid()).csv").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try runCLI(["run", "--backends", "epoll,ppoll", "--connections", "4", "--sizes", "64", "--repeat", "1",
                                 "--duration", "300ms", "--warmup", "100ms", "--idle-connections", "0", "--idle-beside", "300",
                                 "--out", out, "--quiet"], timeout: 120)
        #expect(result.status == 0, "\(result.stderr)")
        let rows = try CSV.read(try String(contentsOfFile: out, encoding: .utf8))
        #expect(rows.count == 2)
        for row in rows {
            #expect(row["idle_beside"] == "300" && row["valid"] == "yes" && row["errors"] == "0", "\(row)")
            #expect((row.double("msgs_per_s") ?? 0) > 0)
        }
        let refused = try runCLI(["run", "--method", "counted", "--backends", "epoll", "--idle-beside", "10"])
        #expect(refused.status == 64 && refused.stderr.contains("--idle-beside applies to timed cells"), "\(refused.stderr)")
    }

    @Test func aTinyRunWritesACSVThatReadsBack() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-run-\(getpid()).csv").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try runCLI(["run", "--backends", "epoll,io_uring", "--connections", "4", "--sizes", "64",
                                 "--repeat", "2", "--duration", "300ms", "--warmup", "100ms", "--server-cpus", "0", "--client-cpus", "1",
                                 "--idle-connections", "200", "--out", out, "--quiet"], timeout: 120)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("4 connections × 64 B, depth 1 (median of 2)"))
        #expect(result.stdout.contains("idle connections"))
        let rows = try CSV.read(try String(contentsOfFile: out, encoding: .utf8))
        let echo = rows.filter { $0["workload"] == "echo" }
        #expect(echo.count == 4)
        #expect(Set(echo.compactMap { $0["backend"] }) == ["epoll", "io_uring"])
        // The backend order rotates between repetitions.
        #expect(echo.map { $0["backend"]! } == ["epoll", "io_uring", "io_uring", "epoll"])
        for row in echo {
            #expect((row.double("msgs_per_s") ?? 0) > 0)
            #expect((row.double("server_cpu_us_per_msg") ?? 0) > 0)
            #expect((row.double("syscalls_per_msg") ?? 0) > 0)
            #expect(row["errors"] == "0")
            #expect(["server", "generator", "neither"].contains(row["bottleneck"] ?? ""))
            #expect(row["command"]?.hasPrefix("iobench run --backends epoll,io_uring") == true)
            #expect(row["kernel"]?.isEmpty == false)
            #expect(row["server_cpus"] == "0" && row["client_cpus"] == "1")
            // A server pinned to one CPU cannot use more: the CPU window is the message window.
            #expect((row.double("server_cpu_util") ?? 9) <= 1.02, "\(row["server_cpu_util"] ?? "")")
            #expect(row["valid"] == "yes" && row["method"] == "timed" && row["build_config"] == "debug")
        }
        let idle = rows.filter { $0["workload"] == "idle" }
        #expect(idle.count == 2)
        #expect(idle.allSatisfy { $0.int("connections") == 200 && $0.double("idle_rss_bytes_per_conn") != nil && $0["errors"] == "0" })
    }
}

@Suite struct ResultsDocumentationTests {
    @Test func resultsReadmeHoldsTheGeneratedSchema() throws {
        // results/README.md documents every column exactly as `iobench report --schema` prints it.
        let readme = try String(contentsOfFile: "results/README.md", encoding: .utf8)
        let schema = try runCLI(["report", "--schema"])
        #expect(schema.status == 0)
        #expect(readme.contains(schema.stdout), "regenerate the table in results/README.md with 'iobench report --schema'")
        for column in ResultRow.columns { #expect(readme.contains("| `\(column.name)` |"), "\(column.name) is undocumented") }
    }

    @Test func auditFindsAndWithdrawsImpossibleRows() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-audit-\(getpid()).csv").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let rows = [
            ResultRow(["backend": "blocking", "connections": "128", "repetition": "1", "server_cpus": "0",
                       "server_cpu_util": "1.276", "server_cpu_us_per_msg": "9.86", "msgs_per_s": "100000", "bottleneck": "server"]),
            ResultRow(["backend": "epoll", "connections": "128", "repetition": "1", "server_cpus": "0 1",
                       "server_cpu_util": "1.276", "server_cpu_us_per_msg": "9.86", "msgs_per_s": "100000"]),
        ]
        try CSV.write(rows).write(toFile: path, atomically: true, encoding: .utf8)
        let found = try runCLI(["audit", path])
        #expect(found.status == 1)
        #expect(found.stdout.contains("blocking, 128 connections, repetition 1: the server used 1.276 CPUs but was pinned to 1"), "\(found.stdout)")
        #expect(!found.stdout.contains("epoll"), "two CPUs allow 1.276")
        #expect(try runCLI(["audit", "--withdraw", path]).status == 0)
        let after = try CSV.read(String(contentsOfFile: path, encoding: .utf8))
        #expect(after[0]["server_cpu_util"] == "" && after[0]["server_cpu_us_per_msg"] == "" && after[0]["bottleneck"] == "")
        #expect(after[0]["msgs_per_s"] == "100000", "the other figures stay as measured")
        #expect(after[0]["valid"]?.hasPrefix("withdrawn by iobench audit: the server used 1.276 CPUs") == true)
        #expect(after[1]["server_cpu_util"] == "1.276")
        #expect(try runCLI(["audit", path]).status == 0)
    }
}

@Suite struct ProcessProbeTests {
    @Test func readsThisProcessFromProc() throws {
        let sample = try #require(ProcessProbe(pid: getpid()).sample())
        #expect(sample.residentBytes > 1 << 20)
        #expect(sample.peakResidentBytes >= sample.residentBytes)
        #expect(sample.threads >= 1)
        #expect(sample.contextSwitchesByThread[Int(getpid())] != nil)
        #expect(sample.cpuSeconds > 0)
    }

    @Test func statusFieldsParseWithTabs() {
        #expect(ProcessProbe.field("Name:\tx\nVmRSS:\t    1234 kB\nThreads:\t7\n", "VmRSS:") == 1234)
        #expect(ProcessProbe.field("Threads:\t7\n", "Threads:") == 7)
    }
}

@Suite struct MetricRegistryTests {
    @Test func theSchemaNamesEachColumnOnceAndEveryMetricComesFromTheRegistry() {
        let names = ResultRow.schema.map(\.name)
        #expect(Set(names).count == names.count, "a column is listed twice: \(names)")
        // The regression check judges registry metrics that the CSV carries, each with a default threshold.
        for checked in CheckedMetric.all {
            #expect(names.contains(checked.column), "\(checked.id) is judged but not a CSV column")
            #expect(Thresholds.defaults.metrics[checked.id] != nil, "\(checked.id) has no default threshold")
            #expect(checked.metric.polarity != .neither)
        }
        #expect(Set(CheckedMetric.all.map(\.id)).count == CheckedMetric.all.count)
        // The notification table's figures are columns of the notification CSV.
        for metric in Metric.notificationTable { #expect(NotificationDriver.columns.contains(metric.column), "\(metric) is not a notification column") }
    }

    @Test func aMetricIsWrittenAsTheRegistrySaysAndReadBack() {
        var row = ResultRow()
        row.set(.serverCPUPerMessage, 12.345678)
        row.set(.allocationsPerMessage, 0.5)
        row.set(.serverPeakRSS, 2048.4)
        row.set(.latencyP99, .infinity)
        #expect(row["server_cpu_us_per_msg"] == "12.346" && row["allocations_per_msg"] == "0.5000" && row["server_rss_peak_kb"] == "2048")
        #expect(row[.latencyP99] == "", "a figure that is not finite is left empty")
        #expect(row.double(.serverCPUPerMessage) == 12.346)
        #expect(Metric.eventLatencyP99.display.format(1234) == "1.23" && Metric.eventLatencyP99.display.label == "latency p99 ms")
        #expect(Metric.serverCPUPerMessage.axisTitle(logScale: true) == "server CPU per message (µs, log scale)")
    }
}

@Suite struct ResultUpgradeTests {
    @Test func aComparisonWrittenBeforeTheSharedNamesIsReadAndRewrittenUnderThem() throws {
        let old = """
        run_id,cell,backend,repetition,server_cpus,client_cpus,pattern,clients,poll_interval_ms,server_cpu_us_per_event,run_command,errors,command
        r1,"push, 1% stalled",epoll,1,"0,1",2,push,1000,,3.5,iobench run --pattern push-stalled,0,iobench serve --backend epoll & iobench load
        r1,short-poll 100ms,epoll,1,0,1,short-poll,1000,100.0,9.25,iobench run --pattern short-poll,0,iobench serve --backend epoll --pattern poll & iobench load

        """
        let text = try #require(try ResultUpgrade.upgrade(csv: old))
        let rows = try CSV.read(text)
        #expect(text.hasPrefix("run_id,workload,method,backend,repetition,server_cpus,client_cpus,connections,poll_interval_ms,server_cpu_us_per_event,command,errors,cell_command\n"), "\(text)")
        #expect(rows.map { $0["workload"] } == ["push-stalled", "short-poll"])
        #expect(rows.map(NotificationWorkload.label) == ["push, 1% stalled", "short-poll 100ms"], "the table and charts label the cells as before")
        #expect(rows[0]["server_cpus"] == "0 1" && rows[0]["connections"] == "1000" && rows[0]["method"] == "timed")
        #expect(rows[1]["command"] == "iobench run --pattern short-poll" && rows[1]["cell_command"]?.hasPrefix("iobench serve") == true)
        #expect(rows.allSatisfy(NotificationWorkload.isNotification))
        // Upgraded once, it is current; an echo run never needed it.
        #expect(try ResultUpgrade.upgrade(csv: text) == nil)
        #expect(try ResultUpgrade.upgrade(csv: String(contentsOfFile: "results/baseline.csv", encoding: .utf8)) == nil)
        // Read in memory (as `iobench report` reads an old file), the same rows as the rewritten file.
        let inMemory = ResultUpgrade.upgrade(try CSV.read(old))
        #expect(inMemory.map { $0.values.filter { !$0.value.isEmpty } } == rows.map { $0.values.filter { !$0.value.isEmpty } })
    }
}
