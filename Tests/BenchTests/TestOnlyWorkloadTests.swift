import Backends
import BenchRunner
import LoadGeneration
import ResultAnalysis
import ResultReporting
import BackendKit
import Foundation
import Protocols
import ServerKit
import TestSupport
import Testing

/// A protocol that exists only in these tests, benchmarked by the runner behind `iobench run`:
/// the proof that a new workload is a session plus a wire, with the backends, the runner, the
/// CSV and the charts untouched.
///
///     request:  u32 length, u64 id, `length` payload bytes          (big-endian)
///     answer:   u64 (id XOR all ones), u32 length, the same payload
///
/// `Fault` makes a wrong server of the same protocol, to prove the client's check.
protocol AnswerFault { static var flippedAnswerByte: Int? { get } }
enum NoFault: AnswerFault { static var flippedAnswerByte: Int? { nil } }
enum FlipsByte5000: AnswerFault { static var flippedAnswerByte: Int? { 5_000 } }

struct TaggedEchoSession<Fault: AnswerFault>: ConnectionSession, ~Copyable {
    static var headerSize: Int { 12 }

    private var outbound = ByteQueue()
    private var header = [UInt8](repeating: 0, count: TaggedEchoSession<NoFault>.headerSize)
    private var headerFill = 0
    /// Payload bytes of the current request still to come.
    private var remaining = 0
    private var ended = false
    private var paused = false
    /// Answer bytes made so far (where `Fault` flips one).
    private var answered = 0
    private let maxOwed: Int

    init(context: SessionContext) { maxOwed = context.maxOwed }

    var wantsInput: Bool { !ended && !paused }
    var owed: Int { outbound.count }
    var hasOutbound: Bool { outbound.committedCount > 0 }

    mutating func received(_ bytes: UnsafeRawBufferPointer) -> SessionActions {
        var at = 0
        while at < bytes.count {
            if remaining == 0 {
                header[headerFill] = bytes[at]
                headerFill += 1
                at += 1
                guard headerFill == Self.headerSize else { continue }
                headerFill = 0
                let length = header[0..<4].reduce(0) { $0 << 8 | Int($1) }
                let id = header[4..<12].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                let answer = (0..<8).map { UInt8(truncatingIfNeeded: ~id >> (56 - 8 * $0)) } + Array(header[0..<4])
                answer.withUnsafeBytes { outbound.append($0) }
                answered += answer.count
                remaining = length
            } else {
                let n = min(remaining, bytes.count - at)
                if let flip = Fault.flippedAnswerByte, (answered..<(answered + n)).contains(flip) {
                    var chunk = Array(bytes[at..<(at + n)])
                    chunk[flip - answered] ^= 0xFF
                    chunk.withUnsafeBytes { outbound.append($0) }
                } else {
                    outbound.append(UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)]))
                }
                answered += n
                remaining -= n
                at += n
            }
        }
        outbound.commit()
        var actions: SessionActions = hasOutbound ? .send : []
        if outbound.count >= maxOwed && !paused {
            paused = true
            actions.insert(.pauseInput)
        }
        return actions
    }

    mutating func pinOutboundForWrite() -> UnsafeRawBufferPointer { outbound.pinForWrite() }
    mutating func unpinOutbound() { outbound.consume(0) }

    mutating func sent(_ count: Int) -> SessionActions {
        outbound.consume(count)
        var actions: SessionActions = hasOutbound ? .send : []
        if paused && outbound.count <= maxOwed / 2 {
            paused = false
            actions.insert(.resumeInput)
        }
        if ended && !hasOutbound { actions.insert(.close) }
        return actions
    }

    mutating func inputDidEnd() -> SessionActions {
        ended = true
        return hasOutbound ? .send : .close
    }
}

/// The client side: the runner's generator sends requests and checks every answer byte.
struct TaggedEchoWire: FramedWire {
    let payloadSize: Int
    var requestHeaderSize: Int { TaggedEchoSession<NoFault>.headerSize }
    var responseHeaderSize: Int { TaggedEchoSession<NoFault>.headerSize }

    func requestHeader(_ header: UnsafeMutableRawPointer, message: UInt64) {
        header.storeBytes(of: UInt32(payloadSize).bigEndian, toByteOffset: 0, as: UInt32.self)
        header.storeBytes(of: message.bigEndian, toByteOffset: 4, as: UInt64.self)
    }

    func responseHeader(_ header: UnsafeMutableRawPointer, message: UInt64) {
        header.storeBytes(of: (~message).bigEndian, toByteOffset: 0, as: UInt64.self)
        header.storeBytes(of: UInt32(payloadSize).bigEndian, toByteOffset: 8, as: UInt32.self)
    }
}

