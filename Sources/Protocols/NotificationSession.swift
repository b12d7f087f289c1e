#if canImport(Glibc)
import Glibc
#endif
import ServerKit

/// Which frames a notification session accepts: the pattern it speaks.
public protocol NotificationPattern: Sendable {
    static func accepts(_ kind: Frame.Kind) -> Bool
}

/// push: SUBSCRIBE and PUBLISH.
public enum PushPattern: NotificationPattern {
    @inlinable public static func accepts(_ kind: Frame.Kind) -> Bool { kind == .subscribe || kind == .publish }
}

/// short and long polling: SUBMIT, STATUS, WAIT and PUBLISH.
public enum PollPattern: NotificationPattern {
    @inlinable public static func accepts(_ kind: Frame.Kind) -> Bool {
        kind == .submit || kind == .status || kind == .wait || kind == .publish
    }
}

/// The notification patterns (`docs/PROTOCOL.md`): push (SUBSCRIBE, then every EVENT of the
/// topic as it is published), short polling (SUBMIT a job, ask its STATUS) and long polling
/// (WAIT for the events after a cursor, held until there are some or the timeout). One type
/// for both patterns; `Pattern` says which frames a connection may send.
///
/// The shared state lives in the server's ``Hub``: topics keep their last `--max-queue` events
/// as whole EVENT frames, and a publish posts one note to each listener that has none on its
/// way. A subscriber copies events into its outbound queue only when nothing is being written,
/// so what waits for it in the server is bounded by `--max-queue` events; past that its
/// `--slow-consumer` policy acts. An idle subscriber or held poll holds no buffer: its outbound
/// queue is allocated when there is something to write, its input only for a frame split
/// across reads.
public struct NotificationSession<Pattern: NotificationPattern>: ConnectionSession, ~Copyable {
    @usableFromInline var reader: FrameReader
    @usableFromInline var outbound = ByteQueue()
    @usableFromInline let hub: Hub
    @usableFromInline let counters: SystemCalls
    @usableFromInline var bound: OutputBound
    @usableFromInline let maxFrameSize: Int
    /// Where notes reach this connection (set when it opens).
    var address = ConnectionAddress(loop: .max, slot: 0, generation: 0)
    var mailbox: LoopMailbox?
    // push
    var subscription: Topic?
    /// The next sequence number to copy into the outbound queue.
    var cursor: UInt64 = 0
    /// Events in the outbound queue not yet completely written: a batch of EVENT frames,
    /// copied into an empty queue, so they are its first frames.
    var batchEvents = 0
    /// Bytes of the batch's head EVENT frame not yet written (0: the head of the queue is at a
    /// frame's start).
    var headEventRemaining = 0
    // long polling
    var waitTopic: Topic?
    var waitAfter: UInt64 = 0
    var waitDeadline: UInt64?

    public var inputPaused: Bool { bound.paused }
    public private(set) var inputEnded = false
    public private(set) var failed = false
    /// The slow-consumer policy closed the connection.
    public private(set) var disconnected = false

    /// The most bytes one push batch copies (events past it wait for the next one).
    static var maxBatchBytes: Int { 32 * 1024 }

    public init(context: SessionContext) {
        guard let hub = context.hub else { preconditionFailure("the notification patterns need the server's hub") }
        self.hub = hub
        reader = FrameReader(maxFrameSize: context.maxFrameSize)
        counters = context.counters
        bound = OutputBound(maxOwed: context.maxOwed)
        maxFrameSize = context.maxFrameSize
    }

    deinit {
        if let subscription {
            subscription.stopListening(address)
            hub.subscribers.subtract(1, ordering: .relaxed)
        }
        if let waitTopic {
            waitTopic.stopListening(address)
            hub.heldWaits.subtract(1, ordering: .relaxed)
        }
    }

    public static var usesServices: Bool { true }

