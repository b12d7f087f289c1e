@testable import BenchRunner
@testable import LoadGeneration
@testable import ResultAnalysis
@testable import ResultReporting
import NIOPeer
import IoUring
import Epoll
import Blocking
import Backends
import ServerKit
import Protocols
import BackendKit
import Foundation
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The load generator against real servers: our backends as child processes, and deliberately
/// broken echo servers run in this process.
@Suite(.serialized)
struct LoadGeneratorTests {
    @Test("closed loop against every backend: verified, counted, timed", arguments: Backends.kinds)
    func closedLoopAgainstEachBackend(kind: BackendKind) throws {
        let server = try ServerProcess(executable: iobenchPath, arguments: ["serve", "--backend", kind.rawValue, "--port", "0", "--quit-on-eof"])
        defer { server.stop() }
        var options = LoadOptions(target: server.address)
        options.connections = 8
        options.messageSize = 1000
        options.depth = 4
        options.duration = 0.5
        options.warmup = 0.1
        let result = try LoadGenerator.run(options)
        #expect(result.errors == 0, "\(kind): \(result.errorDetails)")
        #expect(result.messages > 100, "\(kind): only \(result.messages) messages")
        #expect(result.latency.totalCount == result.messages)
        #expect(result.latency.valueAtPercentile(50) > 0)
        #expect(result.generatorCPUSeconds > 0)
        #expect(result.uncorrectedLatency == nil && result.sendLag == nil)
        // Echoes still in flight when the generator stopped may take a moment to be counted.
        #expect(try eventually { let s = try server.stats(); return s.bytesIn == s.bytesOut })
    }

    @Test func openLoopKeepsItsRateAndReportsLag() throws {
        let server = try ServerProcess(executable: iobenchPath, arguments: ["serve", "--backend", "epoll", "--port", "0", "--quit-on-eof"])
        defer { server.stop() }
        var options = LoadOptions(target: server.address)
        options.connections = 4
        options.rate = 2000
        options.threads = 2
        options.duration = 1
        options.warmup = 0.2
        let result = try LoadGenerator.run(options)
        #expect(result.errors == 0)
        // 2000/s for one second; the window edges cost a few messages either way.
        #expect(abs(Double(result.messages) - 2000) < 200, "open loop sent \(result.messages) in 1 s at 2000/s")
        let uncorrected = try #require(result.uncorrectedLatency)
        let lag = try #require(result.sendLag)
        #expect(uncorrected.totalCount == result.messages)
        #expect(lag.totalCount > 0)
        // Latency from the scheduled time can never be shorter than from the actual send.
        #expect(result.latency.valueAtPercentile(99) >= uncorrected.valueAtPercentile(99))
    }

    @Test func aCorruptingServerIsCaught() throws {
        let server = try BrokenServer(mode: .flipByte(at: 5000))
        defer { server.stop() }
        var options = LoadOptions(target: server.address)
        options.connections = 2
        options.messageSize = 64
        options.duration = 0.5
        options.warmup = 0
        let result = try LoadGenerator.run(options)
        #expect(result.errors >= 1)
        #expect(result.errorDetails.contains { $0.contains("byte 5000 of its answers (message 78) is wrong") }, "\(result.errorDetails)")
    }

    @Test func aServerThatDropsBytesIsCaught() throws {
        let server = try BrokenServer(mode: .dropByte(at: 3000))
        defer { server.stop() }
        var options = LoadOptions(target: server.address)
        options.connections = 1
        options.messageSize = 100
        options.duration = 0.5
        options.warmup = 0
        let result = try LoadGenerator.run(options)
        #expect(result.errors == 1, "\(result.errorDetails)")
        #expect(result.errorDetails.first?.contains("byte 3000 of its answers (message 30) is wrong") == true, "\(result.errorDetails)")
    }

    @Test func aDroppedBlockOfTheOldStreamPeriodIsCaught() throws {
        // The stream used to repeat every 65,521 bytes: dropping exactly that much went unseen
        // with more than 64 KiB in flight. The stream now repeats after more than 2^32 bytes.
        for length in [65_521, 65_537, 65_539] {
            let server = try BrokenServer(mode: .dropBlock(at: 8_192, length: length))
            defer { server.stop() }
            var options = LoadOptions(target: server.address)
            options.connections = 1
            options.messageSize = 4096
            options.depth = 48  // 192 KiB in flight
            options.duration = 0.5
            options.warmup = 0
            options.drainTimeout = 0.5
            let result = try LoadGenerator.run(options)
            #expect(result.errors > 0, "a dropped block of \(length) bytes went unseen")
        }
    }

    @Test func bytesThatNeverComeBackAreAnError() throws {
        // The server echoes 10,000 bytes and then nothing: a stall, not just lower throughput.
        let server = try BrokenServer(mode: .stallAfter(bytes: 10_000))
        defer { server.stop() }
        var options = LoadOptions(target: server.address)
        options.connections = 2
        options.messageSize = 100
        options.duration = 0.3
        options.warmup = 0
        options.drainTimeout = 0.5
        let result = try LoadGenerator.run(options)
        #expect(result.errors == 2, "\(result.errorDetails)")
        #expect(result.errorDetails.contains { $0.contains("were not answered") }, "\(result.errorDetails)")
    }