extension Workload {
    static let taggedEcho = Workload(name: "tagged-echo", servePattern: nil) { size, _ in TaggedEchoWire(payloadSize: size) }
}

@Suite(.serialized) struct TestOnlyWorkloadTests {
    /// The runner's plan for the tagged-echo workload against servers this test serves.
    static func plan(_ externals: [ExternalServer], connections: [Int], size: Int, repetitions: Int) -> RunPlan {
        var plan = RunPlan(executable: iobenchPath, commandLine: "swift test --filter TestOnlyWorkloadTests")
        plan.workload = .taggedEcho
        plan.backends = []
        plan.externals = externals
        plan.connections = connections
        plan.sizes = [size]
        plan.repetitions = repetitions
        plan.duration = 0.3
        plan.warmup = 0.1
        plan.idleConnections = 0
        return plan
    }

    @Test func aWorkloadOnlyTheTestsKnowIsServedByEveryBackendAndMeasuredIntoRowsAndCharts() throws {
        // Every backend that serves any session type serves this one, in this process.
        var servers: [any BackendServer] = []
        defer { for server in servers { server.stop() } }
        var externals: [ExternalServer] = []
        for descriptor in Backends.all {
            let configuration = ServerConfiguration(address: try SocketAddress(host: "127.0.0.1", port: 0))
            guard let server = descriptor.factory.makeServer(configuration: configuration, session: TaggedEchoSession<NoFault>.self) else {
                #expect(descriptor.isReferencePeer, "\(descriptor.kind) serves no session of another protocol")
                continue
            }
            try server.start()
            servers.append(server)
            externals.append(ExternalServer(name: descriptor.kind.rawValue, address: server.boundAddress))
        }
        #expect(externals.count == Backends.models.count, "\(externals.map(\.name))")

        let rows = try BenchmarkRunner(plan: Self.plan(externals, connections: [1, 8], size: 3000, repetitions: 2)).run()

        // One row per server × connections × size × repetition, every answer byte checked.
        #expect(rows.count == externals.count * 2 * 1 * 2)
        for row in rows {
            #expect(row["workload"] == "tagged-echo")
            #expect((row.double(.messagesPerSecond) ?? 0) > 0, "\(row.values)")
            #expect(row[.errors] == "0", "\(row.values)")
            #expect(row.int("messages").map { $0 > 0 } == true)
        }
        // The CSV reads back, and the report draws its charts from it.
        let back = try CSV.read(CSV.write(rows))
        #expect(CSV.write(back) == CSV.write(rows), "the CSV does not read back as written")
        let charts = ReportCharts.echoCharts(back, reference: "epoll", palette: Palette(names: ReportCharts.servers(back)))
        let throughput = try #require(charts.first { $0.id.hasPrefix("throughput-") }, "\(charts.map(\.id))")
        let drawn = Set(throughput.series.map { $0.name.replacingOccurrences(of: " (reference)", with: "") })
        #expect(drawn == Set(externals.map(\.name)), "\(drawn)")
        #expect(throughput.svg().contains("<svg"))
        #expect(charts.contains { $0.id.hasPrefix("latency-") })
    }

    @Test func aCorruptedAnswerIsAnErrorInTheRow() throws {
        // The wire is a real check: a server that answers one payload byte wrong (answer-stream
        // byte 5,000, in answer 44 from 0, of 112 bytes each) is caught.
        let configuration = ServerConfiguration(address: try SocketAddress(host: "127.0.0.1", port: 0))
        let factory = Backends.descriptor(BackendKind("epoll")).factory
        let made = factory.makeServer(configuration: configuration, session: TaggedEchoSession<FlipsByte5000>.self)
        let server = try #require(made)
        try server.start()
        defer { server.stop() }
        let plan = Self.plan([ExternalServer(name: "corrupted", address: server.boundAddress)], connections: [1], size: 100, repetitions: 1)
        let rows = try BenchmarkRunner(plan: plan).run()
        #expect(rows.count == 1 && (rows.first?.int("errors") ?? 0) > 0, "\(rows.map(\.values))")
    }

    @Test func theRunnerRefusesToStartBackendsForAWorkloadNoServeSpeaks() throws {
        var plan = RunPlan(executable: iobenchPath, commandLine: "test")
        plan.workload = .taggedEcho
        plan.backends = [BackendKind("epoll")]
        #expect(throws: BenchError.self) { try BenchmarkRunner(plan: plan).run() }
    }
}