    public var wantsInput: Bool { !inputEnded && !inputPaused && !failed }
    public var owed: Int { outbound.count }
    public var hasOutbound: Bool { outbound.committedCount > 0 }
    public var timerDeadline: UInt64? {
        guard let waitDeadline else { return nil }
        // The injected `late` fault arms a held WAIT's timer past its deadline.
        return hub.options.fault?.kind == .late ? waitDeadline + EventFault.lateNanoseconds : waitDeadline
    }
    public var isSubscribed: Bool { subscription != nil }
    public var isWaiting: Bool { waitTopic != nil }

    public mutating func opened(at address: ConnectionAddress) -> SessionActions {
        self.address = address
        mailbox = hub.notifier.mailbox(for: address.loop)
        return []
    }

    public mutating func received(_ bytes: UnsafeRawBufferPointer) -> SessionActions {
        precondition(bytes.count > 0, "a read of zero bytes is end of input: call inputDidEnd()")
        if failed { return [] }
        let committedBefore = outbound.committedCount
        var actions: SessionActions = []
        var offset = 0
        reading: while offset < bytes.count {
            switch reader.next(bytes, &offset) {
            case .frame(let kind, let body):
                actions.formUnion(handle(kind, body))
            case .needMore:
                break reading
            case .tooLarge:
                refuse(.tooLarge)
                break reading
            }
        }
        if outbound.committedCount > committedBefore { actions.insert(.send) }
        return actions.union(checkFlowControl())
    }

    public mutating func pinOutboundForWrite() -> UnsafeRawBufferPointer { outbound.pinForWrite() }

    public mutating func unpinOutbound() { outbound.consume(0) }

    public mutating func sent(_ count: Int) -> SessionActions {
        if batchEvents > 0 { countDeliveredEvents(written: count) }
        outbound.consume(count)
        var actions: SessionActions = []
        if outbound.committedCount > 0 {
            actions.insert(.send)
        } else {
            if failed || inputEnded {
                return .close
            }
            if let subscription, subscription.nextSeq > cursor {
                actions.formUnion(fetch())
                if disconnected { return .close }
            }
        }
        return actions.union(bound.shrank(to: outbound.count, readingOver: inputEnded || failed))
    }

    public mutating func inputDidEnd() -> SessionActions {
        inputEnded = true
        if reader.inputEnded() && !failed { refuse(.truncated) }
        var actions: SessionActions = []
        if waitTopic != nil {
            releaseWait()
            actions.insert(.timerChanged)
        }
        actions.insert(outbound.committedCount > 0 ? .send : .close)
        return actions
    }

    public mutating func notified(_ value: UInt64) -> SessionActions {
        if failed || inputEnded { return [] }
        if subscription != nil {
            return fetch()  // .close alone when the slow-consumer policy disconnects
        }
        if let topic = waitTopic {
            let committedBefore = outbound.committedCount
            let (answered, _) = topic.answerWait(address, mailbox: mailbox, after: waitAfter, listen: false,
                                                  maxEvents: hub.options.maxQueue, maxFrame: maxFrameSize, into: &outbound)
            guard answered > 0 else { return [] }
            counters.count(.waitsAnswered)
            counters.count(.eventsAnswered, UInt64(answered))
            waitTopic = nil  // answerWait stopped listening
            hub.heldWaits.subtract(1, ordering: .relaxed)
            waitDeadline = nil
            var actions: SessionActions = .timerChanged
            if outbound.committedCount > committedBefore { actions.insert(.send) }
            return actions.union(checkFlowControl())
        }
        return []
    }

    /// A TIMEOUT answered later than this after its deadline is counted late (`timeouts_late`):
    /// the server's own measure of its timers' precision, which no client's scheduling blurs.
    public static var lateTimeoutNanoseconds: UInt64 { 10_000_000 }

