import ResultAnalysis
import CSystemShims
import ServerKit
import Protocols
import BackendKit
import Histogram
#if canImport(Glibc)
import Glibc
#endif

/// Clients of the notification patterns (docs/PROTOCOL.md), all on one epoll thread:
///
/// - `push`: `connections` subscribers (SUBSCRIBE, then every EVENT);
/// - `long-poll`: pollers that keep a WAIT held and ask again from their cursor after every
///   answer;
/// - `short-poll`: pollers that ask every `pollInterval` on a fixed schedule whether there is
///   anything new (a WAIT with timeout 0: EVENTS, or an empty TIMEOUT), or with `jobDuration`,
///   clients that SUBMIT a job and poll STATUS every `pollInterval` until DONE.
///
/// Events come from the server itself (`serve --event-rate`), or from `publishers` connections
/// of this generator at `eventRate` per second on a fixed schedule. Open loop wherever there
/// is a schedule: an event carries the time it was due, a poll goes at its due time (or as
/// soon as its predecessor is answered, counted late), so neither a late generator nor a
/// stalled server can hide delay. Every frame is checked: sequence numbers per client (gaps,
/// duplicates, reorders), payloads, job ids and results.
public struct NotificationLoadOptions: Sendable {
    public enum Mode: String, Sendable, CaseIterable {
        case push
        case longPoll = "long-poll"
        case shortPoll = "short-poll"
    }

    public var target: SocketAddress
    public var mode = Mode.push
    public var connections = 1000
    public var topic: UInt32 = 1
    /// Clients spread over this many topics (`topic`, `topic` + 1, …; client c on topic + c mod
    /// topics). With the server's Poisson events each topic has its own independent stream, so
    /// short polling's theory is checked against many independent samples. Broadcasts are
    /// followed only with one topic.
    public var topics = 1
    public var duration = 5.0
    public var warmup = 1.0
    /// long-poll: each WAIT's timeout.
    public var holdTimeoutMilliseconds: UInt32 = 30_000
    /// long-poll: ask again after each answer (false: one round, as when measuring how
    /// simultaneous timeouts are answered, with nothing else for the generator to do).
    public var rearm = true
    /// short-poll: seconds between one client's polls.
    public var pollInterval = 0.1
    /// short-poll with jobs: each job's duration in seconds (nil: poll the topic for events).
    public var jobDuration: Double?
    /// Events per second: published by `publishers` connections of this generator, or (with
    /// none) the rate the server was told, used for the expected counts and the theory.
    public var eventRate = 0.0
    public var publishers = 0
    /// Payload bytes of the events this generator publishes.
    public var eventSize = 64
    /// Whether the server's events arrive as a Poisson process (`serve --event-arrivals
    /// poisson`), for short polling's theory.
    public var poissonEvents = false
    /// push: subscribers that never read (part of `connections`), to show what a stalled
    /// subscriber does to the others.
    public var stalled = 0
    /// Pin the generator's one thread to this CPU.
    public var cpu: Int?
    /// The server's process, when it runs on this host: its CPU, context switches and threads
    /// over the window and its resident memory are read from `/proc`.
    public var serverPID: Int32?

    public init(target: SocketAddress) { self.target = target }

    /// Clients that listen and are measured.
    public var listeners: Int { max(connections - stalled, 0) }
}

