import ServerKit
import Protocols
import BackendKit
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Serves a pattern's ``ConnectionSession`` on a NIO channel, with NIO's own tools for the
/// backend services: a timer is a task scheduled on the channel's event loop, a notification
/// from another loop or thread arrives through `EventLoop.execute`. Output is written as the
/// other backends write it: the session's owed frames are copied out, at most ``writeChunk``
/// bytes at a time (at least one frame), one buffer per frame, and the session hears of each
/// frame only once NIO has written all of it to the socket — so what it counts as delivered
/// (EVENT frames completely written) was written, and the rest stays in the session, whose own
/// bound and slow-consumer policy then act as on the other backends. The sessions served here
/// are framed (push, poll): their owed bytes are whole frames.
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
    /// Bytes handed to NIO and not yet written (0: no write in flight).
    private var writing = 0
    /// The peer shut down its sending side.
    private var inputEnded = false
    /// Actions that arrived while ``perform(_:)`` was running (a write can complete inside it).
    private var pending: SessionActions = []
    private var performing = false

    /// The most bytes one write copies out of the session.
    static var writeChunk: Int { 64 * 1024 }

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
            inputEnded = true
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
    private func perform(_ actions: SessionActions) {
        pending.formUnion(actions)
        guard !performing, let context else { return }
        performing = true
        defer { performing = false }
        while session != nil {
            let actions = pending
            pending = []
            if actions.contains(.timerChanged) { rearmTimer(context) }
            if actions.contains(.close) {
                close(context)
                return
            }
            if actions.contains(.pauseInput) { context.channel.setOption(.autoRead, value: false).whenFailure { _ in } }
            if actions.contains(.resumeInput) { context.channel.setOption(.autoRead, value: true).whenFailure { _ in } }
            if writing == 0 && session?.hasOutbound == true && context.channel.isWritable { write(context) }
            if pending.isEmpty { return }
        }
    }

    /// Writes the next frames of the session's owed bytes; the session hears of each once NIO
    /// has written all of it to the socket (completions come in order, and may come at once,
    /// inside this call).
    private func write(_ context: ChannelHandlerContext) {
        let owed = session!.pinOutboundForWrite()
        var frames: [Int] = []
        var offset = 0
        while offset + Frame.headerSize <= owed.count && (offset == 0 || offset < Self.writeChunk) {
            let size = Frame.headerSize + Int(owed.bigEndian(at: offset, as: UInt32.self))
            precondition(offset + size <= owed.count, "owed bytes end inside a frame")
            frames.append(size)
            offset += size
        }
        precondition(!frames.isEmpty, "owed bytes that are not a frame")
        writing = offset
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        var start = 0
        for size in frames {
            var buffer = context.channel.allocator.buffer(capacity: size)
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: owed[start..<(start + size)]))
            start += size
            context.write(wrapOutboundOut(buffer)).whenComplete { result in
                let handler = bound.value
                handler.writing -= size
                guard handler.session != nil else { return }
                switch result {
                case .success:
                    handler.counters.add(.bytesOut, UInt64(size))
                    handler.perform(handler.session!.sent(size).union(.send))
                case .failure:
                    handler.session!.unpinOutbound()  // the connection failed: errorCaught closes it
                }
            }
        }
        context.flush()
    }

    /// Ends the connection the session ended. With every owed byte written and the peer still
    /// sending, it lingers (``NIOLingeringClose``) so the peer gets a FIN, not an RST; a peer
    /// that is not reading (a write still in flight: the slow-consumer policy) is closed at once.
    private func close(_ context: ChannelHandlerContext) {
        if writing == 0 && !inputEnded {
            NIOLingeringClose.begin(context, counters: counters)
        } else {
            context.close(promise: nil)
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
