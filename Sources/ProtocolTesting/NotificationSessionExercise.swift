import ServerKit
import Protocols
/// Drives three connections of a notification pattern (push or poll) sharing one ``Hub``, the
/// way backends do, from one arbitrary input, and checks what the specification promises. The
/// fuzz target runs it beside the rpc exercise; the test suite replays the committed corpus.
///
/// Input layout: byte 0 bit 0 picks the pattern (push, poll), bits 1–7 the read chunk size;
/// byte 1 the write limit per peer read (0: everything); then operations, each one byte
/// `op` (connection `op % 3`, action `op / 3 % 6`) with its operands:
/// 0 feed the next `L` (one byte, 1–64) bytes of the input to the connection as client bytes,
///   in chunks; 1 the peer reads; 2 a note arrives (spurious or not); 3 the timer fires;
/// 4 the peer half-closes; 5 the connection ends and a new one takes its place.
///
/// Checked: every server frame is well formed, of a type the pattern sends, no bigger than the
/// maximum; a subscriber's EVENTs come in increasing sequence order, consecutive while nothing
/// was dropped; EVENTS records are in increasing order, after the WAIT's cursor; every event's
/// payload is the one its publisher sent; output owed stays bounded; nothing follows a close;
/// when every connection has ended, no topic has a listener and the gauges are back to zero.
public enum NotificationSessionExercise {
    public static let maxFrame = 512
    public static let maxOwed = 2048

    struct Connection {
        var written: [UInt8] = []
        var parsed = 0
        var closed = false
        var paused = false
        var ended = false
        /// The last EVENT seq seen (push).
        var lastEvent: UInt64 = 0
        var eventsReceived = 0
        /// The connection's own PUBLISH payloads, in order, waiting for their PUBLISHED.
        var sentPublishes: [(topic: UInt32, payload: [UInt8])] = []
        var clientBytes: [UInt8] = []
        var clientParsed = 0
        var clientFailed = false
        var counters = ThreadCounters()
    }

    /// A fault injected into what the server wrote, as the peer sees it (for proving that the
    /// checks catch it).
    public enum Fault: Sendable {
        case none
        /// The last payload byte of every EVENT is flipped.
        case corruptEventPayload
        /// The second EVENT a connection receives is lost.
        case loseEvent
    }

    /// Runs one input; returns a description of the first broken promise, or nil.
    public static func run(_ input: UnsafeRawBufferPointer, fault: Fault = .none) -> String? {
        guard input.count >= 2 else { return nil }
        let poll = input[0] & 1 == 1
        let chunk = Int(input[0] >> 1) + 1
        let writeLimit = Int(input[1] % 64)
        var options = NotificationOptions()
        // 8, or 40 (a topic's ring then grows from 16 slots to 32 and 40 as events accumulate).
        options.maxQueue = input[1] & 64 == 0 ? 8 : 40
        options.maxTopics = 1 << 20  // no PUBLISH refused for its topic (the oracle does not model it)
        options.maxJobs = 64
        options.jobTTLMilliseconds = 1
        let hub = Hub(options: options)
        if poll {
            return exercise(NotificationSession<PollPattern>.self, input, hub: hub, chunk: chunk, writeLimit: writeLimit, fault: fault)
        }
        return exercise(NotificationSession<PushPattern>.self, input, hub: hub, chunk: chunk, writeLimit: writeLimit, fault: fault)
    }

