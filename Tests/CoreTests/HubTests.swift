import ServerKit
@testable import Protocols
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

// The hub's parts, each without sockets: a topic's event log, fault injection where events are
// copied out, the job table, the server's own event source, and the notification session driven
// by hand the way a backend drives it.

/// A big-endian integer of `count` bytes at `offset`.
private func bigEndian(_ bytes: some RandomAccessCollection<UInt8>, _ offset: Int, _ count: Int) -> UInt64 {
    let start = bytes.index(bytes.startIndex, offsetBy: offset)
    return bytes[start..<bytes.index(start, offsetBy: count)].reduce(0) { $0 << 8 | UInt64($1) }
}

/// Frames in `bytes`: kind and body.
private func frames(_ bytes: [UInt8]) -> [(kind: UInt8, body: [UInt8])] {
    var found: [(kind: UInt8, body: [UInt8])] = []
    var at = 0
    while at + 5 <= bytes.count {
        let length = Int(bigEndian(bytes, at, 4))
        guard at + 5 + length <= bytes.count else { break }
        found.append((bytes[at + 4], Array(bytes[(at + 5)..<(at + 5 + length)])))
        at += 5 + length
    }
    return found
}

/// The sequence numbers of the EVENT frames in `bytes`, and whether each payload is the one its
/// publish wrote (`[UInt8(seq)]` repeated).
private func eventSeqs(_ bytes: [UInt8]) -> [UInt64] {
    frames(bytes).filter { $0.kind == 0x92 }.map { frame in
        let seq = bigEndian(frame.body, 4, 8)
        #expect(frame.body[20...].allSatisfy { $0 == UInt8(truncatingIfNeeded: seq) }, "event \(seq) carries another's payload")
        return seq
    }
}

private func publish(_ topic: Topic, count: Int, size: Int = 4) {
    for _ in 0..<count {
        let published = topic.publish(time: 0, payloadSize: size) { at, seq in
            at.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: seq), count: size)
        }
        #expect(published != nil)
    }
}

/// Copies everything `topic` has for `address` from `cursor` on (push's look at its topic).
private func deliverAll(_ topic: Topic, _ address: ConnectionAddress, cursor: inout UInt64, maxQueue: Int = 1000,
                        dropOldest: Bool = true) -> (bytes: [UInt8], delivery: Topic.Delivery) {
    var out = ByteQueue()
    let delivery = topic.deliver(address, cursor: &cursor, queued: 0, maxQueue: maxQueue, dropOldest: dropOldest,
                                 copy: true, maxBytes: 1 << 20, into: &out)
    return (Array(out.committed), delivery)
}

@Suite struct TopicLogTests {
    @Test func aTopicOnlyListenedToHasNoLogAndTheLogGrowsToItsCapacityKeepingEveryEvent() {
        let topic = Topic(id: 7, capacity: 40, memory: EventMemory(limit: 1 << 20))
        let address = ConnectionAddress(loop: 0, slot: 1, generation: 1)
        #expect(topic.subscribe(address, mailbox: nil) == 1)
        #expect(topic.state.withLock { $0.slots == nil }, "a topic without events allocated a log")
        var sizes: [Int] = []
        for _ in 1...40 {
            publish(topic, count: 1)
            sizes.append(topic.state.withLock { $0.ringSize })
        }
        // 16 slots, doubled when full, capped at the capacity.
        #expect(sizes[0] == 16 && sizes[15] == 16 && sizes[16] == 32 && sizes[31] == 32 && sizes[32] == 40 && sizes[39] == 40, "\(sizes)")
        var cursor: UInt64 = 1
        #expect(eventSeqs(deliverAll(topic, address, cursor: &cursor).bytes) == Array(1...40), "growing lost or moved an event")
        // Past the capacity the oldest go: a late reader from 1 sees 11...50 and is told 10 were dropped.
        publish(topic, count: 10)
        #expect(topic.state.withLock { $0.oldestSeq } == 11)
        var late: UInt64 = 1
        let (bytes, delivery) = deliverAll(topic, address, cursor: &late)
        #expect(eventSeqs(bytes) == Array(11...50))
        #expect(delivery.dropped == 10 && delivery.copied == 40 && late == 51)
    }

