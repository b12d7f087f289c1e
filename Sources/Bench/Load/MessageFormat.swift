import ServerKit
import Protocols
import BackendKit

/// The protocol a load run speaks (`load --pattern`).
public enum LoadPattern: String, CaseIterable, Sendable, CustomStringConvertible {
    /// Each message is `--size` bytes of the connection's stream, echoed back.
    case echo
    /// Each message is a REQUEST frame (docs/PROTOCOL.md) with a `--size`-byte payload from the
    /// connection's stream and `--work` microseconds of work; the answer must be the RESPONSE
    /// with the same id and payload, in order.
    case rpc

    public var description: String { rawValue }
}

/// What one load message is on the wire, both ways, and how to check it. A connection's
/// requests form one stream (message k at offset k × requestSize) and so do the answers it
/// expects, so sending and checking work on byte ranges without building messages: echo's
/// answer stream is the request stream; rpc's is made of RESPONSE headers (id = k) around the
/// same payload bytes.
struct MessageFormat: Sendable {
    let pattern: LoadPattern
    /// Payload bytes per message (echo: the whole message).
    let payloadSize: Int
    let workMicroseconds: UInt32
    let requestSize: Int
    let responseSize: Int
    let requestHeaderSize: Int
    let responseHeaderSize: Int

    init(pattern: LoadPattern, payloadSize: Int, workMicroseconds: UInt32) {
        self.pattern = pattern
        self.payloadSize = payloadSize
        self.workMicroseconds = workMicroseconds
        switch pattern {
        case .echo:
            requestHeaderSize = 0
            responseHeaderSize = 0
        case .rpc:
            requestHeaderSize = Frame.headerSize + Frame.requestFieldsSize
            responseHeaderSize = Frame.headerSize + Frame.responseFieldsSize
        }
        requestSize = requestHeaderSize + payloadSize
        responseSize = responseHeaderSize + payloadSize
    }

    /// Writes request-stream bytes `offset ..< offset + count` into `destination`.
    @inline(__always)
    func fillRequests(_ destination: UnsafeMutableRawPointer, count: Int, stream: StreamPattern, starts: (Int, Int), offset: UInt64) {
        if pattern == .echo {
            stream.fill(destination, count: count, starts: starts, offset: offset)
            return
        }
        var done = 0
        var position = offset
        var header = (UInt64(0), UInt64(0), UInt64(0))  // 24 bytes of scratch for a 17-byte header
        while done < count {
            let message = position / UInt64(requestSize)
            let within = Int(position % UInt64(requestSize))
            let n: Int
            if within < requestHeaderSize {
                n = min(requestHeaderSize - within, count - done)
                withUnsafeMutableBytes(of: &header) { scratch in
                    Frame.writeHeader(scratch.baseAddress!, kind: .request, bodyLength: Frame.requestFieldsSize + payloadSize)
                    Frame.writeUInt64(scratch.baseAddress! + Frame.headerSize, message)
                    Frame.writeUInt32(scratch.baseAddress! + Frame.headerSize + 8, workMicroseconds)
                    (destination + done).copyMemory(from: scratch.baseAddress! + within, byteCount: n)
                }
            } else {
                n = min(requestSize - within, count - done)
                stream.fill(destination + done, count: n, starts: starts, offset: message * UInt64(payloadSize) + UInt64(within - requestHeaderSize))
            }
            done += n
            position += UInt64(n)
        }
    }

    /// Checks received bytes, which are answer-stream bytes `offset ..< offset + count`: the
    /// index of the first byte that differs from what the server had to send, or nil.
    @inline(__always)
    func firstMismatch(_ received: UnsafeRawPointer, count: Int, stream: StreamPattern, starts: (Int, Int), offset: UInt64) -> Int? {
        if pattern == .echo {
            return stream.firstMismatch(received, count: count, starts: starts, offset: offset)
        }
        var done = 0
        var position = offset
        var header = (UInt64(0), UInt64(0))  // 16 bytes of scratch for a 13-byte header
        while done < count {
            let message = position / UInt64(responseSize)
            let within = Int(position % UInt64(responseSize))
            let n: Int
            if within < responseHeaderSize {
                n = min(responseHeaderSize - within, count - done)
                let bad: Int? = withUnsafeMutableBytes(of: &header) { scratch in
                    Frame.writeHeader(scratch.baseAddress!, kind: .response, bodyLength: Frame.responseFieldsSize + payloadSize)
                    Frame.writeUInt64(scratch.baseAddress! + Frame.headerSize, message)
                    for i in 0..<n where scratch[within + i] != received.load(fromByteOffset: done + i, as: UInt8.self) {
                        return i
                    }
                    return nil
                }
                if let bad { return done + bad }
            } else {
                n = min(responseSize - within, count - done)
                if let bad = stream.firstMismatch(received + done, count: n, starts: starts, offset: message * UInt64(payloadSize) + UInt64(within - responseHeaderSize)) {
                    return done + bad
                }
            }
            done += n
            position += UInt64(n)
        }
        return nil
    }
}
