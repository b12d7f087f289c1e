import ServerKit
import Protocols
import BackendKit
import NIOCore

/// The NIO peer's lingering close, with the same bounds as ``LingeringCloser`` (docs/PROTOCOL.md,
/// "Closing"): once every owed byte is written, the channel's output is shut down (a FIN after
/// the last byte), and this handler, first in the pipeline, discards all further input until the
/// peer closes its side, ``LingeringCloser/maxDiscardedBytes`` were discarded or
/// ``LingeringCloser/timeoutNanoseconds`` passed; then the channel closes.
final class NIOLingeringClose: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let counters: ThreadCounters
    private var discarded = 0
    private var timeout: Scheduled<Void>?

    private init(counters: ThreadCounters) { self.counters = counters }

    /// Starts lingering on `context`'s channel. Call only once nothing is left to write: NIO
    /// fails writes still pending when the output is shut down.
    static func begin(_ context: ChannelHandlerContext, counters: ThreadCounters) {
        let channel = context.channel
        do {
            try channel.pipeline.syncOperations.addHandler(NIOLingeringClose(counters: counters), position: .first)
        } catch {
            channel.close(promise: nil)
            return
        }
        channel.close(mode: .output).whenFailure { _ in channel.close(promise: nil) }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        timeout = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(LingeringCloser.timeoutNanoseconds))) {
            channel.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timeout?.cancel()
        timeout = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data).readableBytes
        counters.add(.bytesIn, UInt64(bytes))
        discarded += bytes
        if discarded >= LingeringCloser.maxDiscardedBytes { context.close(promise: nil) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            context.close(promise: nil)  // the peer has everything and is done
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