public struct NotificationLoadResult: Sendable {
    public var options: NotificationLoadOptions
    package init(options: NotificationLoadOptions) { self.options = options }
    public var seconds = 0.0
    /// Events the clients learned of in the window (EVENT frames, EVENTS records, DONE answers).
    public var deliveries = 0
    /// Requests the clients sent in the window (SUBSCRIBE, WAIT, SUBMIT, STATUS, PUBLISH) and
    /// the bytes both ways (frames as on the wire, without TCP/IP headers).
    public var requests = 0
    public var bytesSent = 0
    public var bytesReceived = 0
    /// EVENTS answers (long and short polls), TIMEOUTs, and polls (short-poll) in the window.
    public var answers = 0
    public var timeouts = 0
    public var polls = 0
    /// short-poll: polls answered with nothing new (TIMEOUT or PENDING), and their bytes both ways.
    public var emptyPolls = 0
    public var emptyPollBytes = 0
    /// short-poll: polls that could not go at their due time because the previous one was
    /// still unanswered (they went at the answer).
    public var latePolls = 0
    /// Events this generator published (with `publishers`) in the window.
    public var published = 0
    /// Over the whole run, warm-up and drain included: events the clients received (to hold
    /// against the server's `events_delivered`), and this generator's publishes the server
    /// confirmed. With publishers, the run ends by waiting (up to 2 s) until every listener
    /// has every confirmed event, so the two sides' totals can agree exactly.
    public var totalDeliveries = 0
    public var totalPublished = 0
    /// With publishers: whether every listener had every published event by the end.
    public var drained = false
    /// long-poll: records that were already waiting in the log when their WAIT was sent
    /// (published during the re-arm gap), and the re-arm gap itself (an answer's arrival to
    /// the next WAIT's send), in nanoseconds.
    public var caughtUp = 0
    public var rearmGap = LatencyHistogram.latency()
    /// Over the whole run: events missing (a jump in seq), seen twice, or seen after a later one.
    public var gaps = 0
    public var duplicates = 0
    public var reorders = 0
    public var payloadErrors = 0
    public var errors: [String] = []
    /// Publish (or job completion) to the moment the client parsed it, in nanoseconds.
    public var latency = LatencyHistogram.latency()
    /// long-poll: the latency of the events that woke a held WAIT (published after it was sent).
    public var wakeLatency = LatencyHistogram.latency()
    /// long-poll: how long after its deadline each TIMEOUT arrived (deadline: the WAIT's send
    /// time plus its timeout).
    public var timeoutLateness = LatencyHistogram.latency()
    /// short-poll: a poll's round trip (send to answer), the "service time" of the theory.
    public var pollRoundTrip = LatencyHistogram.latency()
    /// The sum of notice latencies (for the mean the theory predicts), nanoseconds.
    public var latencySum = 0.0
    /// Every listener knew of the event: publish to the last one (completion) and first to
    /// last (skew); events whose broadcast completed, and events the window saw only partly.
    public var broadcastCompletion = LatencyHistogram.latency()
    public var broadcastSkew = LatencyHistogram.latency()
    public var broadcasts = 0
    public var incompleteBroadcasts = 0
    public var generatorCPUSeconds = 0.0
    /// With ``NotificationLoadOptions/serverPID``: the server's CPU over the window, its threads
    /// at the end, and its resident memory before connecting, once every connection is in
    /// place, and at the end.
    public var serverCPUSeconds: Double?
    /// Context switches per delivery over warm-up and window.
    public var serverContextSwitchesPerDelivery: Double?
    public var serverThreads: Int?
    public var serverRSSBefore: Int?
    public var serverRSSHeld: Int?
    public var serverRSSEnd: Int?

    /// Server CPU per delivered event, in microseconds.
    public var serverMicrosecondsPerDelivery: Double? {
        guard let serverCPUSeconds, deliveries > 0 else { return nil }
        return serverCPUSeconds * 1e6 / Double(deliveries)
    }

    /// Server memory per connection held, in bytes.
    public var serverBytesPerConnection: Double? {
        guard let before = serverRSSBefore, let held = serverRSSHeld, options.connections > 0 else { return nil }
        return Double(held - before) / Double(options.connections)
    }

    public var deliveriesPerSecond: Double { seconds > 0 ? Double(deliveries) / seconds : 0 }
    public var generatorUtilization: Double { seconds > 0 ? generatorCPUSeconds / seconds : 0 }
    public var emptyPollFraction: Double? { polls > 0 ? Double(emptyPolls) / Double(polls) : nil }
    public var meanLatency: Double? { latency.totalCount > 0 ? latencySum / Double(latency.totalCount) : nil }

    /// short-poll's theory for the mean notice latency: half the interval plus the mean round
    /// trip of a poll, in nanoseconds.
    public var theoreticalNoticeLatency: Double? {
        guard options.mode == .shortPoll, pollRoundTrip.totalCount > 0 else { return nil }
        return options.pollInterval * 1e9 / 2 + pollRoundTrip.mean
    }

    /// short-poll's theory for the empty fraction: e^(−λT) for Poisson events at rate λ; for a
    /// job of duration D polled every T from a random phase, D/T empty polls and one full:
    /// D / (D + T).
    public var theoreticalEmptyFraction: Double? {
        guard options.mode == .shortPoll else { return nil }
        if let d = options.jobDuration { return d / (d + options.pollInterval) }
        guard options.poissonEvents, options.eventRate > 0 else { return nil }
        return exp(-options.eventRate * options.pollInterval)
    }
}

public enum NotificationLoad {
    /// Connects every client and puts it in place (subscribed, WAIT held, job submitted),
    /// then calls `ready` (the caller may sample the server) and runs for warm-up plus duration.
    /// `windowStarted` is called as the measured window opens, `windowEnded` when it closes,
    /// before anything is closed (the caller may read the server's counters over the same span
    /// as ``NotificationLoadResult/totalDeliveries``, or zero and dump a counted server's).
    public static func run(_ options: NotificationLoadOptions, ready: () -> Void = {}, windowStarted: () -> Void = {},
                           windowEnded: () -> Void = {}) throws -> NotificationLoadResult {
        var engine = try Engine(options)
        defer { engine.closeAll() }
        try engine.connect()
        ready()
        try engine.drive(windowStarted, windowEnded)
        return engine.result
    }

    enum Role { case listener, stalled, publisher }