    static func exercise<P: NotificationPattern>(_: NotificationSession<P>.Type, _ input: UnsafeRawBufferPointer, hub: Hub,
                                                 chunk: Int, writeLimit: Int, fault: Fault) -> String? {
        var connections = [Connection(), Connection(), Connection()]
        let sessions = Trio(make(P.self, hub, connections[0], 0), make(P.self, hub, connections[1], 1), make(P.self, hub, connections[2], 2))
        var generation: UInt32 = 0
        /// (topic, seq) → payload, from PUBLISHED answers matched with their PUBLISH.
        var published: [UInt32: [UInt64: [UInt8]]] = [:]
        var seen: [(topic: UInt32, seq: UInt64, payload: [UInt8])] = []
        var problem: String?

        func act(_ index: Int, _ body: (inout NotificationSession<P>) -> SessionActions) -> SessionActions {
            sessions.with(index, body)
        }

        func apply(_ index: Int, _ actions: SessionActions) {
            if actions.contains(.pauseInput) { connections[index].paused = true }
            if actions.contains(.resumeInput) { connections[index].paused = false }
            if actions.contains(.close) { connections[index].closed = true }
            if actions.contains(.echoReceived) { problem = problem ?? "a notification session asked to echo" }
        }

        func peerReads(_ index: Int, limit: Int) {
            while !connections[index].closed {
                var n = 0
                let actions = act(index) { session in
                    guard session.hasOutbound else { return [] }
                    let bytes = session.pinOutboundForWrite()
                    n = min(bytes.count, limit)
                    connections[index].written.append(contentsOf: bytes[..<n])
                    return session.sent(n)
                }
                apply(index, actions)
                if n == 0 { break }
            }
            if let found = parse(index) { problem = problem ?? found }
        }

        /// Parses what the server wrote to connection `index` so far.
        func parse(_ index: Int) -> String? {
            var c = connections[index]
            defer { connections[index] = c }
            while c.written.count - c.parsed >= 5 {
                let at = c.parsed
                let length = Int(be(c.written, at, 4)), kind = c.written[at + 4]
                guard 5 + length <= maxFrame else { return "a \(5 + length)-byte frame, over the maximum \(maxFrame)" }
                guard c.written.count - at - 5 >= length else { break }
                let body = Array(c.written[(at + 5)..<(at + 5 + length)])
                c.parsed = at + 5 + length
                let allowed: Set<UInt8> = P.accepts(.subscribe) ? [0x7F, 0x90, 0x91, 0x92] : [0x7F, 0x91, 0xA0, 0xA1, 0xA2, 0xB0, 0xB1]
                guard allowed.contains(kind) else { return "the server sent type \(kind)" }
                switch kind {
                case 0x7F:
                    guard body.count >= 2, (1...9).contains(be(body, 0, 2)) else { return "a malformed ERROR frame" }
                case 0x91:
                    guard body.count == 16 else { return "PUBLISHED of \(body.count) bytes" }
                    guard !c.sentPublishes.isEmpty else { return "a PUBLISHED with no PUBLISH" }
                    let sent = c.sentPublishes.removeFirst()
                    guard UInt32(be(body, 0, 4)) == sent.topic else { return "PUBLISHED for another topic" }
                    published[sent.topic, default: [:]][be(body, 4, 8)] = sent.payload
                case 0x92:
                    guard body.count >= 20 else { return "EVENT of \(body.count) bytes" }
                    c.eventsReceived += 1
                    if fault == .loseEvent && c.eventsReceived == 2 { continue }
                    var body = body
                    if fault == .corruptEventPayload && body.count > 20 { body[body.count - 1] ^= 0x5A }
                    let seq = be(body, 4, 8)
                    guard seq > c.lastEvent else { return "EVENT \(seq) after \(c.lastEvent)" }
                    let dropped = c.counters.value(.eventsDropped) > 0 || c.counters.value(.slowDisconnects) > 0
                    if c.lastEvent != 0 && !dropped && seq != c.lastEvent + 1 { return "EVENT \(seq) after \(c.lastEvent) with nothing dropped" }
                    c.lastEvent = seq
                    seen.append((UInt32(be(body, 0, 4)), seq, Array(body[20...])))
                case 0xB0:
                    guard body.count >= 8 else { return "EVENTS of \(body.count) bytes" }
                    let topic = UInt32(be(body, 0, 4)), count = Int(be(body, 4, 4))
                    guard count > 0 else { return "EVENTS with no event" }
                    var i = 8, previous: UInt64 = 0
                    for _ in 0..<count {
                        guard body.count - i >= 20 else { return "EVENTS cut short" }
                        let seq = be(body, i, 8), len = Int(be(body, i + 16, 4))
                        guard body.count - i - 20 >= len, seq > previous else { return "EVENTS records out of order or cut" }
                        seen.append((topic, seq, Array(body[(i + 20)..<(i + 20 + len)])))
                        previous = seq
                        i += 20 + len
                    }
                    guard i == body.count else { return "EVENTS with \(body.count - i) stray bytes" }
                default:
                    break
                }
            }
            return nil
        }

        /// The client's frames, decoded independently: the PUBLISH payloads the server should
        /// answer (a valid PUBLISH in a pattern that takes it, before any fatal refusal).
        func noteClientFrames(_ index: Int) {
            var c = connections[index]
            defer { connections[index] = c }
            while !c.clientFailed && c.clientBytes.count - c.clientParsed >= 5 {
                let at = c.clientParsed
                let length = Int(be(c.clientBytes, at, 4)), kind = c.clientBytes[at + 4]
                if 5 + length > maxFrame { c.clientFailed = true; break }
                guard c.clientBytes.count - at - 5 >= length else { break }
                c.clientParsed = at + 5 + length
                if kind == 0x11 && length >= 12 && length - 12 <= maxFrame - Frame.eventOverhead {
                    c.sentPublishes.append((UInt32(be(c.clientBytes, at + 5, 4)), Array(c.clientBytes[(at + 17)..<(at + 5 + length)])))
                }
            }
        }

        var i = 2
        while i < input.count && problem == nil {
            let op = Int(input[i])
            i += 1
            let index = op % 3
            switch op / 3 % 6 {
            case 0:
                guard i < input.count else { break }
                let length = Int(input[i] % 64) + 1
                i += 1
                let end = min(input.count, i + length)
                var at = i
                while at < end && !connections[index].closed && !connections[index].ended {
                    if connections[index].paused { peerReads(index, limit: max(writeLimit, 1)); if connections[index].paused { break } }
                    let n = min(chunk, end - at)
                    let bytes = UnsafeRawBufferPointer(rebasing: input[at..<(at + n)])
                    connections[index].clientBytes.append(contentsOf: bytes)
                    noteClientFrames(index)
                    apply(index, act(index) { $0.received(bytes) })
                    at += n
                    let owed = act(index) { session in session.owed > maxOwed + 32 * 1024 + maxFrame ? .close : [] }
                    if !owed.isEmpty { problem = "owes more than its bounds allow" }
                    if writeLimit > 0 { peerReads(index, limit: writeLimit) }
                }
                i = end
            case 1:
                peerReads(index, limit: writeLimit == 0 ? Int.max : writeLimit)
            case 2:
                if !connections[index].closed { apply(index, act(index) { $0.notified(0) }) }
            case 3:
                if !connections[index].closed { apply(index, act(index) { $0.timerFired() }) }
            case 4:
                if !connections[index].closed && !connections[index].ended {
                    connections[index].ended = true
                    apply(index, act(index) { $0.inputDidEnd() })
                }
            default:
                peerReads(index, limit: Int.max)
                generation += 1
                connections[index] = Connection()
                let slot = UInt32(index) + 3 * generation
                sessions.replace(index, with: make(P.self, hub, connections[index], slot))
            }
        }
        if let problem { return problem }
        for index in 0..<3 {
            peerReads(index, limit: Int.max)
            if let problem { return problem }
        }
        for event in seen {
            if let payload = published[event.topic]?[event.seq], payload != event.payload {
                return "event \(event.seq) of topic \(event.topic) carries another payload than was published"
            }
        }
        sessions.endAll()
        if hub.subscribers.load(ordering: .relaxed) != 0 || hub.heldWaits.load(ordering: .relaxed) != 0 {
            return "gauges at \(hub.subscribers.load(ordering: .relaxed)) subscribers and \(hub.heldWaits.load(ordering: .relaxed)) held waits after every connection ended"
        }
        for topic in hub.allTopics() where topic.listenerCount.load(ordering: .relaxed) != 0 {
            return "topic \(topic.id) still has \(topic.listenerCount.load(ordering: .relaxed)) listeners after every connection ended"
        }
        return nil
    }

