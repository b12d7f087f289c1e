import ResultAnalysis
import ServerKit
import Protocols

/// A request/response workload of `iobench run` and `iobench load`: the server pattern that
/// serves it and the client's wire format, under one name (the CSV's `workload` column). Echo
/// and rpc are built in (`Workload.builtIn`); a workload that exists only in the tests is a
/// value made there, with its own wire and a server the test serves itself (`Target.external`).
public struct Workload: Sendable, Hashable, CustomStringConvertible {
    /// Its name: `--pattern` of `run` and `load`, and the `workload` column.
    public let name: String
    /// The `iobench serve --pattern` that serves it; nil for one no `iobench serve` speaks (a
    /// test's own session, served in the test's process).
    public let servePattern: ServerPattern?
    /// Whether its requests carry `work_us` (microseconds of server CPU each asks for).
    public let takesWork: Bool
    /// What one message is on the wire, both ways, for a payload size and work.
    public let wire: @Sendable (_ payloadSize: Int, _ workMicroseconds: UInt32) -> any MessageWire

    public init(name: String, servePattern: ServerPattern?, takesWork: Bool = false,
                wire: @escaping @Sendable (_ payloadSize: Int, _ workMicroseconds: UInt32) -> any MessageWire) {
        self.name = name
        self.servePattern = servePattern
        self.takesWork = takesWork
        self.wire = wire
    }

    public var description: String { name }
    public static func == (a: Workload, b: Workload) -> Bool { a.name == b.name }
    public func hash(into hasher: inout Hasher) { hasher.combine(name) }

    /// Each message is `--size` bytes of the connection's stream, echoed back.
    public static let echo = Workload(name: "echo", servePattern: .echo) { size, _ in EchoWire(payloadSize: size) }
    /// Each message is a REQUEST frame (docs/PROTOCOL.md) with a `--size`-byte payload from the
    /// connection's stream and `--work` microseconds of work; the answer must be the RESPONSE
    /// with the same id and payload, in order.
    public static let rpc = Workload(name: "rpc", servePattern: .rpc, takesWork: true) { size, work in
        RpcWire(payloadSize: size, workMicroseconds: work)
    }

    /// The workloads `iobench run --pattern` and `iobench load --pattern` know.
    public static let builtIn: [Workload] = [.echo, .rpc]

    public static func named(_ name: String) -> Workload? { builtIn.first { $0.name == name } }
}

/// The client side of a request/response protocol. A connection's requests form one byte
/// stream (message k at offset k × requestSize) and so do the answers it expects, so the
/// generator sends and checks byte ranges without building messages; payload bytes come from
/// the connection's `PayloadStream`, which no two connections share and which never repeats
/// within a run.
public protocol MessageWire: Sendable {
    var requestSize: Int { get }
    var responseSize: Int { get }
    /// Whether answers may come back for part of a request (echo: a byte for a byte); otherwise
    /// only whole requests are answered.
    var answersPartially: Bool { get }
    /// Writes request-stream bytes `offset ..< offset + count` into `destination`.
    func fillRequests(_ destination: UnsafeMutableRawPointer, count: Int, payload: PayloadStream, offset: UInt64)
    /// Checks received bytes, answer-stream bytes `offset ..< offset + count`: the index of the
    /// first byte that differs from what the server had to send, or nil.
    func firstMismatch(_ received: UnsafeRawPointer, count: Int, payload: PayloadStream, offset: UInt64) -> Int?
}

/// One connection's payload bytes: an endless pseudo-random stream (see `StreamPattern`).
public struct PayloadStream: Sendable {
    let pattern: StreamPattern
    let starts: (Int, Int)

    /// Writes stream bytes `offset ..< offset + count` into `destination`.
    @inline(__always)
    public func fill(_ destination: UnsafeMutableRawPointer, count: Int, offset: UInt64) {
        pattern.fill(destination, count: count, starts: starts, offset: offset)
    }

    /// The index of the first of `count` received bytes that differs from the stream from `offset`, or nil.
    @inline(__always)
    public func firstMismatch(_ received: UnsafeRawPointer, count: Int, offset: UInt64) -> Int? {
        pattern.firstMismatch(received, count: count, starts: starts, offset: offset)
    }
}

/// Echo: the answer stream is the request stream.
public struct EchoWire: MessageWire {
    public let requestSize: Int
    public var responseSize: Int { requestSize }
    public var answersPartially: Bool { true }

    public init(payloadSize: Int) { requestSize = payloadSize }

    public func fillRequests(_ destination: UnsafeMutableRawPointer, count: Int, payload: PayloadStream, offset: UInt64) {
        payload.fill(destination, count: count, offset: offset)
    }

