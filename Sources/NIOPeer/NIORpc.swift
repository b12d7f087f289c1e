import ServerKit
import Protocols
import BackendKit
import NIOCore

/// A frame of the rpc pattern as NIO's decoder hands it on.
enum RpcInbound {
    case request(id: UInt64, workMicroseconds: UInt32, payload: ByteBuffer)
    case refused(FrameError)
}

/// Splits the byte stream into rpc frames with NIO's own tool, a `ByteToMessageDecoder`: it
/// waits until a whole frame is buffered (at most `--max-frame` bytes, checked from the header
/// before any body byte is awaited), and refuses malformed frames as the specification says.
struct RpcFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = RpcInbound

    let maxFrameSize: Int
    /// After a fatal error the stream is not trusted: everything else is discarded.
    private var failed = false

    init(maxFrameSize: Int) { self.maxFrameSize = maxFrameSize }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if failed {
            buffer.moveReaderIndex(to: buffer.writerIndex)
            return .needMoreData
        }
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self),
              let type = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt8.self) else {
            return .needMoreData
        }
        let bodyLength = Int(length)
        if bodyLength > maxFrameSize - Frame.headerSize {
            failed = true
            buffer.moveReaderIndex(forwardBy: Frame.headerSize)
            context.fireChannelRead(NIOAny(RpcInbound.refused(.tooLarge)))
            return .continue
        }
        guard buffer.readableBytes >= Frame.headerSize + bodyLength else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: Frame.headerSize)
        guard type == Frame.Kind.request.rawValue else {
            buffer.moveReaderIndex(forwardBy: bodyLength)
            context.fireChannelRead(NIOAny(RpcInbound.refused(.unknownType)))
            return .continue
        }
        guard bodyLength >= Frame.requestFieldsSize else {
            buffer.moveReaderIndex(forwardBy: bodyLength)
            context.fireChannelRead(NIOAny(RpcInbound.refused(.tooShort)))
            return .continue
        }
        let id = buffer.readInteger(as: UInt64.self)!
        let work = buffer.readInteger(as: UInt32.self)!
        let payload = buffer.readSlice(length: bodyLength - Frame.requestFieldsSize)!
        if work > Frame.maxWorkMicroseconds {
            context.fireChannelRead(NIOAny(RpcInbound.refused(.workTooLarge)))
        } else {
            context.fireChannelRead(NIOAny(RpcInbound.request(id: id, workMicroseconds: work, payload: payload)))
        }
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        if buffer.readableBytes > 0 && !failed {
            failed = true
            buffer.moveReaderIndex(to: buffer.writerIndex)
            context.fireChannelRead(NIOAny(RpcInbound.refused(.truncated)))
        }
        return .needMoreData
    }
}

/// Counts the bytes a connection receives, before the decoder sees them.
final class NIOInboundByteCounter: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let counters: ThreadCounters
    init(counters: ThreadCounters) { self.counters = counters }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        counters.add(.bytesIn, UInt64(unwrapInboundIn(data).readableBytes))
        context.fireChannelRead(data)
    }
}

/// Answers each request in order after its `work_us` of CPU; refused frames get an ERROR frame
/// in their place, and a fatal one ends the connection once it is written.
final class NIORpcHandler: ChannelInboundHandler, NIOConnectionLifecycle {
    typealias InboundIn = RpcInbound
    typealias OutboundOut = ByteBuffer

    let counters: ThreadCounters
    let limit: ConnectionLimit
    private var closing = false

    init(counters: ThreadCounters, limit: ConnectionLimit) {
        self.counters = counters
        self.limit = limit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        switch unwrapInboundIn(data) {
        case .request(let id, let work, let payload):
            counters.add(.requests)
            if work > 0 { CPUWork.spin(microseconds: work) }
            var response = context.channel.allocator.buffer(capacity: Frame.headerSize + Frame.responseFieldsSize + payload.readableBytes)
            response.writeInteger(UInt32(Frame.responseFieldsSize + payload.readableBytes))
            response.writeInteger(Frame.Kind.response.rawValue)
            response.writeInteger(id)
            var body = payload
            response.writeBuffer(&body)
            counters.add(.responses)
            counters.add(.bytesOut, UInt64(response.readableBytes))
            context.write(wrapOutboundOut(response), promise: nil)
        case .refused(let error):
            counters.add(error.counter)
            var frame = context.channel.allocator.buffer(capacity: 32)
            frame.writeInteger(UInt32(2 + error.name.utf8.count))
            frame.writeInteger(Frame.Kind.error.rawValue)
            frame.writeInteger(error.rawValue)
            frame.writeString(error.name)
            counters.add(.bytesOut, UInt64(frame.readableBytes))
            if error.isFatal {
                closing = true
                let channel = context.channel
                // `truncated` comes at the peer's end of input; after `too_large` the peer may
                // still be sending: once every answer is written it gets a FIN, not an RST.
                let lingers = error != .truncated
                let counters = self.counters
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { result in
                    if case .success = result, lingers {
                        NIOLingeringClose.begin(bound.value, counters: counters)
                    } else {
                        channel.close(promise: nil)
                    }
                }
            } else {
                context.write(wrapOutboundOut(frame), promise: nil)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }
}