    @Test func aFullLogDisconnectsASlowReaderWhenThePolicyIsDisconnect() {
        let topic = Topic(id: 1, capacity: 8, memory: EventMemory(limit: 1 << 20))
        let address = ConnectionAddress(loop: 0, slot: 0, generation: 1)
        _ = topic.subscribe(address, mailbox: nil)
        publish(topic, count: 12)
        var cursor: UInt64 = 1
        let (bytes, delivery) = deliverAll(topic, address, cursor: &cursor, dropOldest: false)
        #expect(delivery.disconnect && bytes.isEmpty && cursor == 1)
    }

    @Test func theEventMemoryLimitRefusesAPublishAndKeepsWhatWasThere() {
        // 16 slot headers (24 B each) and 64 B per small event's frame: 384 + 3 × 64 fits in 600, a 4th does not.
        let memory = EventMemory(limit: 600)
        let topic = Topic(id: 2, capacity: 16, memory: memory)
        publish(topic, count: 3)
        let refused = topic.publish(time: 0, payloadSize: 4) { _, _ in }
        #expect(refused == nil)
        #expect(topic.nextSeq == 4, "a refused publish took a sequence number")
        #expect(memory.used.load(ordering: .relaxed) <= 600)
        var cursor: UInt64 = 1
        #expect(eventSeqs(deliverAll(topic, ConnectionAddress(loop: 0, slot: 0, generation: 1), cursor: &cursor).bytes) == [1, 2, 3])
    }

    @Test func aPublishNotifiesEachListenerOnceUntilItLooks() throws {
        let notifier = Notifier()
        let wake = try SystemCalls(counters: ThreadCounters()).makeEventFD()
        defer { close(wake) }
        let (loop, mailbox) = notifier.register(wake: wake)
        let topic = Topic(id: 3, capacity: 16, memory: EventMemory(limit: 1 << 20))
        let a = ConnectionAddress(loop: loop, slot: 4, generation: 9)
        let b = ConnectionAddress(loop: loop, slot: 5, generation: 3)
        _ = topic.subscribe(a, mailbox: mailbox)
        _ = topic.subscribe(b, mailbox: mailbox)
        let first = try #require(topic.publish(time: 0, payloadSize: 0) { _, _ in })
        #expect(first.seq == 1 && first.listeners == 2)
        publish(topic, count: 2)
        // One note per listener for the three events: the second and third found one on its way.
        let notes = mailbox.take().sorted { $0.slot < $1.slot }
        #expect(notes == [Note(slot: 4, generation: 9, value: 3), Note(slot: 5, generation: 3, value: 3)])
        var cursor: UInt64 = 1
        _ = deliverAll(topic, a, cursor: &cursor)
        publish(topic, count: 1)
        #expect(mailbox.take() == [Note(slot: 4, generation: 9, value: 3)], "only the listener that looked is notified again")
    }
}

@Suite struct EventFaultTests {
    static func delivered(_ kind: EventFault.Kind) -> [UInt64] {
        let topic = Topic(id: 1, capacity: 64, memory: EventMemory(limit: 1 << 20), fault: EventFault(parsing: "\(kind.rawValue):4"))
        let address = ConnectionAddress(loop: 0, slot: 0, generation: 1)
        _ = topic.subscribe(address, mailbox: nil)
        publish(topic, count: 10)
        var cursor: UInt64 = 1
        return eventSeqs(deliverAll(topic, address, cursor: &cursor).bytes)
    }

    @Test func eachFaultChangesExactlyTheEventsItNames() {
        #expect(Self.delivered(.drop) == [1, 2, 3, 5, 6, 7, 9, 10])
        #expect(Self.delivered(.duplicate) == [1, 2, 3, 4, 4, 5, 6, 7, 8, 8, 9, 10])
        #expect(Self.delivered(.reorder) == [1, 2, 3, 5, 4, 6, 7, 9, 8, 10])
        // `late` acts on the server's schedule and job answers, never on what is copied out.
        #expect(Self.delivered(.late) == Array(1...10))
    }