    public mutating func timerFired() -> SessionActions {
        guard let topic = waitTopic, let deadline = waitDeadline else { return [] }
        let now = ProcessResources.monotonicNanoseconds()
        guard now >= deadline else { return .timerChanged }
        let after = waitAfter
        releaseWait()
        counters.count(.waitsTimedOut)
        if now - deadline > Self.lateTimeoutNanoseconds { counters.count(.timeoutsLate) }
        outbound.appendFrame(.timeout, fields: 12) { at in
            Frame.writeUInt32(at, topic.id)
            Frame.writeUInt64(at + 4, after)
        }
        outbound.commit()
        return SessionActions.send.union(checkFlowControl())
    }

    // MARK: Frames

    mutating func handle(_ rawKind: UInt8, _ body: UnsafeRawBufferPointer) -> SessionActions {
        guard let kind = Frame.Kind(rawValue: rawKind), Pattern.accepts(kind) else {
            refuse(.unknownType)
            return []
        }
        switch kind {
        case .subscribe:
            guard body.count >= 4 else { refuse(.tooShort); return [] }
            guard subscription == nil else { refuse(.alreadySubscribed); return [] }
            let id = body.bigEndian(at: 0, as: UInt32.self)
            guard let topic = hub.topic(id) else { refuse(.outOfRange); return [] }
            cursor = topic.subscribe(address, mailbox: mailbox)
            subscription = topic
            hub.subscribers.add(1, ordering: .relaxed)
            let next = cursor
            outbound.appendFrame(.subscribed, fields: 12) { at in
                Frame.writeUInt32(at, id)
                Frame.writeUInt64(at + 4, next)
            }
            outbound.commit()
            return []
        case .publish:
            guard body.count >= 12 else { refuse(.tooShort); return [] }
            let payload = UnsafeRawBufferPointer(rebasing: body[12...])
            guard payload.count <= maxFrameSize - Frame.eventOverhead else { refuse(.outOfRange); return [] }
            let id = body.bigEndian(at: 0, as: UInt32.self)
            var time = body.bigEndian(at: 4, as: UInt64.self)
            if time == 0 { time = ProcessResources.monotonicNanoseconds() }
            guard let topic = hub.topic(id), let (seq, listeners) = topic.publish(time: time, payload: payload) else {
                refuse(.outOfRange)
                return []
            }
            counters.count(.eventsPublished)
            outbound.appendFrame(.published, fields: 16) { at in
                Frame.writeUInt32(at, id)
                Frame.writeUInt64(at + 4, seq)
                Frame.writeUInt32(at + 12, UInt32(clamping: listeners))
            }
            outbound.commit()
            return []
        case .submit:
            guard body.count >= 4 else { refuse(.tooShort); return [] }
            let duration = body.bigEndian(at: 0, as: UInt32.self)
            guard duration <= Frame.maxDurationMilliseconds,
                  let id = hub.submit(durationMilliseconds: duration, now: ProcessResources.monotonicNanoseconds())
            else { refuse(.outOfRange); return [] }
            counters.count(.jobsSubmitted)
            outbound.appendFrame(.accepted, fields: 8) { Frame.writeUInt64($0, id) }
            outbound.commit()
            return []
        case .status:
            guard body.count >= 8 else { refuse(.tooShort); return [] }
            let id = body.bigEndian(at: 0, as: UInt64.self)
            switch hub.status(id, now: ProcessResources.monotonicNanoseconds()) {
            case .unknown:
                refuse(.unknownJob)
                return []
            case .pending:
                counters.count(.statusPolls)
                counters.count(.statusPending)
                outbound.appendFrame(.pending, fields: 8) { Frame.writeUInt64($0, id) }
            case .done(let completedAt):
                counters.count(.statusPolls)
                outbound.appendFrame(.done, fields: 24) { at in
                    Frame.writeUInt64(at, id)
                    Frame.writeUInt64(at + 8, completedAt)
                    Frame.writeUInt64(at + 16, jobResult(id))
                }
            }
            outbound.commit()
            return []
        case .wait:
            guard body.count >= 16 else { refuse(.tooShort); return [] }
            guard waitTopic == nil else { refuse(.waitPending); return [] }
            let id = body.bigEndian(at: 0, as: UInt32.self)
            let after = body.bigEndian(at: 4, as: UInt64.self)
            let timeout = body.bigEndian(at: 12, as: UInt32.self)
            guard timeout <= Frame.maxDurationMilliseconds, let topic = hub.topic(id) else { refuse(.outOfRange); return [] }
            // A cursor past the newest event came from another run of the server (sequence
            // numbers start again at 1): held, it would wait while events it never sees go by.
            guard after == Frame.fromNow || after < topic.nextSeq else { refuse(.outOfRange); return [] }
            counters.count(.waits)
            let (answered, resolved) = topic.answerWait(address, mailbox: mailbox, after: after, listen: timeout > 0,
                                                         maxEvents: hub.options.maxQueue, maxFrame: maxFrameSize, into: &outbound)
            if answered > 0 {
                counters.count(.waitsAnswered)
                counters.count(.eventsAnswered, UInt64(answered))
                return []
            }
            if timeout == 0 {
                counters.count(.waitsTimedOut)
                outbound.appendFrame(.timeout, fields: 12) { at in
                    Frame.writeUInt32(at, id)
                    Frame.writeUInt64(at + 4, resolved)
                }
                outbound.commit()
                return []
            }
            counters.count(.waitsHeld)
            hub.heldWaits.add(1, ordering: .relaxed)
            waitTopic = topic
            waitAfter = resolved
            waitDeadline = ProcessResources.monotonicNanoseconds() + UInt64(timeout) * 1_000_000
            return .timerChanged
        default:
            refuse(.unknownType)
            return []
        }
    }