    struct Client {
        let fd: Int32
        let role: Role
        var pending: [UInt8] = []
        /// The next seq expected (0: not known yet).
        var expected: UInt64 = 0
        /// The newest seq seen (a poll's cursor), 0 for none yet.
        var cursor: UInt64 = 0
        /// Sequence numbers skipped lately: one arriving later is a reorder, not a duplicate.
        var missing: [UInt64] = []
        /// A request is out and unanswered (a WAIT or poll, a STATUS or SUBMIT).
        var outstanding = false
        /// A poll fell due while one was out: send it at the answer.
        var owed = false
        var sentAt: UInt64 = 0
        var sentBytes = 0
        var jobID: UInt64 = 0
        init(fd: Int32, role: Role) { self.fd = fd; self.role = role }
    }

    /// A broadcast being followed: who has it so far.
    struct Broadcast {
        var seq: UInt64 = 0
        var published: UInt64 = 0
        var first: UInt64 = 0
        var last: UInt64 = 0
        var count = 0
    }

    struct Engine {
        let options: NotificationLoadOptions
        var result: NotificationLoadResult
        let probe: ProcessProbe?
        let epoll: Int32
        var clients: [Client] = []
        var schedule = TimerQueue()
        var broadcasts: [Broadcast]
        var random = 0x2545_F491_4F6C_DD1D as UInt64
        var start: UInt64 = 0
        var windowStart: UInt64 = 0
        var end: UInt64 = 0
        var now: UInt64 = 0
        var publishIndex = 0
        var publishesSent = 0
        var lastPublished: UInt64 = 0

        init(_ options: NotificationLoadOptions) throws {
            self.options = options
            result = NotificationLoadResult(options: options)
            probe = options.serverPID.map(ProcessProbe.init(pid:))
            broadcasts = Array(repeating: Broadcast(), count: 1 << 13)
            if let cpu = options.cpu { try ProcessResources.pin(to: [cpu]) }
            epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
            guard epoll >= 0 else { throw LoadError.badOptions("epoll_create1: \(Errno.current)") }
        }

        mutating func closeAll() {
            for client in clients { close(client.fd) }
            clients = []
            close(epoll)
        }

        var measuring: Bool { now >= windowStart && now < end }

        // MARK: Setup

        mutating func connect() throws {
            result.serverRSSBefore = probe?.sample()?.residentBytes
            clients.reserveCapacity(options.connections + options.publishers)
            // Connect in batches and wait for each batch's answers, so the server's accept
            // queue never overflows.
            var index = 0
            while index < options.connections {
                let batch = min(256, options.connections - index)
                for i in index..<(index + batch) {
                    let role: Role = i >= options.listeners ? .stalled : .listener
                    let fd = try open(role)
                    clients.append(Client(fd: fd, role: role))
                    if options.mode == .push {
                        guard sendAll(fd, NotificationLoad.frame(.subscribe, u32(topic(of: i)))) else { throw LoadError.badOptions("sending SUBSCRIBE: \(Errno.current)") }
                    }
                }
                if options.mode == .push {
                    for i in index..<(index + batch) {
                        guard let frame = readFrameBlocking(clients[i].fd), frame.kind == Frame.Kind.subscribed.rawValue, frame.body.count == 12 else {
                            throw LoadError.badOptions("connection \(i) was not subscribed (is the server running --pattern push?)")
                        }
                        clients[i].expected = be(frame.body, 4, 8)
                    }
                }
                index += batch
            }
            for _ in 0..<options.publishers {
                clients.append(Client(fd: try open(.publisher), role: .publisher))
            }
            for i in clients.indices where clients[i].role != .stalled {
                var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(u64: UInt64(i)))
                guard epoll_ctl(epoll, EPOLL_CTL_ADD, clients[i].fd, &event) == 0 else { throw LoadError.badOptions("epoll_ctl: \(Errno.current)") }
                _ = fcntl(clients[i].fd, F_SETFL, fcntl(clients[i].fd, F_GETFL) | O_NONBLOCK)
            }
            now = ProcessResources.monotonicNanoseconds()
            start = now
            switch options.mode {
            case .push: break
            case .longPoll:
                // Every WAIT at once, after every connection is made: their deadlines fall
                // together, so the timeouts are simultaneous.
                for i in clients.indices where clients[i].role == .listener { sendWait(i, timeout: options.holdTimeoutMilliseconds) }
            case .shortPoll:
                // Poll grids spread evenly over one interval; first jobs start at random.
                let interval = UInt64(options.pollInterval * 1e9)
                for i in 0..<options.listeners {
                    schedule.schedule(now + interval * UInt64(i) / UInt64(max(options.listeners, 1)), slot: UInt32(i), generation: Self.pollTick)
                    if options.jobDuration != nil {
                        schedule.schedule(now + nextRandom() % max(interval, 1), slot: UInt32(i), generation: Self.submitTick)
                    }
                }
            }
            if probe != nil {
                // Held means the server has taken every request in: give it a moment, then read.
                usleep(300_000)
                result.serverRSSHeld = probe?.sample()?.residentBytes
            }
        }

