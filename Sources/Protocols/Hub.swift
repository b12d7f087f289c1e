import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import ServerKit

/// What a push subscriber's server does when the subscriber cannot keep up (`--slow-consumer`).
public enum SlowConsumerPolicy: String, CaseIterable, Sendable, CustomStringConvertible {
    /// Skip the oldest events not yet being written; the subscriber sees the gap by sequence
    /// number. Counted as `events_dropped`.
    case dropOldest = "drop-oldest"
    /// Close the subscriber's connection. Counted as `slow_disconnects`.
    case disconnect

    public var description: String { rawValue }
}

/// The options of the notification patterns (push, poll).
public struct NotificationOptions: Sendable, Equatable {
    /// Events that may wait in the server for one subscriber (`--max-queue`); also how many
    /// events each topic keeps for long polls and late readers.
    public var maxQueue = 1024
    public var slowConsumer = SlowConsumerPolicy.dropOldest
    /// Events the server itself publishes per second to every topic that has a listener
    /// (`--event-rate`, 0 for none).
    public var eventRate: Double = 0
    /// Payload bytes of the server's own events (`--event-size`).
    public var eventSize = 64
    /// How long a finished job can still be asked about (`--job-ttl`), in milliseconds.
    public var jobTTLMilliseconds: UInt32 = 10_000
    /// The most jobs the server keeps at once (pending or finished and not yet expired).
    public var maxJobs = 1_000_000
    /// The most topics that may exist at once.
    public var maxTopics = 65_536
    /// The bytes all topics' event logs may hold together (`--max-event-memory`): past it a
    /// PUBLISH that would need more is refused (`out_of_range`), so many topics of big events
    /// cannot take the machine's memory.
    public var maxEventMemory = 256 << 20
    /// When the server's own events fall due (`--event-arrivals`).
    public var eventArrivals = EventArrivals.fixed
    /// A fault to inject, to prove that clients catch it (hidden `--inject-event-fault`).
    public var fault: EventFault?

    public init() {}
}

/// When the server's own events fall due: on a fixed period, or as a Poisson process of the same
/// mean rate (exponential gaps from a seeded generator, so every run has the same schedule).
public enum EventArrivals: String, CaseIterable, Sendable, CustomStringConvertible {
    case fixed, poisson
    public var description: String { rawValue }
}

/// A fault the server injects into what it sends, so a test can prove a client's counting
/// catches it: every `every`-th event (by sequence number) is dropped, sent twice, or sent after
/// the next one; `late` publishes every `every`-th server event 20 ms after its due time (still
/// stamped with that time), answers a job's STATUS with PENDING until 20 ms after its end, and
/// answers every held WAIT's TIMEOUT 20 ms after its deadline.
public struct EventFault: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, CaseIterable, Sendable { case drop, duplicate, reorder, late }
    public var kind: Kind
    public var every: UInt64
    public static let lateNanoseconds: UInt64 = 20_000_000

    /// Parses `KIND:EVERY`, for example `drop:100`.
    public init?(parsing text: String) {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let kind = Kind(rawValue: String(parts[0])), let every = UInt64(parts[1]), every >= 2 else { return nil }
        self.kind = kind
        self.every = every
    }

    public var description: String { "\(kind.rawValue):\(every)" }

    /// Whether `seq` is one the fault acts on.
    @inlinable func hits(_ seq: UInt64) -> Bool { seq % every == 0 }
}

/// The payload byte at `index` of the server's own event `seq` (clients check payloads with it).
@inlinable public func serverEventByte(seq: UInt64, index: Int) -> UInt8 {
    UInt8(truncatingIfNeeded: seq &+ UInt64(index))
}

/// The result of job `id` (a client checks a DONE frame with it).
@inlinable public func jobResult(_ id: UInt64) -> UInt64 { id &* 0x9E37_79B9_7F4A_7C15 }

/// One connection listening to a topic: its address, its loop's mailbox, and whether a note is
/// already on its way (then a new event needs no second one: the connection reads everything
/// up to the newest when it looks).
struct Listener {
    /// Nil where nobody delivers notes (a session driven by hand, as in the fuzz target).
    let mailbox: LoopMailbox?
    var notePending: Bool
}

