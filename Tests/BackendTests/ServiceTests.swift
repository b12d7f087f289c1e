import NIOPeer
import Backends
import Blocking
import ServerKit
import Protocols
import BackendKit
import Epoll
import Foundation
import IoUring
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A session written only for these tests, plugged into the unchanged backends: it shows a new
/// protocol is one session type, and it drives the backend services (timers, notifications
/// across loops and threads) through real sockets. Line protocol, one command per line:
///
///     server → client on open:  "addr LOOP SLOT GENERATION"
///     "timer MS"                 arm the timer MS ms from now; when it fires: "fired LATE_US"
///     "cancel"                   cancel the timer
///     "post LOOP SLOT GEN VALUE" post VALUE to that connection; it writes "note VALUE"
struct ServiceProbeSession: ConnectionSession, ~Copyable {
    static var usesServices: Bool { true }

    private var outbound = ByteQueue()
    private var line: [UInt8] = []
    private var deadline: UInt64?
    private var ended = false
    private let notifier: Notifier?

    init(context: SessionContext) { notifier = context.notifier }

    var wantsInput: Bool { !ended }
    var owed: Int { outbound.count }
    var hasOutbound: Bool { outbound.committedCount > 0 }
    var timerDeadline: UInt64? { deadline }

    mutating func opened(at address: ConnectionAddress) -> SessionActions {
        say("addr \(address.loop) \(address.slot) \(address.generation)")
    }

    mutating func received(_ bytes: UnsafeRawBufferPointer) -> SessionActions {
        var actions: SessionActions = []
        for byte in bytes {
            guard byte == UInt8(ascii: "\n") else { line.append(byte); continue }
            let words = String(decoding: line, as: UTF8.self).split(separator: " ")
            line.removeAll()
            switch words.first {
            case "timer":
                deadline = ProcessResources.monotonicNanoseconds() + UInt64(words[1])! * 1_000_000
                actions.insert(.timerChanged)
            case "cancel":
                deadline = nil
                actions.insert(.timerChanged)
            case "post":
                let n = words.dropFirst().map { UInt64($0)! }
                notifier?.post(n[3], to: ConnectionAddress(loop: UInt32(n[0]), slot: UInt32(n[1]), generation: UInt32(n[2])))
            default:
                actions.formUnion(say("unknown"))
            }
        }
        return actions
    }

    mutating func timerFired() -> SessionActions {
        let late = ProcessResources.monotonicNanoseconds() - (deadline ?? 0)
        deadline = nil
        return say("fired \(late / 1000)")
    }

    mutating func notified(_ value: UInt64) -> SessionActions { say("note \(value)") }

    mutating func pinOutboundForWrite() -> UnsafeRawBufferPointer { outbound.pinForWrite() }
    mutating func unpinOutbound() { outbound.consume(0) }
    mutating func sent(_ count: Int) -> SessionActions {
        outbound.consume(count)
        if hasOutbound { return .send }
        return ended ? .close : []
    }

    mutating func inputDidEnd() -> SessionActions {
        ended = true
        return hasOutbound ? .send : .close
    }

    private mutating func say(_ text: String) -> SessionActions {
        Array((text + "\n").utf8).withUnsafeBytes { outbound.append($0) }
        outbound.commit()
        return .send
    }
}

/// A line-reading client with bounded waits.
final class LineClient {
    let client: Client
    private var pending: [UInt8] = []

    init(_ address: SocketAddress) throws { client = try Client(address, timeoutSeconds: 5) }

    func send(_ line: String) throws { try client.send(Array((line + "\n").utf8)) }

    /// The next line, or nil when none arrives within `seconds`.
    func line(within seconds: Double) -> String? {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                defer { pending.removeSubrange(...newline) }
                return String(decoding: pending[..<newline], as: UTF8.self)
            }
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return nil }
            var pfd = pollfd(fd: client.fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, Int32(left * 1000) + 1) > 0 else { return nil }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = recv(client.fd, &chunk, chunk.count, 0)
            guard n > 0 else { return nil }
            pending += chunk[..<n]
        }
    }
}

@Suite(.serialized)
struct ServiceTests {
    static func makeServer(_ kind: BackendKind, threads: Int) throws -> any BackendServer {
        var configuration = ServerConfiguration(address: try SocketAddress(host: "127.0.0.1", port: 0))
        configuration.threads = threads
        // The NIO peer uses NIO's own timers and channels: it serves no session type of ours.
        let factory = Backends.descriptor(kind).factory
        let made: (any BackendServer)? = factory.makeServer(configuration: configuration, session: ServiceProbeSession.self)
        let server = try #require(made)
        try server.start()
        return server
    }