    @Test func openLoopMessagesStillOutAtTheEndAreIncomplete() throws {
        // After 2,000 bytes the server stops echoing: every later message is due in the window
        // and never answered. They must be counted and show up in the latencies, not vanish.
        let server = try BrokenServer(mode: .stallAfter(bytes: 2_000))
        defer { server.stop() }
        var options = LoadOptions(target: server.address)
        options.connections = 1
        options.messageSize = 100
        options.rate = 1000
        options.duration = 0.5
        options.warmup = 0
        options.drainTimeout = 0.2
        let result = try LoadGenerator.run(options)
        #expect(result.messages <= 20)
        #expect(result.incomplete >= 400, "incomplete \(result.incomplete)")
        #expect(result.latency.totalCount == result.messages + result.incomplete)
        #expect(result.latency.max >= 300_000_000, "the oldest incomplete message waited most of the window")
    }

    @Test func quietEdgesMakeTheServersWindowExactlyTheMessages() throws {
        // With nothing in flight at either edge, what the server counted between two stats
        // readings is exactly the window's messages.
        let server = try ServerProcess(executable: iobenchPath, arguments: ["serve", "--backend", "epoll", "--port", "0", "--quit-on-eof"])
        defer { server.stop() }
        var options = LoadOptions(target: server.address)
        options.connections = 8
        options.messageSize = 100
        options.depth = 4
        options.duration = 0.5
        options.warmup = 0.2
        options.quietEdges = true
        var before: StatsLine?, after: StatsLine?
        var hooks = LoadHooks()
        hooks.beforeWindow = { _ in before = try? server.stats() }
        hooks.afterWindow = { _ in after = try? server.stats() }
        let result = try LoadGenerator.run(options, hooks: hooks)
        let echoed = try #require(after?.bytesOut) - (try #require(before?.bytesOut))
        #expect(result.errors == 0)
        #expect(result.messages > 1000)
        #expect(echoed == Int(result.messages) * 100, "server echoed \(echoed) bytes for \(result.messages) messages")
    }

    @Test func crossedConnectionsAreCaught() throws {
        // Echoes each connection's bytes to the other connection.
        let server = try BrokenServer(mode: .crossed)
        defer { server.stop() }
        var options = LoadOptions(target: server.address)
        options.connections = 2
        options.duration = 0.3
        options.warmup = 0
        let result = try LoadGenerator.run(options)
        #expect(result.errors >= 1)
    }

    @Test func theLoadCommandExitsNonZeroOnCorruption() throws {
        let server = try BrokenServer(mode: .flipByte(at: 100))
        defer { server.stop() }
        let result = try runCLI(["load", "--target", "\(server.address)", "--connections", "1", "--duration", "300ms", "--warmup", "0s"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("is wrong"), "\(result.stderr)")
        #expect(result.stdout.contains("errors      1"))
    }

    @Test func theLoadCommandWritesCSVJSONAndAHistogram() throws {
        let server = try ServerProcess(executable: iobenchPath, arguments: ["serve", "--backend", "io_uring", "--port", "0", "--quit-on-eof"])
        defer { server.stop() }
        let hgrm = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-\(getpid()).hgrm").path
        defer { try? FileManager.default.removeItem(atPath: hgrm) }
        let csv = try runCLI(["load", "--target", "\(server.address)", "--connections", "4", "--size", "4k", "--duration", "300ms",
                              "--warmup", "100ms", "--format", "csv", "--histogram", hgrm])
        #expect(csv.status == 0, "\(csv.stderr)")
        let rows = try CSV.read(csv.stdout)
        #expect(rows.count == 1)
        #expect(rows.first?.int("size_bytes") == 4096)
        #expect((rows.first?.double("msgs_per_s") ?? 0) > 0)
        let histogram = try String(contentsOfFile: hgrm, encoding: .utf8)
        #expect(histogram.contains("Percentile") && histogram.contains("Mean"))
        let json = try runCLI(["load", "--target", "\(server.address)", "--duration", "200ms", "--warmup", "0s", "--format", "json"])
        #expect(json.status == 0)
        let object = try #require(JSONObject(line: json.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(object.double("p99_us") != nil)
    }

    @Test func loadRejectsBadValuesWithUsageErrors() throws {
        let unreachable = try runCLI(["load", "--target", "127.0.0.1:1", "--duration", "100ms"])
        #expect(unreachable.status == 1)
        #expect(unreachable.stderr.contains("cannot connect to 127.0.0.1:1"), "\(unreachable.stderr)")
        let badSize = try runCLI(["load", "--target", "127.0.0.1:1", "--size", "huge"])
        #expect(badSize.status == 64)
        let badTarget = try runCLI(["load", "--target", "localhost"])
        #expect(badTarget.status == 64)
        #expect(badTarget.stderr.contains("has no port"))
    }
}