/// A topic's state, behind its lock: the last events (a ring of whole EVENT frames, each slot's
/// memory reused, so publishing allocates nothing once a slot has grown to its event size) and
/// who listens.
struct TopicState: ~Copyable {
    struct Slot {
        var frame: UnsafeMutableRawPointer?
        var capacity = 0
        var length = 0
    }

    /// The sequence number the next event gets (the first is 1).
    var nextSeq: UInt64 = 1
    /// The most events kept (`--max-queue`).
    let capacity: Int
    /// Allocated at the first publish (a topic only listened to costs no log), 16 slots at
    /// first, doubling up to `capacity` as events accumulate: a topic with few events costs
    /// little (10,000 sparse topics do not take 10,000 full rings).
    var slots: UnsafeMutablePointer<Slot>?
    var ringSize = 0
    var listeners: [ConnectionAddress: Listener] = [:]
    /// Notes to post, by mailbox, reused from publish to publish.
    var outgoing: [ObjectIdentifier: (LoopMailbox, [Note])] = [:]

    init(capacity: Int) { self.capacity = capacity }

    /// Makes room for event `seq` without overwriting a kept event while the ring is smaller
    /// than `capacity`: doubles it, moving each kept event's slot to its place in the larger
    /// ring. False when the memory limit refuses.
    /// The listener at `address` is to be notified again by the next event. By index, not by
    /// `listeners[address]?.notePending = false`: that optional-chained write goes through the
    /// dictionary's `_modify` coroutine, whose frame is heap-allocated, once per delivery.
    mutating func clearNotePending(_ address: ConnectionAddress) {
        guard let index = listeners.index(forKey: address) else { return }
        listeners.values[index].notePending = false
    }

    mutating func makeRoom(for seq: UInt64, memory: EventMemory) -> Bool {
        guard slots == nil || (seq > UInt64(ringSize) && ringSize < capacity) else { return true }
        let newSize = slots == nil ? min(16, capacity) : min(ringSize * 2, capacity)
        guard memory.reserve((newSize - ringSize) * MemoryLayout<Slot>.stride) else { return false }
        let grown = UnsafeMutablePointer<Slot>.allocate(capacity: newSize)
        grown.initialize(repeating: Slot(), count: newSize)
        if let old = slots {
            // The ring grows only when full of kept events (one per old slot): each moves to
            // its place in the larger ring.
            precondition(nextSeq - oldestSeq == UInt64(ringSize), "a growing ring holds an event in every slot")
            for kept in oldestSeq..<nextSeq {
                grown[Int(kept % UInt64(newSize))] = old[Int(kept % UInt64(ringSize))]
            }
            old.deallocate()
        }
        slots = grown
        ringSize = newSize
        return true
    }

    deinit {
        if let slots {
            for i in 0..<ringSize { slots[i].frame?.deallocate() }
            slots.deallocate()
        }
    }

    /// The oldest sequence number still kept.
    var oldestSeq: UInt64 { nextSeq > UInt64(ringSize) ? nextSeq - UInt64(ringSize) : 1 }

    /// The EVENT frame of `seq` (which must be kept).
    func frame(_ seq: UInt64) -> UnsafeRawBufferPointer {
        let slot = slots![Int(seq % UInt64(ringSize))]
        return UnsafeRawBufferPointer(start: slot.frame, count: slot.length)
    }
}

/// The bytes the topics' event logs hold, against their limit (shared by every topic of a hub).
final class EventMemory: Sendable {
    let limit: Int
    let used = Atomic<Int>(0)

    init(limit: Int) { self.limit = limit }

    /// Takes `bytes` more if that stays within the limit.
    func reserve(_ bytes: Int) -> Bool {
        if used.add(bytes, ordering: .relaxed).newValue > limit {
            used.subtract(bytes, ordering: .relaxed)
            return false
        }
        return true
    }
}

/// A topic: events with per-topic sequence numbers, and the connections listening.
public final class Topic: Sendable {
    public let id: UInt32
    let memory: EventMemory
    /// Drop, duplicate and reorder act where events are copied out (push and long polls).
    let fault: EventFault?
    let state: Mutex<TopicState>
    /// ``TopicState/nextSeq``, readable without the lock (a listener checks whether there is
    /// anything new before it takes the lock).
    let head = Atomic<UInt64>(1)
    package let listenerCount = Atomic<Int>(0)