    @Test func aLongPollAnswerCarriesTheSameFaults() {
        let topic = Topic(id: 1, capacity: 64, memory: EventMemory(limit: 1 << 20), fault: EventFault(parsing: "drop:3"))
        publish(topic, count: 7)
        var out = ByteQueue()
        let (answered, after) = topic.answerWait(ConnectionAddress(loop: 0, slot: 0, generation: 1), mailbox: nil, after: 1, listen: true,
                                                  maxEvents: 100, maxFrame: 1 << 16, into: &out)
        #expect(after == 1 && answered == 4)
        let events = frames(Array(out.committed))
        #expect(events.count == 1 && events[0].kind == 0xB0)
        // EVENTS: topic, count, then records of seq, publish_ns, length, payload.
        var seqs: [UInt64] = []
        var at = 8
        while at + 20 <= events[0].body.count {
            seqs.append(bigEndian(events[0].body, at, 8))
            at += 20 + Int(bigEndian(events[0].body, at + 16, 4))
        }
        #expect(seqs == [2, 4, 5, 7])
    }
}

@Suite struct JobTableTests {
    static func hub(ttlMilliseconds: UInt32 = 5, maxJobs: Int = 1000) -> Hub {
        var options = NotificationOptions()
        options.jobTTLMilliseconds = ttlMilliseconds
        options.maxJobs = maxJobs
        return Hub(options: options)
    }

    @Test func aJobIsDoneExactlyAtItsDeadlineAndForgottenAfterItsTTL() throws {
        let hub = Self.hub()
        let submitted: UInt64 = 1_000_000_000
        let id = try #require(hub.submit(durationMilliseconds: 3, now: submitted))
        let finish = submitted + 3_000_000
        guard case .pending = hub.status(id, now: finish - 1) else { Issue.record("not pending 1 ns before its deadline"); return }
        guard case .done(let completedAt) = hub.status(id, now: finish) else { Issue.record("not done at its deadline"); return }
        #expect(completedAt == finish)
        guard case .done = hub.status(id, now: finish + 5_000_000 - 1) else { Issue.record("forgotten before its TTL"); return }
        guard case .unknown = hub.status(id, now: finish + 5_000_000) else { Issue.record("kept past its TTL"); return }
        guard case .unknown = hub.status(id + 1, now: submitted) else { Issue.record("an id never given is known"); return }
    }

    @Test func aFullTableRefusesUntilAJobExpires() throws {
        let hub = Self.hub(ttlMilliseconds: 1, maxJobs: 2)
        let now: UInt64 = 5_000_000
        let first = try #require(hub.submit(durationMilliseconds: 0, now: now))
        let second = try #require(hub.submit(durationMilliseconds: 10, now: now))
        #expect(second == first + 1)
        #expect(hub.submit(durationMilliseconds: 0, now: now) == nil, "a third job fit in a table of two")
        // The first is forgotten 1 ms after it finished: its place is free again.
        #expect(hub.submit(durationMilliseconds: 0, now: now + 1_000_000) != nil)
    }

    @Test func theLateFaultHoldsEveryNthJobPendingPastItsDeadline() throws {
        var options = NotificationOptions()
        options.fault = EventFault(parsing: "late:2")
        let hub = Hub(options: options)
        let one = try #require(hub.submit(durationMilliseconds: 1, now: 0))
        let two = try #require(hub.submit(durationMilliseconds: 1, now: 0))
        guard case .done = hub.status(one, now: 1_000_000) else { Issue.record("job 1 held back"); return }
        guard case .pending = hub.status(two, now: 1_000_000) else { Issue.record("job 2 not held back"); return }
        guard case .done = hub.status(two, now: 1_000_000 + EventFault.lateNanoseconds) else { Issue.record("job 2 held too long"); return }
    }
}

@Suite struct EventSourceTests {
    /// The publish times of topic 1's first `count` server events at `rate` per second.
    static func publishTimes(_ arrivals: EventArrivals, rate: Double, count: Int) throws -> [UInt64] {
        var options = NotificationOptions()
        options.eventRate = rate
        options.eventArrivals = arrivals
        options.eventSize = 3
        let hub = Hub(options: options)
        let topic = try #require(hub.topic(1))
        let registry = CounterRegistry()
        try hub.start(registry: registry)
        let deadline = ProcessResources.monotonicNanoseconds() + 5_000_000_000
        while topic.nextSeq <= UInt64(count) && ProcessResources.monotonicNanoseconds() < deadline { usleep(2000) }
        hub.stop()
        var cursor: UInt64 = 1
        let (bytes, _) = deliverAll(topic, ConnectionAddress(loop: 0, slot: 0, generation: 1), cursor: &cursor)
        let events = frames(bytes).filter { $0.kind == 0x92 }
        #expect(events.count >= count, "\(events.count) events in 5 s at \(rate)/s")
        for event in events {
            let seq = bigEndian(event.body, 4, 8)
            #expect(event.body[20...].elementsEqual((0..<3).map { serverEventByte(seq: seq, index: $0) }), "event \(seq)'s payload")
        }
        return events.prefix(count).map { bigEndian($0.body, 12, 8) }
    }

