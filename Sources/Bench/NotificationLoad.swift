import CSystemShims
import EchoCore
import Histogram
#if canImport(Glibc)
import Glibc
#endif

/// Listening clients of the push and poll patterns (docs/PROTOCOL.md): `connections` push
/// subscribers, or long pollers that keep a WAIT held and ask again with their cursor after
/// every answer. Events come from the server itself (`serve --event-rate`). Every
/// frame is checked: sequence numbers per connection (gaps, duplicates, reorders counted),
/// and the payloads of the server's own events. Delivery latency is measured from each
/// event's publish time (same host, CLOCK_MONOTONIC) to the moment its frame is parsed.
public struct NotificationLoadOptions: Sendable {
    public enum Mode: String, Sendable, CaseIterable {
        case push
        case longPoll = "long-poll"
    }

    public var target: SocketAddress
    public var mode = Mode.push
    public var connections = 1000
    public var topic: UInt32 = 1
    public var duration = 5.0
    public var warmup = 1.0
    /// long-poll: each WAIT's timeout.
    public var holdTimeoutMilliseconds: UInt32 = 30_000
    /// Pin the generator's one thread to this CPU.
    public var cpu: Int?
    /// The server's process, when it runs on this host: its CPU over the window and its
    /// resident memory before and after the connections are in place are read from `/proc`.
    public var serverPID: Int32?

    public init(target: SocketAddress) { self.target = target }
}

public struct NotificationLoadResult: Sendable {
    public var options: NotificationLoadOptions
    public var seconds = 0.0
    /// Events received in the measured window (EVENT frames, or records of EVENTS frames).
    public var deliveries = 0
    /// long-poll: EVENTS answers and TIMEOUTs in the window.
    public var answers = 0
    public var timeouts = 0
    /// Events missing (a jump in seq), seen twice, or out of order, over the whole run.
    public var gaps = 0
    public var duplicates = 0
    public var payloadErrors = 0
    public var errors: [String] = []
    /// Publish-to-parse latency of the window's deliveries, nanoseconds.
    public var latency = LatencyHistogram.latency()
    public var generatorCPUSeconds = 0.0
    /// With ``NotificationLoadOptions/serverPID``: the server's CPU over the window, and its
    /// resident memory before connecting and once every connection is subscribed or held.
    public var serverCPUSeconds: Double?
    public var serverRSSBefore: Int?
    public var serverRSSHeld: Int?

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
}