    init(id: UInt32, capacity: Int, memory: EventMemory, fault: EventFault? = nil) {
        self.id = id
        self.memory = memory
        self.fault = fault.flatMap { $0.kind == .late ? nil : $0 }
        state = Mutex(TopicState(capacity: capacity))
    }

    /// The sequence number the next event will get.
    public var nextSeq: UInt64 { head.load(ordering: .acquiring) }

    /// Publishes an event: stores its EVENT frame, notifies every listener that has no note on
    /// its way yet. Returns its sequence number and how many listen, or nil when storing it
    /// would take the hub's event memory past its limit.
    func publish(time: UInt64, payload: UnsafeRawBufferPointer) -> (seq: UInt64, listeners: Int)? {
        publish(time: time, payloadSize: payload.count) { at, _ in
            if payload.count > 0 { at.copyMemory(from: payload.baseAddress!, byteCount: payload.count) }
        }
    }

    /// Publishes an event whose payload `fill` writes, given its sequence number.
    func publish(time: UInt64, payloadSize: Int, fill: (UnsafeMutableRawPointer, UInt64) -> Void) -> (seq: UInt64, listeners: Int)? {
        // Under the lock: store the event and gather the notes, by mailbox. The notes are posted
        // after it, so a listener woken by one (on another core, or preempting this thread)
        // does not find the topic locked.
        // The batches (one per mailbox) are reused from publish to publish: swapped out of the
        // state here and back below, never copied (a copy would make the first write below
        // copy the dictionary and every batch, allocating on each publish).
        var outgoing: [ObjectIdentifier: (LoopMailbox, [Note])] = [:]
        let published: (seq: UInt64, listeners: Int)? = state.withLock { s in
            let seq = s.nextSeq
            guard s.makeRoom(for: seq, memory: memory) else { return nil }
            let size = Frame.headerSize + Frame.eventFieldsSize + payloadSize
            let slot = s.slots! + Int(seq % UInt64(s.ringSize))
            if slot.pointee.capacity < size {
                let capacity = max(64, size.roundedUpToPowerOfTwo)
                guard memory.reserve(capacity - slot.pointee.capacity) else { return nil }
                slot.pointee.frame?.deallocate()
                slot.pointee.frame = .allocate(byteCount: capacity, alignment: 8)
                slot.pointee.capacity = capacity
            }
            let at = slot.pointee.frame!
            Frame.writeHeader(at, kind: .event, bodyLength: Frame.eventFieldsSize + payloadSize)
            Frame.writeUInt32(at + 5, id)
            Frame.writeUInt64(at + 9, seq)
            Frame.writeUInt64(at + 17, time)
            fill(at + Frame.headerSize + Frame.eventFieldsSize, seq)
            slot.pointee.length = size
            s.nextSeq = seq + 1
            head.store(seq + 1, ordering: .releasing)
            // One batch per mailbox (one lock, at most one wake-up per loop), for the
            // listeners that have no note on its way yet.
            // The dictionaries are walked index by index, never through `indices`: that
            // collection holds a reference to the storage, and writing a value while it lives
            // copies the whole dictionary (on every publish).
            swap(&outgoing, &s.outgoing)
            var index = s.listeners.startIndex
            while index != s.listeners.endIndex {
                defer { index = s.listeners.index(after: index) }
                guard !s.listeners.values[index].notePending, let mailbox = s.listeners.values[index].mailbox else { continue }
                s.listeners.values[index].notePending = true
                let address = s.listeners.keys[index]
                let note = Note(slot: address.slot, generation: address.generation, value: UInt64(id))
                // By index: the dictionary's `subscript(_:default:)` modify would run as a
                // coroutine whose frame is allocated on each call.
                if let batch = outgoing.index(forKey: ObjectIdentifier(mailbox)) {
                    outgoing.values[batch].1.append(note)
                } else {
                    outgoing[ObjectIdentifier(mailbox)] = (mailbox, [note])
                }
            }
            return (seq, s.listeners.count)
        }
        guard let (seq, listeners) = published else { return nil }
        var batch = outgoing.startIndex
        while batch != outgoing.endIndex {
            if !outgoing.values[batch].1.isEmpty {
                outgoing.values[batch].0.post(contentsOf: outgoing.values[batch].1)
                outgoing.values[batch].1.removeAll(keepingCapacity: true)
            }
            batch = outgoing.index(after: batch)
        }
        // Per-connection loops (blocking) make a batch per listener: not worth keeping.
        if outgoing.count <= 64 {
            state.withLock { s in
                if s.outgoing.isEmpty { swap(&s.outgoing, &outgoing) }
            }
        }
        return (seq, listeners)
    }