    @Test func fixedArrivalsAreStampedWithTheirDueTimesOnePeriodApart() throws {
        let times = try Self.publishTimes(.fixed, rate: 1000, count: 20)
        // Stamped with the due time, not the moment of publishing: exact periods, however late the thread ran.
        let gaps = zip(times.dropFirst(), times).map { $0 - $1 }
        #expect(gaps.allSatisfy { (999_999...1_000_001).contains($0) }, "\(gaps)")
    }

    @Test func poissonArrivalsAreTheSameScheduleInEveryRun() throws {
        let first = try Self.publishTimes(.poisson, rate: 2000, count: 30)
        let second = try Self.publishTimes(.poisson, rate: 2000, count: 30)
        let gaps = { (t: [UInt64]) in zip(t.dropFirst(), t).map { Int64(bitPattern: $0 &- $1) } }
        // Each run starts at its own time; the gaps are the seeded stream's, to within rounding.
        for (a, b) in zip(gaps(first), gaps(second)) { #expect(abs(a - b) <= 2, "\(gaps(first)) against \(gaps(second))") }
        let mean = Double(gaps(first).reduce(0, +)) / Double(gaps(first).count)
        #expect(mean > 100_000 && mean < 2_000_000, "mean gap \(mean) ns at 2,000/s")
        #expect(Set(gaps(first)).count > 20, "exponential gaps vary")
    }
}

/// The notification session fed by hand, as a backend feeds it: bytes in, notes from its loop's
/// mailbox, its timer, and everything it asks to send written at once.
@Suite struct NotificationSessionTests {
    final class Connection<Pattern: NotificationPattern> {
        let counters = ThreadCounters()
        let wake: Int32
        let mailbox: LoopMailbox
        var session: NotificationSession<Pattern>
        var written: [UInt8] = []

        init(hub: Hub) {
            wake = try! SystemCalls(counters: counters).makeEventFD()
            let (loop, mailbox) = hub.notifier.register(wake: wake)
            self.mailbox = mailbox
            session = NotificationSession<Pattern>(context: SessionContext(maxOwed: 1 << 20, counters: SystemCalls(counters: counters),
                                                                           notifier: hub.notifier, hub: hub))
            _ = session.opened(at: ConnectionAddress(loop: loop, slot: 0, generation: 1))
        }

        deinit { close(wake) }

        func drain() {
            while session.hasOutbound {
                let bytes = session.pinOutboundForWrite()
                written += bytes
                _ = session.sent(bytes.count)
            }
        }

        func send(_ bytes: [UInt8]) {
            _ = bytes.withUnsafeBytes { session.received($0) }
            drain()
        }

        /// Delivers every note its mailbox holds.
        func deliverNotes() {
            for note in mailbox.take() { _ = session.notified(note.value) }
            drain()
        }

        func take() -> [(kind: UInt8, body: [UInt8])] {
            defer { written.removeAll() }
            return frames(written)
        }
    }

