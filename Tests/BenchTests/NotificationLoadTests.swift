@testable import BenchRunner
@testable import LoadGeneration
@testable import ResultAnalysis
@testable import ResultReporting
import ServerKit
import Protocols
import BackendKit
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The notification load generator's own counting, against real servers: a clean server's
/// totals agree exactly with the server's counters; a server that drops, duplicates,
/// reorders or answers late (`serve --inject-event-fault`) is caught by every pattern.
@Suite(.serialized)
struct NotificationLoadTests {
    func serve(_ pattern: String, _ extra: [String] = [], backend: String = "epoll") throws -> ServerProcess {
        try ServerProcess(executable: iobenchPath, arguments: ["serve", "--backend", backend, "--pattern", pattern, "--port", "0", "--quit-on-eof"] + extra)
    }

    func options(_ server: ServerProcess, _ mode: NotificationLoadOptions.Mode, clients: Int = 20, duration: Double = 1) -> NotificationLoadOptions {
        var o = NotificationLoadOptions(target: server.address)
        o.mode = mode
        o.connections = clients
        o.duration = duration
        o.warmup = 0.2
        o.serverPID = server.pid
        return o
    }

    @Test("push from publishers: every total agrees with the server's counters", arguments: ["epoll", "io_uring", "blocking", "nio"])
    func pushTotalsAgreeWithTheServer(backend: String) throws {
        let server = try serve("push", backend: backend)
        defer { server.stop() }
        var o = options(server, .push)
        o.publishers = 2
        o.eventRate = 400
        let r = try NotificationLoad.run(o)
        let stats = try server.stats()
        #expect(r.errors.isEmpty, "\(r.errors)")
        #expect(r.drained, "not every listener had every event by the end")
        #expect(r.gaps == 0 && r.duplicates == 0 && r.reorders == 0 && r.payloadErrors == 0)
        #expect(r.totalPublished == stats.notification(.eventsPublished))
        #expect(r.totalDeliveries == stats.notification(.eventsDelivered), "load \(r.totalDeliveries), server \(stats.notification(.eventsDelivered))")
        #expect(r.totalDeliveries == r.totalPublished * 20)
        // The window's share: 20 listeners × 400/s × 1 s, give or take the edges.
        #expect(abs(r.deliveries - 8000) < 800, "\(r.deliveries)")
        #expect(r.broadcasts > 300 && r.broadcastCompletion.totalCount == r.broadcasts)
        // One pinned thread can use at most its CPU over the window (the warm-up is not in it).
        #expect(r.generatorUtilization > 0 && r.generatorUtilization <= 1.02, "generator \(r.generatorUtilization)")
        #expect((r.serverCPUSeconds ?? 0) / r.seconds <= 1.02 || backend == "blocking" || backend == "nio")
        #expect(r.serverMicrosecondsPerDelivery != nil && r.serverBytesPerConnection != nil)
        // Bytes on the wire: each delivery is one EVENT frame of 25 + 64 bytes.
        #expect(r.bytesReceived >= r.deliveries * 89)
    }