    /// Adds a subscriber; returns the sequence number of the first event it will get.
    func subscribe(_ address: ConnectionAddress, mailbox: LoopMailbox?) -> UInt64 {
        state.withLock { s in
            if s.listeners.updateValue(Listener(mailbox: mailbox, notePending: false), forKey: address) == nil {
                listenerCount.add(1, ordering: .relaxed)
            }
            return s.nextSeq
        }
    }

    /// What a subscriber's look at its topic came to.
    struct Delivery {
        /// Events copied into the outbound queue.
        var copied = 0
        /// Events skipped by drop-oldest (or lost from the log before the subscriber looked).
        var dropped = 0
        /// The subscriber is too slow and the policy is to disconnect.
        var disconnect = false
    }

    /// push: a subscriber looks at its topic. Events from `cursor` on are its backlog; with
    /// `queued` events of it still being written, more than `maxQueue` in all is too many:
    /// drop-oldest skips the oldest of the backlog, disconnect says so. When `copy` (nothing is
    /// being written), copies up to `maxQueue` events or `maxBytes` into `out`. Clears the
    /// subscriber's pending note, so the next event notifies it again.
    func deliver(_ address: ConnectionAddress, cursor: inout UInt64, queued: Int, maxQueue: Int, dropOldest: Bool,
                 copy: Bool, maxBytes: Int, into out: inout ByteQueue) -> Delivery {
        state.withLock { s in
            s.clearNotePending(address)
            var result = Delivery()
            let oldest = s.oldestSeq
            if cursor < oldest {
                guard dropOldest else { result.disconnect = true; return result }
                result.dropped = Int(oldest - cursor)
                cursor = oldest
            }
            let backlog = Int(s.nextSeq - cursor)
            if queued + backlog > maxQueue {
                guard dropOldest else { result.disconnect = true; return result }
                let skip = min(backlog, queued + backlog - maxQueue)
                result.dropped += skip
                cursor += UInt64(skip)
            }
            guard copy else { return result }
            var bytes = 0
            while cursor < s.nextSeq && result.copied < maxQueue {
                let frame = s.frame(cursor)
                if result.copied > 0 && bytes + frame.count > maxBytes { break }
                if let fault, fault.hits(cursor) {
                    let step = injectFault(fault, s, &cursor, &result.copied, into: &out)
                    if step == .stop { break }
                    if step == .skip { continue }
                }
                out.append(frame)
                bytes += frame.count
                cursor += 1
                result.copied += 1
            }
            out.commit()
            return result
        }
    }

    enum FaultStep { case proceed, skip, stop }

    /// Injects `fault` at `cursor` (push): drop skips the event; duplicate sends it twice;
    /// reorder holds it back until the next exists, then sends the next one first.
    private func injectFault(_ fault: EventFault, _ s: borrowing TopicState, _ cursor: inout UInt64, _ copied: inout Int,
                             into out: inout ByteQueue) -> FaultStep {
        switch fault.kind {
        case .drop:
            cursor += 1
            return .skip
        case .duplicate:
            out.append(s.frame(cursor))
            copied += 1
            return .proceed
        case .reorder:
            guard cursor + 1 < s.nextSeq else { return .stop }
            out.append(s.frame(cursor + 1))
            out.append(s.frame(cursor))
            cursor += 2
            copied += 2
            return .skip
        case .late:
            return .proceed
        }
    }