    @Test("timers fire on time, and a cancelled timer does not", arguments: Backends.models)
    func timers(kind: BackendKind) throws {
        let server = try Self.makeServer(kind, threads: 1)
        defer { server.stop() }
        let a = try LineClient(server.boundAddress)
        #expect(a.line(within: 2)?.hasPrefix("addr ") == true)
        let asked = Date()
        try a.send("timer 50")
        let fired = try #require(a.line(within: 2), "\(kind): the timer never fired")
        let elapsed = Date().timeIntervalSince(asked)
        #expect(fired.hasPrefix("fired "), "\(kind): \(fired)")
        #expect(elapsed >= 0.049 && elapsed < 0.5, "\(kind): a 50 ms timer fired after \(elapsed) s")
        try a.send("timer 100")
        try a.send("cancel")
        #expect(a.line(within: 0.3) == nil, "\(kind): a cancelled timer fired")
        try a.send("timer 200")
        try a.send("timer 20")  // re-armed earlier: fires once, at the new deadline
        #expect(a.line(within: 1)?.hasPrefix("fired ") == true)
        #expect(a.line(within: 0.4) == nil, "\(kind): the replaced timer fired too")
    }

    @Test("a notification reaches a connection on another loop or thread, and never a newcomer in its place", arguments: Backends.models)
    func notifications(kind: BackendKind) throws {
        let server = try Self.makeServer(kind, threads: 2)
        defer { server.stop() }
        // Connect until two connections live on different loops (blocking: every one does).
        var clients: [(LineClient, [String])] = []
        var pair: (Int, Int)?
        for _ in 0..<64 where pair == nil {
            let client = try LineClient(server.boundAddress)
            let address = try #require(client.line(within: 2)).split(separator: " ").dropFirst().map(String.init)
            if let other = clients.firstIndex(where: { $0.1[0] != address[0] }) { pair = (other, clients.count) }
            clients.append((client, address))
        }
        let (i, j) = try #require(pair, "\(kind): every connection landed on one loop")
        let (sender, _) = clients[i]
        let (receiver, address) = clients[j]
        try sender.send("post \(address.joined(separator: " ")) 42")
        #expect(receiver.line(within: 2) == "note 42", "\(kind): the note did not cross loops")
        // The receiver goes; a note to its old address is dropped, whoever has its slot now.
        receiver.client.shutdownWrite()
        _ = try receiver.client.receiveToEnd()
        var newcomers: [LineClient] = []
        for _ in 0..<8 { newcomers.append(try LineClient(server.boundAddress)) }
        for newcomer in newcomers { _ = newcomer.line(within: 2) }
        try sender.send("post \(address.joined(separator: " ")) 7")
        for newcomer in newcomers { #expect(newcomer.line(within: 0.2) == nil, "\(kind): a note reached the wrong connection") }
        // And the sender still gets its own.
        let own = clients[i].1
        try sender.send("post \(own.joined(separator: " ")) 9")
        #expect(sender.line(within: 2) == "note 9")
    }
}

@Suite struct ServiceUnitTests {
    @Test func theTimerQueueHandsOutDeadlinesInOrder() {
        var queue = TimerQueue()
        for (i, deadline) in [50, 10, 40, 10, 30, 20].enumerated() { queue.schedule(UInt64(deadline), slot: UInt32(i), generation: 1) }
        #expect(queue.nextDeadline == 10)
        #expect(queue.waitMilliseconds(now: 0) == 1)  // 10 ns rounds up to a whole millisecond
        var due: [UInt64] = []
        while let entry = queue.popDue(35) { due.append(entry.deadline) }
        #expect(due == [10, 10, 20, 30])
        #expect(queue.count == 2)
        #expect(queue.waitMilliseconds(now: 100) == 0)
    }

    @Test func aBurstOfPostsWakesTheLoopOnceAndLosesNothing() throws {
        let counters = ThreadCounters()
        let wake = try SystemCalls(counters: counters).makeEventFD()
        defer { close(wake) }
        let notifier = Notifier()
        let (loop, mailbox) = notifier.register(wake: wake)
        for value in 0..<100 as Range<UInt64> {
            #expect(notifier.post(value, to: ConnectionAddress(loop: loop, slot: 3, generation: 5)))
        }
        var count: UInt64 = 0
        #expect(read(wake, &count, 8) == 8)
        #expect(count == 1)  // one wake-up for the burst
        #expect(mailbox.take().map(\.value) == Array(0..<100))
        notifier.unregister(loop)
        #expect(!notifier.post(1, to: ConnectionAddress(loop: loop, slot: 3, generation: 5)))
    }
}