    @Test("a server that drops, duplicates or reorders push events is caught", arguments: ["drop", "duplicate", "reorder"])
    func pushFaultsAreCaught(kind: String) throws {
        let server = try serve("push", ["--event-rate", "400", "--inject-event-fault", "\(kind):10"])
        defer { server.stop() }
        let r = try NotificationLoad.run(options(server, .push))
        let seen = ["drop": r.gaps, "duplicate": r.duplicates, "reorder": r.reorders]
        // Every 10th event, for each of 20 listeners: about 2 × 400 × 1.2 s × 20 / 10 = 960 faults.
        #expect(seen[kind]! > 500, "\(kind): gaps \(r.gaps), duplicates \(r.duplicates), reorders \(r.reorders)")
        for (other, count) in seen where other != kind { #expect(count == 0, "\(kind) also counted as \(other): \(count)") }
        #expect(r.payloadErrors == 0)
    }

    @Test("a clean server's push events show no fault")
    func pushCleanShowsNoFault() throws {
        let server = try serve("push", ["--event-rate", "400"])
        defer { server.stop() }
        let r = try NotificationLoad.run(options(server, .push))
        #expect(r.errors.isEmpty && r.gaps == 0 && r.duplicates == 0 && r.reorders == 0 && r.payloadErrors == 0)
        #expect(r.deliveries > 6000)
        #expect(r.latency.valueAtPercentile(99) < EventFault.lateNanoseconds)
    }

    @Test("late events are seen late, on every pattern", arguments: NotificationLoadOptions.Mode.allCases)
    func lateEventsAreSeenLate(mode: NotificationLoadOptions.Mode) throws {
        let server = try serve(mode == .push ? "push" : "poll", ["--event-rate", "100", "--inject-event-fault", "late:10"])
        defer { server.stop() }
        var o = options(server, mode)
        o.pollInterval = 0.002
        let r = try NotificationLoad.run(o)
        #expect(r.errors.isEmpty, "\(r.errors)")
        // One event in ten is published 20 ms after its due time (and stamped with it).
        #expect(r.latency.valueAtPercentile(95) >= EventFault.lateNanoseconds, "\(mode): p95 \(r.latency.valueAtPercentile(95))")
        #expect(r.latency.valueAtPercentile(50) < EventFault.lateNanoseconds, "\(mode): p50 \(r.latency.valueAtPercentile(50))")
    }

    @Test("long and short polls: drops and duplicates are caught", arguments: [NotificationLoadOptions.Mode.longPoll, .shortPoll])
    func pollFaultsAreCaught(mode: NotificationLoadOptions.Mode) throws {
        for kind in ["drop", "duplicate"] {
            let server = try serve("poll", ["--event-rate", "400", "--inject-event-fault", "\(kind):10"])
            defer { server.stop() }
            var o = options(server, mode)
            o.pollInterval = 0.02
            let r = try NotificationLoad.run(o)
            let seen = kind == "drop" ? r.gaps : r.duplicates
            #expect(seen > 100, "\(mode) \(kind): gaps \(r.gaps), duplicates \(r.duplicates)")
        }
    }

    @Test("long polls: a reordered answer is caught")
    func longPollReorderIsCaught() throws {
        // Fast events and slow re-arming make answers of several events, where the fault acts.
        let server = try serve("poll", ["--event-rate", "5000", "--inject-event-fault", "reorder:10"])
        defer { server.stop() }
        let r = try NotificationLoad.run(options(server, .longPoll))
        #expect(r.reorders > 100, "reorders \(r.reorders), gaps \(r.gaps), duplicates \(r.duplicates)")
    }

    @Test("short polling counts its polls, empties and bytes as the server does")
    func shortPollCountsAgree() throws {
        // Each client on a topic of its own, each topic an independent Poisson stream.
        let server = try serve("poll", ["--event-rate", "50", "--event-arrivals", "poisson"])
        defer { server.stop() }
        var o = options(server, .shortPoll, clients: 20, duration: 2)
        o.topics = 20
        o.pollInterval = 0.02
        o.eventRate = 50
        o.poissonEvents = true
        let before = try server.stats()
        let r = try NotificationLoad.run(o)
        let after = try server.stats()
        #expect(r.errors.isEmpty && r.gaps == 0 && r.duplicates == 0)
        // 20 clients × 50 polls/s × 2 s in the window; every poll a WAIT the server counted.
        #expect(abs(r.polls - 2000) < 100, "\(r.polls) polls")
        #expect(after.notification(.waits) - before.notification(.waits) >= r.polls)
        // An empty poll is a 21-byte WAIT and a 17-byte TIMEOUT.
        #expect(r.emptyPolls > 0 && r.emptyPollBytes == r.emptyPolls * 38)
        #expect(r.latePolls == 0)
        // e^(−50 × 0.02) = 0.37 empty; the mean notice latency about 10 ms.
        let empty = try #require(r.emptyPollFraction)
        #expect(abs(empty - exp(-1.0)) < 0.08, "empty fraction \(empty)")
        let mean = try #require(r.meanLatency)
        #expect(abs(mean - 10_000_000) < 2_000_000, "mean notice latency \(mean) ns")
    }

    @Test("short polling of jobs: late completions are caught, results checked")
    func shortPollJobs() throws {
        let clean = try serve("poll")
        defer { clean.stop() }
        var o = options(clean, .shortPoll)
        o.pollInterval = 0.01
        o.jobDuration = 0.03
        let r = try NotificationLoad.run(o)
        #expect(r.errors.isEmpty, "\(r.errors)")
        #expect(r.deliveries > 300, "\(r.deliveries) jobs noticed")
        // Judged by percentiles, not the max: one stray scheduling delay on a shared two-core
        // machine must not pass for the fault (CI once saw a clean max of 48 ms).
        #expect(r.latency.valueAtPercentile(99) < EventFault.lateNanoseconds, "p99 \(r.latency.valueAtPercentile(99))")
        let late = try serve("poll", ["--inject-event-fault", "late:5"])
        defer { late.stop() }
        o.target = late.address
        let l = try NotificationLoad.run(o)
        #expect(l.errors.isEmpty, "\(l.errors)")
        // Every 5th job answers 20 ms late: a fifth of the notices are past 20 ms.
        #expect(l.latency.valueAtPercentile(90) >= EventFault.lateNanoseconds, "p90 \(l.latency.valueAtPercentile(90))")
    }

    @Test("long polls that all time out together are answered at their deadlines")
    func simultaneousTimeouts() throws {
        let server = try serve("poll")
        defer { server.stop() }
        // Every WAIT goes at once; the first round of timeouts falls in the window, the next after it.
        var o = options(server, .longPoll, clients: 500, duration: 1.2)
        o.warmup = 0
        o.holdTimeoutMilliseconds = 1000
        let r = try NotificationLoad.run(o)
        let stats = try server.stats()
        #expect(r.errors.isEmpty)
        #expect(r.timeouts == 500, "\(r.timeouts) timeouts")
        #expect(stats.notification(.waitsTimedOut) >= 500)
        #expect(r.timeoutLateness.totalCount == 500 && r.timeoutLateness.max < 50_000_000, "max lateness \(r.timeoutLateness.max) ns")
    }

    @Test("a stalled subscriber is not read, and the others get everything")
    func stalledSubscribers() throws {
        // (The server's policy against a stalled subscriber is proven in the conformance suite.)
        let server = try serve("push", ["--max-queue", "64"])
        defer { server.stop() }
        var o = options(server, .push, clients: 21)
        o.stalled = 1
        o.publishers = 1
        o.eventRate = 200
        o.eventSize = 1000
        let r = try NotificationLoad.run(o)
        #expect(r.errors.isEmpty && r.gaps == 0, "\(r.errors), gaps \(r.gaps)")
        #expect(r.drained)
        // Only the 20 listening subscribers count; the stalled one never read.
        #expect(r.totalDeliveries == r.totalPublished * 20)
        #expect(r.broadcasts > 100, "\(r.broadcasts) broadcasts reached every listener")
    }
}

/// `iobench run --pattern` end to end, and its table.
@Suite(.serialized)
struct NotificationComparisonTests {
    @Test func aSmallComparisonWritesItsCSVAndTable() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-patterns-\(getpid()).csv").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try runCLI(["run", "--pattern", "push,long-poll,short-poll", "--clients", "20", "--backends", "epoll,io_uring",
                                 "--repeat", "1", "--duration", "400ms", "--warmup", "100ms", "--poll-intervals", "20ms",
                                 "--event-rate", "50", "--quiet", "--out", out], timeout: 120)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let rows = try CSV.read(String(contentsOfFile: out, encoding: .utf8))
        #expect(rows.count == 6)
        #expect(Set(rows.compactMap { $0["workload"] }) == ["push", "long-poll", "short-poll"])
        #expect(Set(rows.map(NotificationWorkload.label)) == ["push", "long-poll", "short-poll 20ms"])
        for row in rows {
            #expect(row.int("errors") == 0 && row.int("gaps") == 0, "\(NotificationWorkload.label(row)) \(row["backend"] ?? ""): \(row["error_detail"] ?? "")")
            #expect((row.int("deliveries") ?? 0) > 0)
            #expect(row.double(.serverCPUPerEvent) != nil && row["command"]?.contains("--pattern push,long-poll,short-poll") == true)
            // The columns the echo and rpc rows share, under their names and formats.
            #expect(row["connections"] == "20" && row["method"] == "timed" && row["cell_command"]?.hasPrefix("iobench serve") == true, "\(row.values)")
            #expect(row["server_cpus"]?.contains(",") == false && row["valid"] == "yes", "\(row.values)")
            #expect((row.double("generator_cpu_util") ?? 2) <= 1.02)
        }
        // One ★ per backend, and the report reads the CSV back into the same table.
        let starred = result.stdout.split(separator: "\n").filter { $0.hasPrefix("| epoll") || $0.hasPrefix("| io_uring") }
        #expect(starred.count == 2 && starred.allSatisfy { $0.components(separatedBy: "★").count == 2 }, "\(result.stdout)")
        let report = try runCLI(["report", "--markdown", out])
        #expect(report.status == 0)
        #expect(report.stdout.contains("| backend | figure | push | long-poll | short-poll 20ms |"), "\(report.stdout)")
    }

    @Test func aCountedPushRunCountsTheServersWorkPerDeliveredEvent() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-push-counted-\(getpid()).csv").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try runCLI(["run", "--pattern", "push", "--method", "counted", "--backends", "epoll", "--clients", "20", "--event-rate", "20",
                                 "--repeat", "1", "--duration", "1s", "--warmup", "500ms", "--quiet", "--out", out], timeout: 120)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let rows = try CSV.read(String(contentsOfFile: out, encoding: .utf8))
        let row = try #require(rows.first)
        #expect(rows.count == 1 && row["method"] == "counted" && row["workload"] == "push" && row.int("errors") == 0, "\(row.values)")
        // Every subscriber got its events (checked by sequence), and the server's work was counted per delivery.
        #expect((row.int("deliveries") ?? 0) > 100 && row.int("gaps") == 0, "\(row.values)")
        #expect((row.double(.userInstructionsPerEvent) ?? 0) > 100 && row.double(.countedSyscallsPerEvent) != nil, "\(row.values)")
        #expect((row["latency_p99_us"] ?? "").isEmpty && (row["server_cpu_us_per_event"] ?? "").isEmpty, "times under valgrind are not kept")
        #expect(result.stdout.contains("instructions/event"), "\(result.stdout)")
    }

    @Test func aLoopThatFailsMarksTheNotificationRowInvalidAndTheRunFailed() throws {
        // The same runner as echo's: the server's failed loop (injected 300 ms after start,
        // inside every attempt's window) makes the row invalid, says why, and fails the run.
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-push-failed-\(getpid()).csv").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try runCLI(["run", "--pattern", "push", "--backends", "epoll", "--clients", "10", "--event-rate", "50",
                                 "--repeat", "1", "--duration", "800ms", "--warmup", "100ms", "--quiet", "--out", out,
                                 "--server-arg=--inject-loop-failure-after=300ms"], timeout: 120)
        #expect(result.status == 1, "\(result.stdout)\n\(result.stderr)")
        let rows = try CSV.read(String(contentsOfFile: out, encoding: .utf8))
        let row = try #require(rows.first)
        #expect(rows.count == 1)
        #expect(row["valid"]?.hasPrefix("the server reported a failed loop: ") == true && row["valid"]?.contains("epoll loop 0 stopped") == true,
                "\(row.values)")
        #expect(result.stderr.contains("the server reported a failed loop"), "\(result.stderr)")
    }

    @Test func badPatternsAreUsageErrors() throws {
        let result = try runCLI(["run", "--pattern", "push,carrier-pigeon"])
        #expect(result.status == 64)
        #expect(result.stderr.contains("carrier-pigeon is not one of"), "\(result.stderr)")
    }
}