    /// long polling: answers a WAIT for the events after `after` with an EVENTS frame in `out`
    /// if there are any (at most `maxEvents`, and a frame of at most `maxFrame` bytes), and
    /// stops listening; else, when `listen`, listens (a note comes with the next event).
    /// Returns the number of events answered (0: none yet) and `after` resolved (``Frame/fromNow``
    /// is the newest sequence number now).
    func answerWait(_ address: ConnectionAddress, mailbox: LoopMailbox?, after: UInt64, listen: Bool,
                    maxEvents: Int, maxFrame: Int, into out: inout ByteQueue) -> (answered: Int, after: UInt64) {
        state.withLock { s in
            let newest = s.nextSeq - 1
            let after = after == Frame.fromNow ? newest : after
            guard newest > after else {
                if listen, s.listeners.updateValue(Listener(mailbox: mailbox, notePending: false), forKey: address) == nil {
                    listenerCount.add(1, ordering: .relaxed)
                }
                if !listen { s.clearNotePending(address) }
                return (0, after)
            }
            if s.listeners.removeValue(forKey: address) != nil { listenerCount.subtract(1, ordering: .relaxed) }
            var seq = max(after + 1, s.oldestSeq)
            precondition(out.count == out.committedCount, "an EVENTS frame starts after everything committed")
            _ = out.reserve(Frame.headerSize + 8)
            out.extend(by: Frame.headerSize + 8)
            var size = Frame.headerSize + 8
            var count = 0
            while seq <= newest && count < maxEvents {
                // The events to write here: this one, or per an injected fault none, it twice,
                // or the next one first.
                var first = s.frame(seq)
                var second: UnsafeRawBufferPointer?
                var advance: UInt64 = 1
                if let fault, fault.hits(seq) {
                    switch fault.kind {
                    case .drop:
                        seq += 1
                        continue
                    case .duplicate: second = first
                    case .reorder where seq < newest:
                        second = first
                        first = s.frame(seq + 1)
                        advance = 2
                    default: break
                    }
                }
                let need = Self.recordSize(first) + (second.map(Self.recordSize) ?? 0)
                if count > 0 && size + need > maxFrame { break }
                Self.writeRecord(first, into: &out)
                if let second { Self.writeRecord(second, into: &out) }
                size += need
                count += second == nil ? 1 : 2
                seq += advance
            }
            // The header and fields, now that the size is known (the queue may have moved:
            // find them from the end).
            let header = out.uncommittedStart
            Frame.writeHeader(header, kind: .events, bodyLength: size - Frame.headerSize)
            Frame.writeUInt32(header + 5, id)
            Frame.writeUInt32(header + 9, UInt32(count))
            out.commit()
            return (count, after)
        }
    }

    /// An EVENTS record's size for a stored EVENT frame.
    static func recordSize(_ frame: UnsafeRawBufferPointer) -> Int {
        frame.count - Frame.headerSize - Frame.eventFieldsSize + Frame.eventRecordFieldsSize
    }

    /// Appends an EVENTS record made from a stored EVENT frame: seq and publish_ns as stored,
    /// then the payload's length, then the payload.
    static func writeRecord(_ frame: UnsafeRawBufferPointer, into out: inout ByteQueue) {
        let payload = frame.count - Frame.headerSize - Frame.eventFieldsSize
        let record = Frame.eventRecordFieldsSize + payload
        let at = out.reserve(record)
        at.copyMemory(from: frame.baseAddress! + 9, byteCount: 16)
        Frame.writeUInt32(at + 16, UInt32(payload))
        if payload > 0 { (at + 20).copyMemory(from: frame.baseAddress! + 25, byteCount: payload) }
        out.extend(by: record)
    }

    func stopListening(_ address: ConnectionAddress) {
        state.withLock { s in
            if s.listeners.removeValue(forKey: address) != nil { listenerCount.subtract(1, ordering: .relaxed) }
        }
    }
}

extension Int {
    var roundedUpToPowerOfTwo: Int { self <= 1 ? 1 : 1 << (Int.bitWidth - (self - 1).leadingZeroBitCount) }
}