    /// push: looks at the subscription's topic, applies the slow-consumer policy, and copies the
    /// next events when nothing is being written.
    mutating func fetch() -> SessionActions {
        guard let topic = subscription else { return [] }
        let copy = outbound.isEmpty
        let delivery = topic.deliver(address, cursor: &cursor, queued: batchEvents, maxQueue: hub.options.maxQueue,
                                     dropOldest: hub.options.slowConsumer == .dropOldest, copy: copy,
                                     maxBytes: Self.maxBatchBytes, into: &outbound)
        if delivery.dropped > 0 { counters.count(.eventsDropped, UInt64(delivery.dropped)) }
        if delivery.disconnect {
            counters.count(.slowDisconnects)
            disconnected = true
            return .close
        }
        guard delivery.copied > 0 else { return [] }
        batchEvents = delivery.copied
        headEventRemaining = 0
        return .send
    }

    /// Counts the batch's EVENT frames that a write of `count` bytes from the head of the queue
    /// completed (`events_delivered` counts frames written whole: one the connection ends in the
    /// middle of, at a slow-consumer disconnect, is not).
    mutating func countDeliveredEvents(written count: Int) {
        let head = outbound.committed
        var offset = 0
        var completed = 0
        while offset < count && batchEvents > completed {
            if headEventRemaining == 0 {
                headEventRemaining = Frame.headerSize + Int(head.bigEndian(at: offset, as: UInt32.self))
            }
            let step = min(count - offset, headEventRemaining)
            headEventRemaining -= step
            offset += step
            if headEventRemaining == 0 { completed += 1 }
        }
        if completed > 0 {
            counters.count(.eventsDelivered, UInt64(completed))
            batchEvents -= completed
        }
    }

    mutating func releaseWait() {
        guard let topic = waitTopic else { return }
        topic.stopListening(address)
        hub.heldWaits.subtract(1, ordering: .relaxed)
        waitTopic = nil
        waitDeadline = nil
    }

    mutating func checkFlowControl() -> SessionActions { bound.grew(to: outbound.count) }

    /// Appends an ERROR frame for `error` and counts it; a fatal one ends the exchange.
    mutating func refuse(_ error: FrameError) {
        counters.count(error.counter)
        outbound.appendError(error)
        outbound.commit()
        if error.isFatal { failed = true }
    }
}