public enum NotificationLoad {
    /// Connects and subscribes (or holds a WAIT on) every connection, returning once all are
    /// in place; `ready` is then called (the caller may sample the server), and the load runs
    /// for warm-up plus duration.
    public static func run(_ options: NotificationLoadOptions, ready: () -> Void = {}) throws -> NotificationLoadResult {
        if let cpu = options.cpu { try ProcessResources.pin(to: [cpu]) }
        var result = NotificationLoadResult(options: options)
        let probe = options.serverPID.map(ProcessProbe.init(pid:))
        result.serverRSSBefore = probe?.sample()?.residentBytes
        let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw LoadError.badOptions("epoll_create1: \(Errno.current)") }
        defer { close(epoll) }
        var clients: [Listener] = []
        defer { for client in clients { close(client.fd) } }
        clients.reserveCapacity(options.connections)
        // Connect in batches and wait for each batch's first answer, so the server's accept
        // queue never overflows.
        var index = 0
        while index < options.connections {
            let batch = min(256, options.connections - index)
            for _ in 0..<batch {
                let fd: Int32
                do { fd = try Socket.connect(to: options.target) } catch { throw LoadError.badOptions("connect to \(options.target): \(error)") }
                Socket.setNoDelay(fd)
                var client = Listener(fd: fd)
                let first = options.mode == .push ? subscribeFrame(options.topic) : waitFrame(options.topic, after: Frame.fromNow, timeout: options.holdTimeoutMilliseconds)
                guard sendAll(fd, first) else { throw LoadError.badOptions("sending the first frame: \(Errno.current)") }
                client.waiting = options.mode == .longPoll
                clients.append(client)
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
        for i in clients.indices {
            var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(u64: UInt64(i)))
            guard epoll_ctl(epoll, EPOLL_CTL_ADD, clients[i].fd, &event) == 0 else { throw LoadError.badOptions("epoll_ctl: \(Errno.current)") }
            _ = fcntl(clients[i].fd, F_SETFL, fcntl(clients[i].fd, F_GETFL) | O_NONBLOCK)
        }
        if let probe {
            // Held means the server has taken every WAIT in: give it a moment, then read.
            usleep(300_000)
            result.serverRSSHeld = probe.sample()?.residentBytes
        }
        ready()
        let start = ProcessResources.monotonicNanoseconds()
        let windowStart = start + UInt64(options.warmup * 1e9)
        let end = windowStart + UInt64(options.duration * 1e9)
        let cpuBefore = ProcessResources.threadCPUNanoseconds()
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: 256)
        defer { events.deallocate() }
        var now = start
        var serverCPUStart: UInt64?
        while now < end {
            let ready = epoll_wait(epoll, events, 256, 10)
            now = ProcessResources.monotonicNanoseconds()
            let measuring = now >= windowStart
            if measuring && serverCPUStart == nil { serverCPUStart = probe?.cpuNanoseconds() ?? 0 }
            if ready < 0 && errno != EINTR { throw LoadError.badOptions("epoll_wait: \(Errno.current)") }
            for k in 0..<max(Int(ready), 0) {
                let i = Int(events[k].data.u64)
                while true {
                    let n = recv(clients[i].fd, buffer, 64 * 1024, 0)
                    if n < 0 {
                        if errno == EAGAIN || errno == EINTR { break }
                        result.errors.append("connection \(i): recv: \(Errno.current)")
                        return result
                    }
                    if n == 0 {
                        result.errors.append("connection \(i) closed by the server")
                        return result
                    }
                    clients[i].pending.append(contentsOf: UnsafeRawBufferPointer(start: buffer, count: n))
                    if n < 64 * 1024 { break }
                }
                consumeFrames(&clients[i], &result, options: options, measuring: measuring)
                if !result.errors.isEmpty { return result }
            }
        }
        if let probe, let started = serverCPUStart, let ended = probe.cpuNanoseconds() {
            result.serverCPUSeconds = Double(ended - started) / 1e9
        }
        result.seconds = Double(now - max(windowStart, start)) / 1e9
        result.generatorCPUSeconds = Double(ProcessResources.threadCPUNanoseconds() - cpuBefore) / 1e9
        return result
    }

    struct Listener {
        let fd: Int32
        var pending: [UInt8] = []
        /// The next seq expected (push), or the cursor (long-poll: the last seq seen).
        var expected: UInt64 = 0
        var cursor: UInt64 = 0
        var waiting = false
        init(fd: Int32) { self.fd = fd }
    }

    static func consumeFrames(_ client: inout Listener, _ result: inout NotificationLoadResult, options: NotificationLoadOptions, measuring: Bool) {
        var at = 0
        let bytes = client.pending
        while bytes.count - at >= 5 {
            let length = Int(be(bytes, at, 4))
            guard bytes.count - at - 5 >= length else { break }
            let kind = bytes[at + 4]
            let body = at + 5
            at = body + length
            let now = ProcessResources.monotonicNanoseconds()
            switch kind {
            case Frame.Kind.event.rawValue where length >= 20:
                let seq = be(bytes, body + 4, 8)
                record(&client, &result, seq: seq, stamp: be(bytes, body + 12, 8), payload: (body + 20)..<at, in: bytes, now: now, measuring: measuring)
            case Frame.Kind.events.rawValue where length >= 8:
                let count = Int(be(bytes, body + 4, 4))
                var i = body + 8
                for _ in 0..<count where at - i >= 20 {
                    let seq = be(bytes, i, 8), len = Int(be(bytes, i + 16, 4))
                    record(&client, &result, seq: seq, stamp: be(bytes, i + 8, 8), payload: (i + 20)..<(i + 20 + len), in: bytes, now: now, measuring: measuring)
                    client.cursor = max(client.cursor, seq)
                    i += 20 + len
                }
                if measuring { result.answers += 1 }
                client.waiting = false
            case Frame.Kind.timeout.rawValue where length >= 12:
                if measuring { result.timeouts += 1 }
                if client.cursor == 0 { client.cursor = be(bytes, body + 4, 8) }
                client.waiting = false
            case Frame.Kind.error.rawValue:
                result.errors.append("the server refused a frame: \(String(decoding: bytes[(body + 2)..<at], as: UTF8.self))")
                return
            default:
                result.errors.append("unexpected frame type \(kind)")
                return
            }
        }
        client.pending.removeFirst(at)
        if options.mode == .longPoll && !client.waiting {
            // Ask again from the cursor: nothing published in between is lost.
            let after = client.cursor == 0 ? Frame.fromNow : client.cursor
            if sendAll(client.fd, waitFrame(options.topic, after: after, timeout: options.holdTimeoutMilliseconds)) {
                client.waiting = true
            } else {
                result.errors.append("sending a WAIT: \(Errno.current)")
            }
        }
    }

    static func record(_ client: inout Listener, _ result: inout NotificationLoadResult, seq: UInt64, stamp: UInt64,
                       payload: Range<Int>, in bytes: [UInt8], now: UInt64, measuring: Bool) {
        if client.expected == 0 { client.expected = seq }  // a long poll's first answer
        if seq < client.expected {
            result.duplicates += 1
            return
        }
        if seq > client.expected { result.gaps += Int(seq - client.expected) }
        client.expected = seq + 1
        // The events are the server's own: byte i is (seq + i) mod 256.
        for (i, byte) in bytes[payload].enumerated() where byte != serverEventByte(seq: seq, index: i) {
            result.payloadErrors += 1
            break
        }
        guard measuring else { return }
        result.deliveries += 1
        result.latency.record(now > stamp ? now - stamp : 0)
    }

    static func subscribeFrame(_ topic: UInt32) -> [UInt8] { frame(.subscribe, u32(topic)) }
    static func waitFrame(_ topic: UInt32, after: UInt64, timeout: UInt32) -> [UInt8] { frame(.wait, u32(topic) + u64(after) + u32(timeout)) }
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