/// Jobs for short polling: each finishes `duration_ms` after it was submitted, and is
/// forgotten `--job-ttl` after it finished. A job's state follows from the monotonic clock, so
/// a job is done exactly at its deadline, never later for want of a timer wake-up.
struct JobTable: ~Copyable {
    var finishAt: [UInt64: UInt64] = [:]
    var nextID: UInt64 = 1
    /// Forget-by deadlines (finish + TTL), ids split into the entry's two 32-bit fields.
    var expiry = TimerQueue()

    enum Status { case pending, done(completedAt: UInt64), unknown }

    mutating func expire(now: UInt64) {
        while let entry = expiry.popDue(now) {
            finishAt.removeValue(forKey: UInt64(entry.slot) << 32 | UInt64(entry.generation))
        }
    }
}

/// The shared side of the notification patterns: topics with their event logs and listeners,
/// the job table, and the server's own event source. One per server, reached by every loop or
/// thread through ``SessionContext/hub``.
public final class Hub: Sendable {
    public let options: NotificationOptions
    public let notifier: Notifier
    /// The topics by id, and in the order they were made (the event source takes the new ones
    /// from the end; topics are never removed).
    private let topics = Mutex<(byID: [UInt32: Topic], inOrder: [Topic])>(([:], []))
    private let memory: EventMemory
    private let jobs = Mutex(JobTable())
    private let ticker = Mutex<OSThread?>(nil)
    private let stopping = Atomic<Bool>(false)
    /// Subscriptions and held long polls now (gauges for stats).
    public let subscribers = Atomic<Int>(0)
    public let heldWaits = Atomic<Int>(0)

    /// `notifier` reaches the server's loops (one per server: the hub's posts go through it).
    public init(options: NotificationOptions = NotificationOptions(), notifier: Notifier = Notifier()) {
        precondition(options.maxQueue > 0, "maxQueue must be positive")
        self.options = options
        self.notifier = notifier
        memory = EventMemory(limit: options.maxEventMemory)
    }

    /// The topic `id`, made if it does not exist yet; nil when there are too many topics.
    public func topic(_ id: UInt32) -> Topic? {
        topics.withLock { topics in
            if let topic = topics.byID[id] { return topic }
            guard topics.inOrder.count < options.maxTopics else { return nil }
            let topic = Topic(id: id, capacity: options.maxQueue, memory: memory, fault: options.fault)
            topics.byID[id] = topic
            topics.inOrder.append(topic)
            return topic
        }
    }

    /// Every topic made so far.
    package func allTopics() -> [Topic] { topics.withLock { $0.inOrder } }

    /// The topics made after the first `known`.
    func topics(after known: Int) -> ArraySlice<Topic> { topics.withLock { $0.inOrder[min(known, $0.inOrder.count)...] } }

    // MARK: Jobs

    /// Starts a job; nil when the table is full.
    func submit(durationMilliseconds: UInt32, now: UInt64) -> UInt64? {
        let ttl = UInt64(options.jobTTLMilliseconds) * 1_000_000
        return jobs.withLock { table in
            table.expire(now: now)
            guard table.finishAt.count < options.maxJobs else { return nil }
            let id = table.nextID
            table.nextID += 1
            let finish = now + UInt64(durationMilliseconds) * 1_000_000
            table.finishAt[id] = finish
            table.expiry.schedule(finish + ttl, slot: UInt32(truncatingIfNeeded: id >> 32), generation: UInt32(truncatingIfNeeded: id))
            return id
        }
    }

    func status(_ id: UInt64, now: UInt64) -> JobTable.Status {
        jobs.withLock { table in
            table.expire(now: now)
            guard let finish = table.finishAt[id] else { return .unknown }
            let late = options.fault?.kind == .late && id % options.fault!.every == 0 ? EventFault.lateNanoseconds : 0
            return now < finish + late ? .pending : .done(completedAt: finish)
        }
    }

    // MARK: The server's own events

    /// Starts publishing `eventRate` events per second to every topic that has a listener
    /// (nothing when the rate is 0). Its thread counts into `registry`.
    public func start(registry: CounterRegistry) throws {
        guard options.eventRate > 0 else { return }
        let counters = registry.makeCounters()
        let thread = try OSThread(name: "iob-events") { [self] in
            publishOnSchedule(SystemCalls(counters: counters))
            registry.retire(counters)
        }
        ticker.withLock { $0 = thread }
    }