    @Test func aSubscriberGetsEachEventAnotherConnectionPublishes() {
        let hub = Hub()
        var subscriber: Connection<PushPattern>? = Connection<PushPattern>(hub: hub)
        let publisher = Connection<PushPattern>(hub: hub)
        subscriber!.send(Wire.frame(0x10, Wire.u32(9)))
        let subscribed = subscriber!.take()
        #expect(subscribed.count == 1 && subscribed[0].kind == 0x90 && bigEndian(subscribed[0].body, 4, 8) == 1)
        #expect(hub.subscribers.load(ordering: .relaxed) == 1)
        for k in 1...3 as ClosedRange<UInt8> {
            publisher.send(Wire.frame(0x11, Wire.u32(9) + Wire.u64(UInt64(k) * 100) + [k, k]))
        }
        let published = publisher.take()
        #expect(published.map(\.kind) == [0x91, 0x91, 0x91])
        #expect(published.map { bigEndian($0.body, 4, 8) } == [1, 2, 3])
        // PUBLISHED counts the listeners: the subscriber.
        #expect(published.allSatisfy { bigEndian($0.body, 12, 4) == 1 })
        subscriber!.deliverNotes()
        let events = subscriber!.take()
        #expect(events.map(\.kind) == [0x92, 0x92, 0x92])
        for (k, event) in events.enumerated() {
            #expect(bigEndian(event.body, 4, 8) == UInt64(k + 1))
            #expect(bigEndian(event.body, 12, 8) == UInt64(k + 1) * 100, "publish_ns is the publisher's")
            #expect(Array(event.body[20...]) == [UInt8(k + 1), UInt8(k + 1)])
        }
        #expect(subscriber!.counters.value(.eventsPublished) == 0 && publisher.counters.value(.eventsPublished) == 3)
        subscriber = nil
        #expect(hub.subscribers.load(ordering: .relaxed) == 0, "a closed subscriber is still counted")
    }

    @Test func aHeldWaitIsAnsweredByTheNextEventAndAnEmptyOneTimesOut() {
        let hub = Hub()
        let waiter = Connection<PollPattern>(hub: hub)
        let publisher = Connection<PollPattern>(hub: hub)
        waiter.send(Wire.frame(0x30, Wire.u32(4) + Wire.u64(0) + Wire.u32(60_000)))
        #expect(waiter.take().isEmpty, "a WAIT with nothing after its cursor was answered at once")
        #expect(waiter.session.isWaiting && hub.heldWaits.load(ordering: .relaxed) == 1)
        publisher.send(Wire.frame(0x11, Wire.u32(4) + Wire.u64(7) + [1, 2, 3]))
        waiter.deliverNotes()
        let answer = waiter.take()
        #expect(answer.count == 1 && answer[0].kind == 0xB0)
        #expect(bigEndian(answer[0].body, 4, 4) == 1 && bigEndian(answer[0].body, 8, 8) == 1 && Array(answer[0].body[28...]) == [1, 2, 3])
        #expect(!waiter.session.isWaiting && hub.heldWaits.load(ordering: .relaxed) == 0)
        // A WAIT after the newest with a 1 ms timeout: TIMEOUT once its timer fires past the deadline.
        waiter.send(Wire.frame(0x30, Wire.u32(4) + Wire.u64(1) + Wire.u32(1)))
        let deadline = waiter.session.timerDeadline
        #expect(deadline != nil)
        while ProcessResources.monotonicNanoseconds() < deadline! { usleep(200) }
        _ = waiter.session.timerFired()
        waiter.drain()
        let timeout = waiter.take()
        #expect(timeout.count == 1 && timeout[0].kind == 0xB1 && bigEndian(timeout[0].body, 4, 8) == 1)
        #expect(waiter.counters.value(.waitsTimedOut) == 1 && waiter.session.timerDeadline == nil)
    }

    @Test func aSubmittedJobIsPendingThenDoneWithItsResult() throws {
        let hub = Hub()
        let client = Connection<PollPattern>(hub: hub)
        client.send(Wire.frame(0x20, Wire.u32(2)))
        let accepted = client.take()
        #expect(accepted.count == 1 && accepted[0].kind == 0xA0)
        let id = bigEndian(accepted[0].body, 0, 8)
        client.send(Wire.frame(0x21, Wire.u64(id)))
        #expect(client.take().map(\.kind) == [0xA1])
        usleep(3000)
        client.send(Wire.frame(0x21, Wire.u64(id)))
        let done = client.take()
        #expect(done.count == 1 && done[0].kind == 0xA2 && bigEndian(done[0].body, 0, 8) == id)
        #expect(bigEndian(done[0].body, 16, 8) == jobResult(id))
        client.send(Wire.frame(0x21, Wire.u64(id + 99)))
        let unknown = client.take()
        #expect(unknown.count == 1 && unknown[0].kind == 0x7F && bigEndian(unknown[0].body, 0, 2) == 6)
    }
}
