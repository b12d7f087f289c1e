import NIOPeer
import IoUring
import Epoll
import Blocking
import Backends
import BenchRunner
import LoadGeneration
import ResultAnalysis
import ResultReporting
import ServerKit
import Protocols
import BackendKit
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The rpc pattern (docs/PROTOCOL.md) on every backend and the NIO peer, through real
/// `iobench serve --pattern rpc` children. Serialized: some tests read the server's CPU and memory.
@Suite(.serialized)
struct RpcConformanceTests {
    static let backends = Backends.kinds

    static func startRpcServer(_ kind: BackendKind, _ extra: [String] = []) throws -> ServerProcess {
        try startServer(kind, ["--pattern", "rpc"] + extra)
    }

    @Test("pipelined and scheduled requests of 1 B to 60 KB are answered exactly, in order, and counted", arguments: backends)
    func pipelinedRequestsAreAnsweredExactly(kind: BackendKind) throws {
        let server = try Self.startRpcServer(kind)
        defer { server.stop() }
        var answered = 0
        for size in [1, 1000, 60_000] {
            var options = LoadOptions(target: server.address)
            options.workload = .rpc
            options.connections = 8
            options.depth = 4
            options.messageSize = size
            options.duration = 0.4
            options.warmup = 0.1
            let result = try LoadGenerator.run(options)
            #expect(result.errors == 0, "\(kind), \(size) B: \(result.errorDetails)")
            #expect(result.messages > 0, "\(kind), \(size) B: no request was answered")
        }
        // Open loop: requests on a fixed schedule, every answer checked the same way.
        var open = LoadOptions(target: server.address)
        open.workload = .rpc
        open.connections = 16
        open.messageSize = 200
        open.rate = 5000
        open.duration = 0.4
        open.warmup = 0.1
        let scheduled = try LoadGenerator.run(open)
        #expect(scheduled.errors == 0, "\(kind), open loop: \(scheduled.errorDetails)")
        #expect(scheduled.messages >= 1500, "\(kind), open loop: \(scheduled.messages) of about 2,000 scheduled requests answered")
        let stats = try server.stats()
        answered = stats.responses
        // Every request the generator sent was parsed and answered (the generator drained them all).
        #expect(stats.requests == answered && answered > 0, "\(kind): \(stats.requests) requests, \(answered) responses")
        let malformed = stats.malformedFrames
        for error in FrameError.allCases { #expect(malformed[error.name] == 0, "\(kind): \(error.name)") }
        #expect(stats.pattern == "rpc")
    }

    @Test("work_us is CPU the server spends on the request", arguments: backends)
    func workIsServerCPU(kind: BackendKind) throws {
        let server = try Self.startRpcServer(kind)
        defer { server.stop() }
        let client = try Client(server.address)
        let before = cpuSeconds(pid: server.pid)
        for id in 1...100 as ClosedRange<UInt64> {
            try client.send(Wire.request(id: id, work: 3000, [7]))
            #expect(try client.receive(Wire.response(id: id, [7]).count) == Wire.response(id: id, [7]))
        }
        let spent = cpuSeconds(pid: server.pid) - before
        // 100 requests × 3 ms of work: at least 0.3 s of the server's CPU (its own /proc counters).
        #expect(spent >= 0.29, "\(kind): the server spent \(spent) s of CPU on 0.3 s of requested work")
    }

    @Test("a client written from docs/PROTOCOL.md alone (Python, standard library) drives every case", arguments: backends)
    func pythonClientFromTheSpecification(kind: BackendKind) throws {
        let server = try Self.startRpcServer(kind)
        defer { server.stop() }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/rpc_client.py").path
        let host = server.address.hostText, port = "\(server.address.port)"
        let runs: [[String]] = [
            ["--requests", "300", "--pipeline", "7", "--work-us", "20", "--payload", "3000"],
            ["--requests", "50", "--pipeline", "1", "--payload", "0"],
        ] + FrameError.rpcCases.map { ["--malformed", $0.name] }
        for arguments in runs {
            let result = try runProcess("/usr/bin/python3", [script, host, port] + arguments, timeout: 60)
            #expect(result.status == 0, "\(kind) \(arguments): \(result.stdout) \(result.stderr)")
        }
        let stats = try server.stats()
        let malformed = stats.malformedFrames
        for error in FrameError.rpcCases {
            #expect(malformed[error.name] == 1, "\(kind): \(error.name) counted \(malformed[error.name] ?? -1) times")
        }
        // 350 good requests plus the three skippable cases' follow-up requests.
        #expect(stats.responses == 353, "\(kind): \(stats.responses) responses")
    }

    @Test("malformed clients cost a well-behaved one nothing", arguments: backends)
    func malformedClientsDoNotDisturbOthers(kind: BackendKind) throws {
        let server = try Self.startRpcServer(kind)
        defer { server.stop() }
        let good = try Client(server.address)
        var expected: [UInt8] = []
        var first: [UInt8] = []
        for id in 1...40 as ClosedRange<UInt64> {
            let payload = (0..<Int(id) * 50).map { UInt8(truncatingIfNeeded: $0 &+ Int(id)) }
            first += Wire.request(id: id, payload)
            expected += Wire.response(id: id, payload)
        }
        // Half of a pipelined burst, cut in the middle of a frame.
        let cut = first.count / 2 + 3
        try good.send(Array(first[..<cut]))
        let bad: [[UInt8]] = [
            Wire.u32(UInt32.max) + [0x01],                                    // too large
            Wire.frame(0x42, [1, 2, 3]),                                      // unknown type
            Wire.frame(0x01, []),                                             // too short
            Wire.request(id: 1, work: 5_000_000, [1]),                        // too much work
            Array(Wire.request(id: 1, [UInt8](repeating: 1, count: 100)).prefix(30)),  // truncated
        ]
        for bytes in bad {
            let client = try Client(server.address)
            try client.send(bytes)
            client.shutdownWrite()
            let answer = try client.receiveToEnd()
            #expect(answer.count >= 7 && answer[4] == 0x7F, "\(kind): no ERROR frame for \(bytes.prefix(8))")
        }
        try good.send(Array(first[cut...]))
        #expect(try good.receive(expected.count) == expected, "\(kind): the well-behaved client's answers changed")
        let malformed = try server.stats().malformedFrames
        for error in FrameError.rpcCases { #expect(malformed[error.name] == 1, "\(kind): \(error.name)") }
    }

    @Test("memory follows bytes received, never a declared length; stop leaves nothing open", arguments: backends)
    func declaredLengthsDoNotAllocate(kind: BackendKind) throws {
        let server = try Self.startRpcServer(kind, ["--max-frame", "16m"])
        // A 4 GiB declaration is refused from the header alone.
        for _ in 0..<20 {
            let client = try Client(server.address)
            try client.send(Wire.u32(UInt32.max) + [0x01] + [1, 2, 3])
            #expect(try client.receiveToEnd() == Wire.error(1, "too_large"), "\(kind): 4 GiB declared length")
        }
        // 200 connections each declare a 16 MB request (allowed) and send 100 bytes of it.
        let rssBefore = residentBytes(pid: server.pid)
        var clients: [Client] = []
        for id in 0..<200 {
            let client = try Client(server.address)
            // The first 105 bytes of a request frame whose body is 16,000,000 bytes long.
            let header = Wire.u32(16_000_000) + [0x01] + Wire.u64(UInt64(id)) + Wire.u32(0)
            try client.send(header + [UInt8](repeating: 5, count: 105 - header.count))
            clients.append(client)
        }
        let arrived = 20 * 8 + 200 * 105
        #expect(try eventually { (try server.stats().bytesIn) >= arrived }, "\(kind): not every byte sent was read")
        let grown = residentBytes(pid: server.pid) - rssBefore
        // Following the declared lengths would take 3.2 GB; what arrived is 21 KB.
        #expect(grown < 64 << 20, "\(kind): RSS grew by \(grown >> 20) MiB for 200 partial requests")
        let stopped = server.stop()
        let final = try #require(stopped.finalStats, "\(kind): no final stats line")
        #expect(final.leakedFileDescriptors == 0, "\(kind): \(final.leakedFileDescriptors ?? -1) descriptors left open; stderr: \(stopped.standardError)")
        #expect(final.connectionsOpen == 0)
        let malformed = final.malformedFrames
        #expect(malformed["too_large"] == 20)
        _ = clients
    }
}