    public func stop() {
        stopping.store(true, ordering: .relaxed)
        ticker.withLock { thread in
            thread?.join()
            thread = nil
        }
    }

    /// Open loop: each event falls due on the schedule (`--event-arrivals`: every 1/rate, or
    /// exponential gaps of mean 1/rate) and carries its due time as its publish time, so a
    /// late publisher shows up as latency instead of hiding it. Every topic that exists (a
    /// client subscribed, waited or published there) gets each event.
    private func publishOnSchedule(_ sys: SystemCalls) {
        let interval = 1e9 / options.eventRate
        let start = ProcessResources.monotonicNanoseconds()
        let size = options.eventSize
        // Fixed: one schedule for every topic. Poisson: each topic its own stream, seeded by
        // its id, so topics are independent samples and every run has the same schedule; the
        // streams' next due times wait in a heap (slot: the topic id).
        struct Stream {
            let topic: Topic
            var k: UInt64 = 0
            var offset: Double  // the next event's due time after start, in nanoseconds
            var random: SplitMix64
        }
        var streams: [UInt32: Stream] = [:]
        var due = TimerQueue()
        var known = 0
        var k: UInt64 = 0  // fixed: the next event's number
        var all: [Topic] = []
        while !stopping.load(ordering: .relaxed) {
            // New topics join (checked by count: topics are never removed).
            let added = topics(after: known)
            if !added.isEmpty {
                all += added
                known += added.count
                if options.eventArrivals == .poisson {
                    let now = Double(ProcessResources.monotonicNanoseconds() - start)
                    for topic in added {
                        var random = SplitMix64(seed: 0x10BE_4C4E_5EED &+ UInt64(topic.id))
                        let offset = now - interval * log(1 - random.nextUnit())
                        streams[topic.id] = Stream(topic: topic, offset: offset, random: random)
                        due.schedule(start + UInt64(offset), slot: topic.id, generation: 0)
                    }
                }
            }
            let next: UInt64
            var n = k
            if options.eventArrivals == .poisson {
                next = due.nextDeadline ?? ProcessResources.monotonicNanoseconds() + 10_000_000
                if let entry = due.first { n = streams[entry.slot]!.k }
            } else {
                next = start + UInt64(Double(k) * interval)
            }
            // An injected `late` fault holds every n-th event back 20 ms past its due time.
            let heldBack = options.fault.map { $0.kind == .late && (n + 1) % $0.every == 0 } == true ? EventFault.lateNanoseconds : 0
            let now = ProcessResources.monotonicNanoseconds()
            if now < next + heldBack || (options.eventArrivals == .poisson && due.isEmpty) {
                // Short sleeps, so stop() never waits long and new topics join soon.
                let nap = min(next + heldBack > now ? next + heldBack - now : 0, 10_000_000)
                var ts = timespec(tv_sec: Int(nap / 1_000_000_000), tv_nsec: Int(nap % 1_000_000_000))
                nanosleep(&ts, nil)
                continue
            }
            if options.eventArrivals == .poisson {
                let entry = due.popDue(UInt64.max)!
                var stream = streams[entry.slot]!
                publish(stream.topic, at: entry.deadline, size: size, sys)
                stream.k += 1
                stream.offset += -interval * log(1 - stream.random.nextUnit())
                due.schedule(start + UInt64(stream.offset), slot: entry.slot, generation: 0)
                streams[entry.slot] = stream
            } else {
                for topic in all { publish(topic, at: next, size: size, sys) }
                k += 1
            }
        }
    }

    private func publish(_ topic: Topic, at time: UInt64, size: Int, _ sys: SystemCalls) {
        let published = topic.publish(time: time, payloadSize: size) { at, seq in
            for i in 0..<size { at.storeBytes(of: serverEventByte(seq: seq, index: i), toByteOffset: i, as: UInt8.self) }
        }
        if published != nil { sys.count(.eventsPublished) }
    }
}

/// A small seeded generator (SplitMix64), so a Poisson schedule is the same in every run.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    mutating func nextUnit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