    public func firstMismatch(_ received: UnsafeRawPointer, count: Int, payload: PayloadStream, offset: UInt64) -> Int? {
        payload.firstMismatch(received, count: count, offset: offset)
    }
}

/// A framed protocol whose messages are a fixed header around a payload of the stream, both
/// ways: the header of message k is made by `requestHeader`/`responseHeader`. rpc is one;
/// a test's workload can be another.
public protocol FramedWire: MessageWire {
    var payloadSize: Int { get }
    var requestHeaderSize: Int { get }
    var responseHeaderSize: Int { get }
    /// Writes request `message`'s header (`requestHeaderSize` bytes) at `header`.
    func requestHeader(_ header: UnsafeMutableRawPointer, message: UInt64)
    /// Writes the header the server must send before answer `message`'s payload.
    func responseHeader(_ header: UnsafeMutableRawPointer, message: UInt64)
}

extension FramedWire {
    public var requestSize: Int { requestHeaderSize + payloadSize }
    public var responseSize: Int { responseHeaderSize + payloadSize }
    public var answersPartially: Bool { false }

    public func fillRequests(_ destination: UnsafeMutableRawPointer, count: Int, payload: PayloadStream, offset: UInt64) {
        precondition(requestHeaderSize <= 32)
        var scratch = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))  // headers up to 32 bytes
        _ = walk(offset: offset, count: count, messageSize: requestSize, headerSize: requestHeaderSize) { done, message, within, n in
            if within < requestHeaderSize {
                withUnsafeMutableBytes(of: &scratch) { header in
                    requestHeader(header.baseAddress!, message: message)
                    (destination + done).copyMemory(from: header.baseAddress! + within, byteCount: n)
                }
            } else {
                payload.fill(destination + done, count: n, offset: message * UInt64(payloadSize) + UInt64(within - requestHeaderSize))
            }
            return nil
        }
    }

    public func firstMismatch(_ received: UnsafeRawPointer, count: Int, payload: PayloadStream, offset: UInt64) -> Int? {
        precondition(responseHeaderSize <= 32)
        var scratch = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        return walk(offset: offset, count: count, messageSize: responseSize, headerSize: responseHeaderSize) { done, message, within, n in
            if within < responseHeaderSize {
                return withUnsafeMutableBytes(of: &scratch) { header in
                    responseHeader(header.baseAddress!, message: message)
                    for i in 0..<n where header[within + i] != received.load(fromByteOffset: done + i, as: UInt8.self) {
                        return done + i
                    }
                    return nil
                }
            }
            return payload.firstMismatch(received + done, count: n, offset: message * UInt64(payloadSize) + UInt64(within - responseHeaderSize))
                .map { done + $0 }
        }
    }
}

/// Walks stream bytes `offset ..< offset + count` of messages of `messageSize` bytes, each a
/// `headerSize`-byte header then payload, in pieces that lie wholly in one header or one
/// payload: `visit(done, message, within, n)` for each (bytes before it, its message, where in
/// the message it starts, its length); the first non-nil answer ends the walk.
@inline(__always)
private func walk(offset: UInt64, count: Int, messageSize: Int, headerSize: Int,
                  _ visit: (_ done: Int, _ message: UInt64, _ within: Int, _ n: Int) -> Int?) -> Int? {
    var done = 0
    var position = offset
    while done < count {
        let message = position / UInt64(messageSize)
        let within = Int(position % UInt64(messageSize))
        let n = min((within < headerSize ? headerSize : messageSize) - within, count - done)
        if let answer = visit(done, message, within, n) { return answer }
        done += n
        position += UInt64(n)
    }
    return nil
}

/// rpc (docs/PROTOCOL.md): REQUEST(id = k, work_us, payload) answered by RESPONSE(id = k, payload).
public struct RpcWire: FramedWire {
    public let payloadSize: Int
    public let workMicroseconds: UInt32
    public var requestHeaderSize: Int { Frame.headerSize + Frame.requestFieldsSize }
    public var responseHeaderSize: Int { Frame.headerSize + Frame.responseFieldsSize }

    public init(payloadSize: Int, workMicroseconds: UInt32) {
        self.payloadSize = payloadSize
        self.workMicroseconds = workMicroseconds
    }

    public func requestHeader(_ header: UnsafeMutableRawPointer, message: UInt64) {
        Frame.writeHeader(header, kind: .request, bodyLength: Frame.requestFieldsSize + payloadSize)
        Frame.writeUInt64(header + Frame.headerSize, message)
        Frame.writeUInt32(header + Frame.headerSize + 8, workMicroseconds)
    }

    public func responseHeader(_ header: UnsafeMutableRawPointer, message: UInt64) {
        Frame.writeHeader(header, kind: .response, bodyLength: Frame.responseFieldsSize + payloadSize)
        Frame.writeUInt64(header + Frame.headerSize, message)
    }
}