    /// Three sessions (not copyable, so not in an array), each replaceable and endable.
    final class Trio<P: NotificationPattern> {
        var s0: NotificationSession<P>?
        var s1: NotificationSession<P>?
        var s2: NotificationSession<P>?

        init(_ a: consuming NotificationSession<P>, _ b: consuming NotificationSession<P>, _ c: consuming NotificationSession<P>) {
            s0 = .some(a)
            s1 = .some(b)
            s2 = .some(c)
        }

        func with(_ index: Int, _ body: (inout NotificationSession<P>) -> SessionActions) -> SessionActions {
            switch index {
            case 0: body(&s0!)
            case 1: body(&s1!)
            default: body(&s2!)
            }
        }

        func replace(_ index: Int, with session: consuming NotificationSession<P>) {
            switch index {
            case 0: s0 = .some(session)
            case 1: s1 = .some(session)
            default: s2 = .some(session)
            }
        }

        func endAll() {
            s0 = nil
            s1 = nil
            s2 = nil
        }
    }

    static func make<P: NotificationPattern>(_: P.Type, _ hub: Hub, _ connection: Connection, _ slot: UInt32) -> NotificationSession<P> {
        var context = SessionContext(maxOwed: maxOwed, maxFrameSize: maxFrame, counters: SystemCalls(counters: connection.counters), hub: hub)
        context.performsWork = false
        var session = NotificationSession<P>(context: context)
        _ = session.opened(at: ConnectionAddress(loop: 0, slot: slot, generation: 0))
        return session
    }

    static func be(_ bytes: [UInt8], _ at: Int, _ count: Int) -> UInt64 {
        (0..<count).reduce(UInt64(0)) { $0 << 8 | UInt64(bytes[at + $1]) }
    }
}