        func open(_ role: Role) throws -> Int32 {
            let fd: Int32
            do { fd = try Socket.connect(to: options.target) } catch { throw LoadError.badOptions("connect to \(options.target): \(error)") }
            Socket.setNoDelay(fd)
            if role == .stalled {
                // A small receive buffer, so the server's queue for it fills soon.
                var size: Int32 = 4096
                setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            }
            return fd
        }

        func topic(of client: Int) -> UInt32 { options.topic &+ UInt32(client % max(options.topics, 1)) }

        mutating func nextRandom() -> UInt64 {
            random ^= random << 13
            random ^= random >> 7
            random ^= random << 17
            return random
        }

        // MARK: The run

        mutating func drive(_ windowStarted: () -> Void, _ windowEnded: () -> Void) throws {
            now = ProcessResources.monotonicNanoseconds()
            windowStart = now + UInt64(options.warmup * 1e9)
            end = windowStart + UInt64(options.duration * 1e9)
            // The generator's own CPU over the window, like the server's (not the warm-up).
            var cpuBefore = ProcessResources.threadCPUNanoseconds()
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 64 * 1024, alignment: 16)
            defer { buffer.deallocate() }
            let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: 256)
            defer { events.deallocate() }
            // The server's CPU from its CPU-time clock at the window's edges (exact, one system
            // call); its context switches from /proc over warm-up and window together (reading
            // every thread's status takes long with thousands of threads: not at the window's
            // edge), divided by the deliveries over the same span.
            let spanStart = probe?.sample()
            let deliveriesAtSpanStart = result.totalDeliveries
            var serverCPUStart: UInt64?
            var windowOpened = false
            let publishInterval = options.publishers > 0 && options.eventRate > 0 ? 1e9 / options.eventRate : 0
            let publishStart = now
            var publishK: UInt64 = 0
            while now < end {
                var next = end
                if publishInterval > 0 { next = min(next, publishStart + UInt64(Double(publishK) * publishInterval)) }
                if let deadline = schedule.nextDeadline { next = min(next, deadline) }
                if !measuring { next = min(next, windowStart) }
                let wait = next > now ? next - now : 0
                var timeout = timespec(tv_sec: Int(wait / 1_000_000_000), tv_nsec: Int(wait % 1_000_000_000))
                let ready = epoll_pwait2(epoll, events, 256, &timeout, nil)
                now = ProcessResources.monotonicNanoseconds()
                if measuring && !windowOpened {
                    windowOpened = true
                    windowStarted()
                    serverCPUStart = probe?.cpuNanoseconds()
                    cpuBefore = ProcessResources.threadCPUNanoseconds()
                }
                if ready < 0 && errno != EINTR { throw LoadError.badOptions("epoll_wait: \(Errno.current)") }
                for k in 0..<max(Int(ready), 0) {
                    let i = Int(events[k].data.u64)
                    guard receive(i, buffer) else { return finish(cpuBefore, serverCPUStart, spanStart, deliveriesAtSpanStart) }
                    consumeFrames(i)
                    if !result.errors.isEmpty { return finish(cpuBefore, serverCPUStart, spanStart, deliveriesAtSpanStart) }
                }
                // Publish what is due, each stamped with its due time.
                while publishInterval > 0 {
                    let due = publishStart + UInt64(Double(publishK) * publishInterval)
                    guard due <= now else { break }
                    publish(due: due)
                    publishK += 1
                }
                while let entry = schedule.popDue(now) { timerDue(entry) }
            }
            finish(cpuBefore, serverCPUStart, spanStart, deliveriesAtSpanStart)
            windowEnded()
            if options.publishers > 0 { drain(buffer, events) }
        }

        /// With publishers: publishing has stopped; waits up to 2 s until the server has
        /// confirmed every PUBLISH and every listener has every event.
        mutating func drain(_ buffer: UnsafeMutableRawPointer, _ events: UnsafeMutablePointer<epoll_event>) {
            let deadline = now + 2_000_000_000
            while now < deadline {
                if result.totalPublished == publishesSent
                    && clients.indices.allSatisfy({ clients[$0].role != .listener || clients[$0].cursor >= lastPublished }) {
                    result.drained = true
                    return
                }
                var timeout = timespec(tv_sec: 0, tv_nsec: 10_000_000)
                let ready = epoll_pwait2(epoll, events, 256, &timeout, nil)
                now = ProcessResources.monotonicNanoseconds()
                for k in 0..<max(Int(ready), 0) {
                    let i = Int(events[k].data.u64)
                    guard receive(i, buffer) else { return }
                    consumeFrames(i)
                    if !result.errors.isEmpty { return }
                }
            }
        }

        mutating func finish(_ cpuBefore: UInt64, _ serverCPUStart: UInt64?, _ spanStart: ProcessProbe.Sample?, _ deliveriesAtSpanStart: Int) {
            // The generator's CPU first: reading a server's /proc afterwards (thousands of
            // threads' status files for the blocking backend) is not the window's work.
            result.seconds = Double(now - min(max(windowStart, start), now)) / 1e9
            result.generatorCPUSeconds = Double(ProcessResources.threadCPUNanoseconds() - cpuBefore) / 1e9
            if let probe, let serverCPUStart, let serverCPUEnd = probe.cpuNanoseconds() {
                result.serverCPUSeconds = Double(serverCPUEnd - serverCPUStart) / 1e9
            }
            if let probe, let spanStart, let spanEnd = probe.sample() {
                let deliveries = result.totalDeliveries - deliveriesAtSpanStart
                if deliveries > 0 {
                    result.serverContextSwitchesPerDelivery = Double(ProcessProbe.contextSwitches(from: spanStart, to: spanEnd)) / Double(deliveries)
                }
                result.serverThreads = spanEnd.threads
                result.serverRSSEnd = spanEnd.residentBytes
            }
            // Broadcasts published in the window that not every listener saw by its end.
            for b in broadcasts where b.seq != 0 && b.published >= windowStart && b.count < options.listeners {
                result.incompleteBroadcasts += 1
            }
        }

        /// Reads everything waiting on client `i`; false when the run must stop.
        mutating func receive(_ i: Int, _ buffer: UnsafeMutableRawPointer) -> Bool {
            while true {
                let n = recv(clients[i].fd, buffer, 64 * 1024, 0)
                if n < 0 {
                    if errno == EAGAIN || errno == EINTR { return true }
                    result.errors.append("connection \(i): recv: \(Errno.current)")
                    return false
                }
                if n == 0 {
                    result.errors.append("connection \(i) closed by the server")
                    return false
                }
                if measuring { result.bytesReceived += n }
                clients[i].pending.append(contentsOf: UnsafeRawBufferPointer(start: buffer, count: n))
                if n < 64 * 1024 { return true }
            }
        }

        // MARK: Requests

        mutating func send(_ i: Int, _ frame: [UInt8]) {
            guard sendAll(clients[i].fd, frame) else {
                result.errors.append("connection \(i): send: \(Errno.current)")
                return
            }
            clients[i].sentAt = now
            clients[i].sentBytes = frame.count
            if measuring {
                result.requests += 1
                result.bytesSent += frame.count
            }
        }

        mutating func sendWait(_ i: Int, timeout: UInt32) {
            let after = clients[i].cursor == 0 ? Frame.fromNow : clients[i].cursor
            send(i, NotificationLoad.frame(.wait, u32(topic(of: i)) + u64(after) + u32(timeout)))
            clients[i].outstanding = true
        }

        /// Timer kinds (an entry's generation): a client's next poll on its grid, or its next
        /// job's start.
        static let pollTick: UInt32 = 0
        static let submitTick: UInt32 = 1

        /// short-poll: a client's timer is due. Polls keep to a fixed grid per client (phase +
        /// k × interval), whatever happens to the answers: a poll due while the previous one
        /// is out goes at the answer and is counted late. A job starts at a random moment, so
        /// its completion falls at a random phase against the grid.
        mutating func timerDue(_ entry: TimerQueue.Entry) {
            let i = Int(entry.slot)
            if entry.generation == Self.submitTick {
                guard !clients[i].outstanding else { return }
                send(i, NotificationLoad.frame(.submit, u32(UInt32((options.jobDuration! * 1000).rounded()))))
                clients[i].outstanding = true
                return
            }
            schedule.schedule(entry.deadline + UInt64(options.pollInterval * 1e9), slot: entry.slot, generation: Self.pollTick)
            if options.jobDuration != nil && clients[i].jobID == 0 { return }  // no job running
            if clients[i].outstanding {
                if !clients[i].owed && measuring { result.latePolls += 1 }
                clients[i].owed = true
                return
            }
            sendPoll(i)
        }

        mutating func sendPoll(_ i: Int) {
            if options.jobDuration != nil {
                send(i, NotificationLoad.frame(.status, u64(clients[i].jobID)))
                clients[i].outstanding = true
            } else {
                sendWait(i, timeout: 0)
            }
            if measuring { result.polls += 1 }
        }

        mutating func publish(due: UInt64) {
            let p = options.connections + publishIndex % options.publishers
            publishIndex += 1
            var body = u32(options.topic) + u64(due)
            for b in 0..<options.eventSize { body.append(UInt8(truncatingIfNeeded: due &+ UInt64(b))) }
            send(p, NotificationLoad.frame(.publish, body))
            publishesSent += 1
            if measuring { result.published += 1 }
        }

        // MARK: Answers

        mutating func consumeFrames(_ i: Int) {
            var at = 0
            let bytes = clients[i].pending
            while bytes.count - at >= 5 {
                let length = Int(be(bytes, at, 4))
                guard bytes.count - at - 5 >= length else { break }
                let kind = bytes[at + 4]
                let body = at + 5
                at = body + length
                handle(i, kind: kind, bytes, body: body, end: at)
                if !result.errors.isEmpty { return }
            }
            clients[i].pending.removeFirst(at)
        }

        mutating func handle(_ i: Int, kind: UInt8, _ bytes: [UInt8], body: Int, end: Int) {
            let length = end - body
            switch kind {
            case Frame.Kind.event.rawValue where length >= 20 && options.mode == .push:
                record(i, seq: be(bytes, body + 4, 8), stamp: be(bytes, body + 12, 8), payload: (body + 20)..<end, in: bytes, woke: false)
            case Frame.Kind.events.rawValue where length >= 8 && options.mode != .push:
                let count = Int(be(bytes, body + 4, 4))
                var r = body + 8
                let asked = clients[i].sentAt
                for index in 0..<count {
                    guard end - r >= 20 else { result.errors.append("an EVENTS frame shorter than its records"); return }
                    let seq = be(bytes, r, 8), stamp = be(bytes, r + 8, 8), len = Int(be(bytes, r + 16, 4))
                    guard end - r - 20 >= len else { result.errors.append("an EVENTS record longer than its frame"); return }
                    // Published after the WAIT went: it woke a held request.
                    let woke = options.mode == .longPoll && index == 0 && stamp >= asked
                    if options.mode == .longPoll && stamp < asked && measuring { result.caughtUp += 1 }
                    record(i, seq: seq, stamp: stamp, payload: (r + 20)..<(r + 20 + len), in: bytes, woke: woke)
                    r += 20 + len
                }
                if measuring { result.answers += 1 }
                answered(i, empty: false, bytes: length + 5)
            case Frame.Kind.timeout.rawValue where length >= 12 && options.mode != .push:
                if clients[i].cursor == 0 { clients[i].cursor = be(bytes, body + 4, 8) }
                if options.mode == .longPoll {
                    // Lateness over the whole run: the first round of timeouts, all together, may
                    // fall before the window.
                    let deadline = clients[i].sentAt + UInt64(options.holdTimeoutMilliseconds) * 1_000_000
                    result.timeoutLateness.record(now > deadline ? now - deadline : 0)
                    if measuring { result.timeouts += 1 }
                }
                answered(i, empty: true, bytes: length + 5)
            case Frame.Kind.accepted.rawValue where length >= 8 && options.jobDuration != nil:
                clients[i].jobID = be(bytes, body, 8)
                clients[i].outstanding = false
            case Frame.Kind.pending.rawValue where length >= 8 && options.jobDuration != nil:
                guard be(bytes, body, 8) == clients[i].jobID else { result.errors.append("PENDING for job \(be(bytes, body, 8)), not the job asked about (\(clients[i].jobID))"); return }
                answered(i, empty: true, bytes: length + 5)
            case Frame.Kind.done.rawValue where length >= 24 && options.jobDuration != nil:
                let id = be(bytes, body, 8), completed = be(bytes, body + 8, 8), value = be(bytes, body + 16, 8)
                guard id == clients[i].jobID, value == jobResult(id) else {
                    result.errors.append("DONE for job \(id) with result \(value): asked about \(clients[i].jobID), expected \(jobResult(id))")
                    return
                }
                if measuring {
                    result.deliveries += 1
                    let latency = now > completed ? now - completed : 0
                    result.latency.record(latency)
                    result.latencySum += Double(latency)
                }
                clients[i].jobID = 0
                clients[i].owed = false
                answered(i, empty: false, bytes: length + 5)
                // The next job starts at a random point within the next interval.
                schedule.schedule(now + nextRandom() % max(UInt64(options.pollInterval * 1e9), 1), slot: UInt32(i), generation: Self.submitTick)
            case Frame.Kind.published.rawValue where clients[i].role == .publisher && length >= 16:
                result.totalPublished += 1
                lastPublished = max(lastPublished, be(bytes, body + 4, 8))
            case Frame.Kind.error.rawValue:
                result.errors.append("the server refused a frame: \(String(decoding: bytes[min(body + 2, end)..<end], as: UTF8.self))")
            default:
                result.errors.append("unexpected frame type 0x\(String(kind, radix: 16)) of \(length) bytes for \(options.mode.rawValue)")
            }
        }

        /// A request was answered: re-arm (long-poll), or send a poll that fell due meanwhile.
        mutating func answered(_ i: Int, empty: Bool, bytes: Int) {
            clients[i].outstanding = false
            switch options.mode {
            case .push: break
            case .longPoll:
                guard options.rearm else { break }
                sendWait(i, timeout: options.holdTimeoutMilliseconds)
                if measuring { result.rearmGap.record(ProcessResources.monotonicNanoseconds() - now) }
            case .shortPoll:
                if measuring {
                    result.pollRoundTrip.record(now - clients[i].sentAt)
                    if empty {
                        result.emptyPolls += 1
                        result.emptyPollBytes += clients[i].sentBytes + bytes
                    }
                }
                if clients[i].owed && (options.jobDuration == nil || clients[i].jobID != 0) {
                    clients[i].owed = false
                    sendPoll(i)
                }
            }
        }

        mutating func record(_ i: Int, seq: UInt64, stamp: UInt64, payload: Range<Int>, in bytes: [UInt8], woke: Bool) {
            if clients[i].expected == 0 { clients[i].expected = seq }  // a poll's first answer
            clients[i].cursor = max(clients[i].cursor, seq)
            if seq < clients[i].expected {
                if let m = clients[i].missing.firstIndex(of: seq) {
                    clients[i].missing.remove(at: m)
                    result.gaps -= 1
                    result.reorders += 1
                } else {
                    result.duplicates += 1
                    return
                }
            } else {
                if seq > clients[i].expected {
                    result.gaps += Int(seq - clients[i].expected)
                    for missed in clients[i].expected..<min(seq, clients[i].expected + 16) { clients[i].missing.append(missed) }
                    if clients[i].missing.count > 64 { clients[i].missing.removeFirst(clients[i].missing.count - 64) }
                }
                clients[i].expected = seq + 1
            }
            // The server's own events: byte i is (seq + i) mod 256; this generator's: (publish_ns + i).
            for (b, byte) in bytes[payload].enumerated() {
                let want = options.publishers > 0 ? UInt8(truncatingIfNeeded: stamp &+ UInt64(b)) : serverEventByte(seq: seq, index: b)
                if byte != want {
                    result.payloadErrors += 1
                    break
                }
            }
            follow(seq: seq, published: stamp)
            result.totalDeliveries += 1
            guard measuring else { return }
            result.deliveries += 1
            let latency = now > stamp ? now - stamp : 0
            result.latency.record(latency)
            result.latencySum += Double(latency)
            if woke { result.wakeLatency.record(latency) }
        }

        /// Follows an event's broadcast: when every listener has it, its completion and skew.
        mutating func follow(seq: UInt64, published: UInt64) {
            guard options.topics == 1 else { return }
            let slot = Int(seq & UInt64(broadcasts.count - 1))
            if broadcasts[slot].seq != seq {
                broadcasts[slot] = Broadcast(seq: seq, published: published, first: now, last: now, count: 0)
            }
            broadcasts[slot].count += 1
            broadcasts[slot].last = now
            if broadcasts[slot].count == options.listeners && published >= windowStart && measuring {
                let b = broadcasts[slot]
                result.broadcasts += 1
                result.broadcastCompletion.record(b.last > b.published ? b.last - b.published : 0)
                result.broadcastSkew.record(b.last - b.first)
            }
        }
    }

    static func frame(_ kind: Frame.Kind, _ body: [UInt8]) -> [UInt8] { u32(UInt32(body.count)) + [kind.rawValue] + body }
    static func u32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) } }
    static func u64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * $0)) } }
    static func be(_ bytes: [UInt8], _ at: Int, _ count: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<count { v = v << 8 | UInt64(bytes[at + i]) }
        return v
    }

    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN { usleep(100); continue }
                return false
            }
            offset += n
        }
        return true
    }

    /// One frame from a blocking socket (setup only).
    static func readFrameBlocking(_ fd: Int32) -> (kind: UInt8, body: [UInt8])? {
        func exact(_ count: Int) -> [UInt8]? {
            var out = [UInt8](repeating: 0, count: count)
            var got = 0
            while got < count {
                let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, count - got, 0) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return nil }
                got += n
            }
            return out
        }
        guard let header = exact(5) else { return nil }
        let length = Int(be(header, 0, 4))
        guard let body = length > 0 ? exact(length) : [] else { return nil }
        return (header[4], body)
    }
}

