import EchoCore
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Serves a pattern's ``ConnectionSession`` on a NIO channel, with NIO's own tools for the
/// backend services: a timer is a task scheduled on the channel's event loop, a notification
/// from another loop or thread arrives through `EventLoop.execute`. Output is handed to NIO
/// only while the channel is writable (its outbound buffer under `--max-owed`); the rest stays
/// in the session, whose own bound and slow-consumer policy then act as on the other backends.
final class NIOSessionHandler<Session: ConnectionSession & ~Copyable>: ChannelInboundHandler, NIOConnectionLifecycle {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let counters: ThreadCounters
    let limit: ConnectionLimit
    private let hub: Hub
    private var session: Session?
    private var loop: UInt32?
    private var mailbox: LoopMailbox?
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    private var notesTaken: [Note] = []

    init(counters: ThreadCounters, limit: ConnectionLimit, hub: Hub, maxOwed: Int, maxFrameSize: Int) {
        self.counters = counters
        self.limit = limit
        self.hub = hub
        session = Session(context: SessionContext(maxOwed: maxOwed, maxFrameSize: maxFrameSize, counters: SystemCalls(counters: counters),
                                                  notifier: hub.notifier, hub: hub))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let registered = hub.notifier.register { eventLoop.execute { bound.value.deliverNotes() } }
        loop = registered.loop
        mailbox = registered.mailbox
        perform(session!.opened(at: ConnectionAddress(loop: registered.loop, slot: 0, generation: 0)))
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        end()
        self.context = nil
    }

    /// Unregisters, cancels the timer, and ends the session (its end unsubscribes).
    private func end() {
        if let loop { hub.notifier.unregister(loop) }
        loop = nil
        mailbox = nil
        timer?.cancel()
        timer = nil
        session = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard session != nil else { return }
        let buffer = unwrapInboundIn(data)
        counters.add(.bytesIn, UInt64(buffer.readableBytes))
        guard buffer.readableBytes > 0 else { return }
        let actions = buffer.withUnsafeReadableBytes { session!.received($0) }
        perform(actions)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            guard session != nil else { return }
            perform(session!.inputDidEnd())
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, session?.hasOutbound == true { perform(.send) }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        end()
        counters.add(.closed)
        limit.release()
        context.fireChannelInactive()
    }

    private func deliverNotes() {
        guard let mailbox else { return }
        mailbox.take(into: &notesTaken)
        for note in notesTaken {
            guard session != nil else { return }
            perform(session!.notified(note.value))
        }
    }

    /// Executes a session's actions, and those its writes bring back.
    private func perform(_ first: SessionActions) {
        guard let context else { return }
        var actions = first
        while !actions.isEmpty, session != nil {
            var next: SessionActions = []
            if actions.contains(.timerChanged) { rearmTimer(context) }
            if actions.contains(.close) {
                context.close(promise: nil)
                return
            }
            if actions.contains(.pauseInput) { context.channel.setOption(.autoRead, value: false).whenFailure { _ in } }
            if actions.contains(.resumeInput) { context.channel.setOption(.autoRead, value: true).whenFailure { _ in } }
            // Hand NIO the owed bytes while it takes them (the rest waits for writability).
            var wrote = false
            while session?.hasOutbound == true && context.channel.isWritable {
                let bytes = session!.pinOutboundForWrite()
                var buffer = context.channel.allocator.buffer(capacity: bytes.count)
                buffer.writeBytes(bytes)
                context.write(wrapOutboundOut(buffer), promise: nil)
                counters.add(.bytesOut, UInt64(bytes.count))
                wrote = true
                next.formUnion(session!.sent(bytes.count))
            }
            if wrote { context.flush() }
            actions = next.subtracting(.send)
        }
    }

    private func rearmTimer(_ context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        guard let deadline = session?.timerDeadline else { return }
        let now = ProcessResources.monotonicNanoseconds()
        let delay = deadline > now ? Int64(clamping: deadline - now) : 0
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: .nanoseconds(delay)) {
            let handler = bound.value
            handler.timer = nil
            guard handler.session != nil else { return }
            handler.perform(handler.session!.timerFired())
        }
    }
}