private func u32(_ v: UInt32) -> [UInt8] { NotificationLoad.u32(v) }
private func u64(_ v: UInt64) -> [UInt8] { NotificationLoad.u64(v) }
private func be(_ bytes: [UInt8], _ at: Int, _ count: Int) -> UInt64 { NotificationLoad.be(bytes, at, count) }
private func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool { NotificationLoad.sendAll(fd, bytes) }
private func readFrameBlocking(_ fd: Int32) -> (kind: UInt8, body: [UInt8])? { NotificationLoad.readFrameBlocking(fd) }

extension NotificationLoadResult {
    /// The figures by name, in a fixed order (the columns of `load --format csv|json` and of
    /// the notification comparison's CSV; results/README.md describes each). Empty when a
    /// figure does not apply or was not measured.
    public var fields: [(name: String, value: String)] {
        let o = options
        func f(_ v: Double?, _ digits: Int = 2) -> String { v.map { String(format: "%.\(digits)f", $0) } ?? "" }
        func us(_ h: LatencyHistogram, _ p: Double) -> String { h.totalCount > 0 ? f(Double(h.valueAtPercentile(p)) / 1000, 1) : "" }
        func usMax(_ h: LatencyHistogram) -> String { h.totalCount > 0 ? f(Double(h.max) / 1000, 1) : "" }
        let perEvent = { (x: Int) -> String in deliveries > 0 ? f(Double(x) / Double(deliveries), 3) : "" }
        var out: [(String, String)] = [
            ("workload", o.mode.rawValue),
            ("connections", "\(o.connections)"),
            ("topics", "\(o.topics)"),
            ("stalled", "\(o.stalled)"),
            ("event_rate", f(o.eventRate, 1)),
            ("publishers", "\(o.publishers)"),
            ("poll_interval_ms", o.mode == .shortPoll ? f(o.pollInterval * 1000, 1) : ""),
            ("job_duration_ms", o.jobDuration.map { f($0 * 1000, 1) } ?? ""),
            ("hold_timeout_ms", o.mode == .longPoll ? "\(o.holdTimeoutMilliseconds)" : ""),
            ("seconds", f(seconds, 3)),
            ("deliveries", "\(deliveries)"),
            ("deliveries_per_s", f(deliveriesPerSecond, 1)),
            ("latency_p50_us", us(latency, 50)), ("latency_p99_us", us(latency, 99)),
            ("latency_p999_us", us(latency, 99.9)), ("latency_max_us", usMax(latency)),
            ("latency_mean_us", f(meanLatency.map { $0 / 1000 }, 1)),
            ("broadcasts", "\(broadcasts)"), ("broadcasts_incomplete", "\(incompleteBroadcasts)"),
            ("broadcast_p50_us", us(broadcastCompletion, 50)), ("broadcast_p99_us", us(broadcastCompletion, 99)),
            ("broadcast_max_us", usMax(broadcastCompletion)),
            ("skew_p50_us", us(broadcastSkew, 50)), ("skew_p99_us", us(broadcastSkew, 99)),
            ("gaps", "\(gaps)"), ("duplicates", "\(duplicates)"), ("reorders", "\(reorders)"), ("payload_errors", "\(payloadErrors)"),
            ("requests", "\(requests)"), ("requests_per_event", perEvent(requests)),
            ("bytes_sent", "\(bytesSent)"), ("bytes_received", "\(bytesReceived)"),
            ("wire_bytes_per_event", perEvent(bytesSent + bytesReceived)),
            ("polls", "\(polls)"), ("polls_per_s", o.mode == .shortPoll && seconds > 0 ? f(Double(polls) / seconds, 1) : ""),
            ("empty_polls", "\(emptyPolls)"), ("empty_fraction", f(emptyPollFraction, 4)),
            ("empty_fraction_theory", f(theoreticalEmptyFraction, 4)),
            ("empty_poll_bytes", emptyPolls > 0 ? f(Double(emptyPollBytes) / Double(emptyPolls), 1) : ""),
            ("late_polls", "\(latePolls)"),
            ("notice_mean_theory_us", f(theoreticalNoticeLatency.map { $0 / 1000 }, 1)),
            ("poll_rtt_p50_us", us(pollRoundTrip, 50)),
            ("answers", "\(answers)"), ("timeouts", "\(timeouts)"),
            ("timeouts_per_s", o.mode == .longPoll && seconds > 0 ? f(Double(timeouts) / seconds, 1) : ""),
            ("timeout_late_p50_us", us(timeoutLateness, 50)), ("timeout_late_max_us", usMax(timeoutLateness)),
            ("wake_p50_us", us(wakeLatency, 50)), ("wake_p99_us", us(wakeLatency, 99)),
            ("caught_up", "\(caughtUp)"), ("rearm_gap_p50_us", us(rearmGap, 50)),
            ("published", "\(published)"),
            ("deliveries_total", "\(totalDeliveries)"), ("published_total", "\(totalPublished)"),
            ("generator_cpu_util", f(generatorUtilization, 3)),
            ("server_cpu_s", f(serverCPUSeconds, 4)),
            ("server_cpu_util", f(serverCPUSeconds.map { seconds > 0 ? $0 / seconds : 0 }, 3)),
            ("server_cpu_us_per_event", f(serverMicrosecondsPerDelivery, 3)),
            ("server_ctx_switches_per_event", f(serverContextSwitchesPerDelivery, 4)),
            ("server_threads", serverThreads.map(String.init) ?? ""),
            ("server_rss_before", serverRSSBefore.map(String.init) ?? ""),
            ("server_rss_held", serverRSSHeld.map(String.init) ?? ""),
            ("server_rss_end", serverRSSEnd.map(String.init) ?? ""),
            ("server_bytes_per_client", f(serverBytesPerConnection, 0)),
        ]
        out.append(("errors", "\(errors.count)"))
        return out
    }
}
