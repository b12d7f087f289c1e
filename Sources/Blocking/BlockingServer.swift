import CSystemShims
import ServerKit
import Protocols
import BackendKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The thread-per-connection model: one acceptor thread blocks in `accept`, and each connection
/// gets its own small-stack OS thread that blocks in `recv` and `send`. Back-pressure is the
/// kernel's: a thread blocked in `send` to a slow reader simply stops reading.
public final class BlockingServer: BackendServer, Sendable {
    public let kind = BackendKind.blocking
    private let configuration: ServerConfiguration
    private let registry = CounterRegistry()
    private let limit: ConnectionLimit
    /// Ends connections whose peer may still be sending (after a refusal) without an RST.
    private let closer: LingeringCloser
    private let stopping = Atomic<Bool>(false)
    /// Open connection sockets and the number of connection threads still running.
    private let live = Mutex<(fds: Set<Int32>, threads: Int)>(([], 0))
    /// The acceptor thread, the listener and the bound address: set by start(), read by stop().
    private let lifecycle: Mutex<(acceptor: OSThread?, listener: DescriptorHandoff?, bound: SocketAddress)>
    /// Notifications between connection threads (each thread is its own loop), and the
    /// notification patterns' topics and jobs.
    private let hub: Hub
    /// Starts a connection's thread for the server's session type.
    private let startConnection: @Sendable (BlockingServer, Int32, ThreadCounters) throws -> OSThread

    static let bufferSize = 16 * 1024
    static let acceptBackoffMicroseconds: UInt32 = 50_000

    public init(configuration: ServerConfiguration) {
        self.configuration = configuration
        self.limit = ConnectionLimit(maximum: configuration.maxConnections)
        closer = LingeringCloser(limit: limit, registry: registry)
        lifecycle = Mutex((nil, nil, configuration.address))
        hub = Hub(options: configuration.notifications)
        let pattern = configuration.pattern
        startConnection = { server, fd, counters in
            try pattern.withSessionType(ConnectionStarter(server: server, fd: fd, counters: counters))
        }
    }

    /// A server whose connections speak `Session`, any conforming type (`configuration.pattern`
    /// is then only what stats report).
    public init<Session: ConnectionSession & ~Copyable>(configuration: ServerConfiguration, session: Session.Type) {
        self.configuration = configuration
        self.limit = ConnectionLimit(maximum: configuration.maxConnections)
        closer = LingeringCloser(limit: limit, registry: registry)
        lifecycle = Mutex((nil, nil, configuration.address))
        hub = Hub(options: configuration.notifications)
        startConnection = { server, fd, counters in
            try ConnectionStarter(server: server, fd: fd, counters: counters).visit(Session.self)
        }
    }

    public var boundAddress: SocketAddress { lifecycle.withLock { $0.bound } }

    public func start() throws {
        // The handoff owns the listener: the server keeps it until `stop`, the acceptor thread
        // borrows its number; if the thread cannot start, the listener closes as it goes.
        let (listener, address) = try Socket.listenOnEachLoop(configuration.address, count: 1, nonBlocking: false)
        let counters = registry.makeCounters()
        guard let listenFD = listener.peek(0) else { preconditionFailure("a new listener is missing") }
        let acceptor = try OSThread(name: "iob-accept") { [self] in acceptLoop(listenFD, counters) }
        lifecycle.withLock { $0 = (acceptor, listener, address) }
        do {
            try hub.start(registry: registry)
        } catch {
            stop()
            throw error
        }
    }

    private func acceptLoop(_ listenFD: Int32, _ counters: ThreadCounters) {
        let sys = SystemCalls(counters: counters)
        while !stopping.load(ordering: .relaxed) {
            let fd: Int32
            do {
                guard let accepted = try sys.accept(listenFD, nonBlocking: false) else { continue }
                fd = accepted
            } catch {
                if stopping.load(ordering: .relaxed) { break }
                sys.count(.acceptErrors)
                if error.errno.isDescriptorExhaustion || error.errno == .noMemory || error.errno == .noBuffers {
                    usleep(Self.acceptBackoffMicroseconds)  // the backlog keeps the waiting connections
                }
                continue
            }
            guard limit.acquire() else {
                sys.count(.refused)
                sys.close(fd)
                continue
            }
            Socket.setNoDelay(fd)
            let admitted = live.withLock { state -> Bool in
                // stop() may have swept the set already; then this socket is ours to close.
                guard !stopping.load(ordering: .relaxed) else { return false }
                state.fds.insert(fd)
                state.threads += 1
                return true
            }
            guard admitted else { sys.close(fd); limit.release(); break }
            sys.count(.accepted)
            let connectionCounters = registry.makeCounters()
            do {
                let thread = try startConnection(self, fd, connectionCounters)
                thread.detach()
            } catch {
                sys.count(.acceptErrors)
                registry.retire(connectionCounters)
                finish(fd, sys)
            }
        }
    }

    /// Starts a connection's thread serving the pattern's session type (specialised per pattern).
    private struct ConnectionStarter: SessionTypeVisitor {
        let server: BlockingServer
        let fd: Int32
        let counters: ThreadCounters
        func visit<Session: ConnectionSession & ~Copyable>(_ type: Session.Type) throws -> OSThread {
            try OSThread(name: "iob-conn", stackSize: server.configuration.threadStackSize) { [server, fd, counters] in
                server.serve(fd, counters, type)
            }
        }
    }

    /// One connection's thread: read, give the bytes to the session, write what it owes (a
    /// blocking send returns only when the kernel took everything), until it says close.
    ///
    /// A session that uses timers or notifications must hear of them while its peer is slow to
    /// read, too: its thread waits in `poll(2)` on the socket (readable while it wants input,
    /// writable while it owes output) and its mailbox's eventfd, and sends without blocking.
    private func serve<Session: ConnectionSession & ~Copyable>(_ fd: Int32, _ counters: ThreadCounters, _: Session.Type) {
        let sys = SystemCalls(counters: counters)
        let bufferSize = min(Self.bufferSize, configuration.maxOwedPerConnection)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 16)
        var session = Session(context: SessionContext(
            maxOwed: configuration.maxOwedPerConnection, maxFrameSize: configuration.maxFrameSize, counters: sys,
            notifier: Session.usesServices ? hub.notifier : nil, hub: Session.usesServices ? hub : nil))
        var inputPaused = false
        /// The peer shut down its sending side (else a close lingers: see ``LingeringCloser``).
        var inputEnded = false
        // Timers and notifications (only for sessions that use them: they cost a poll per read).
        // A post wakes the thread with a signal (no descriptor per connection: 10,000
        // subscribers would otherwise need 20,000).
        var mailbox: LoopMailbox?
        var waker: ThreadWaker?
        var loopNumber: UInt32 = 0
        var notesTaken: [Note] = []
        let services = Session.usesServices
        var watched = pollfd()
        func closeServices() {
            if mailbox != nil {
                hub.notifier.unregister(loopNumber)
                waker?.retire()  // a poster still holding the mailbox signals nobody
                mailbox = nil
            }
            buffer.deallocate()
            finish(fd, sys, lingering: !inputEnded)
            registry.retire(counters)
        }
        if services {
            guard iobench_wake_signal_install() == 0, iobench_wake_signal_block() == 0 else {
                reportError("iobench: a blocking connection cannot have timers or notifications: \(Errno.current)")
                closeServices()
                return
            }
            // Non-blocking from here on: the thread waits in ppoll, never in send or recv.
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            let threadWaker = ThreadWaker(thread: pthread_self())
            let registered = hub.notifier.register { threadWaker.wake() }
            waker = threadWaker
            loopNumber = registered.loop
            mailbox = registered.mailbox
            let opened = session.opened(at: ConnectionAddress(loop: loopNumber, slot: 0, generation: 0))
            if !Self.perform(opened, &session, fd, sys, &inputPaused, dontWait: true) { closeServices(); return }
        }
        serving: while true {
            if let mailbox {
                // Wait for the socket, a notification or the timer, whichever comes first.
                var timeout: Int32 = -1
                if let deadline = session.timerDeadline {
                    let now = ProcessResources.monotonicNanoseconds()
                    timeout = deadline <= now ? 0 : Int32(clamping: (deadline - now + 999_999) / 1_000_000)
                }
                var interest: Int16 = 0
                if !inputPaused && session.wantsInput { interest |= Int16(POLLIN) }
                if session.hasOutbound { interest |= Int16(POLLOUT) }
                watched = pollfd(fd: fd, events: interest, revents: 0)
                sys.count(.poll)
                if iobench_poll_wakeable(&watched, 1, timeout) < 0 {
                    guard errno == EINTR else { break }
                    watched.revents = 0  // woken by a post
                }
                // Looked at after every wait: a wake that came with a ready socket is not
                // reported as an interruption.
                var actions: SessionActions = []
                mailbox.take(into: &notesTaken)
                for note in notesTaken { actions.formUnion(session.notified(note.value)) }
                if let deadline = session.timerDeadline, ProcessResources.monotonicNanoseconds() >= deadline {
                    actions.formUnion(session.timerFired())
                }
                let socketEvents = watched.revents
                if socketEvents & Int16(POLLOUT | POLLERR | POLLHUP) != 0 && session.hasOutbound { actions.insert(.send) }
                if !actions.isEmpty && !Self.perform(actions, &session, fd, sys, &inputPaused, dontWait: true) { break }
                if socketEvents & Int16(POLLIN | POLLERR | POLLHUP) == 0 || inputPaused || !session.wantsInput { continue }
            }
            // Every owed byte was written before the next read, so reading is never paused here.
            assert(services || !inputPaused)
            let n: Int
            do {
                guard case .bytes(let count) = try sys.recv(fd, into: buffer, count: bufferSize) else { continue }
                n = count
            } catch {
                sys.count(.resets)
                break
            }
            var actions: SessionActions
            if n == 0 {
                inputEnded = true
                actions = session.inputDidEnd()
            } else {
                sys.count(.bytesIn, UInt64(n))
                if configuration.injection.isActive { sys.inject(configuration.injection) }
                actions = session.received(UnsafeRawBufferPointer(start: buffer, count: n))
            }
            if actions.contains(.echoReceived) {
                actions.remove(.echoReceived)
                if session.hasOutbound {
                    session.keepEcho(UnsafeRawBufferPointer(start: buffer, count: n))
                    actions.insert(.send)
                } else {
                    // Straight back from the receive buffer. Without services the socket blocks
                    // and a send takes it all; a session with services must not block in send:
                    // what the socket will not take now is kept by the session and written when
                    // it drains.
                    var offset = 0
                    while offset < n {
                        do {
                            guard case .bytes(let w) = try sys.send(fd, from: buffer + offset, count: n - offset) else {
                                if services { break } else { continue }
                            }
                            offset += w
                            sys.count(.bytesOut, UInt64(w))
                            actions.formUnion(session.sent(w))
                        } catch {
                            sys.count(.resets)
                            break serving
                        }
                    }
                    if offset < n {
                        session.keepEcho(UnsafeRawBufferPointer(start: buffer + offset, count: n - offset))
                    } else {
                        actions.remove(.send)  // everything owed was just written
                    }
                }
            }
            if !actions.isEmpty && !Self.perform(actions, &session, fd, sys, &inputPaused, dontWait: services) { break }
            if n == 0 && session.owed == 0 { break }
        }
        closeServices()
    }

    /// Executes a session's actions, and those its writes bring back, until none is left.
    /// Returns false when the connection is to close (the session said so, or a write failed).
    /// A timer change needs nothing here: the deadline is read before every wait. With
    /// `dontWait` (a non-blocking socket), writing stops when the socket is full (the caller
    /// waits for it to drain).
    private static func perform<Session: ConnectionSession & ~Copyable>(
        _ first: SessionActions, _ session: inout Session, _ fd: Int32, _ sys: SystemCalls, _ inputPaused: inout Bool,
        dontWait: Bool = false
    ) -> Bool {
        var actions = first
        while !actions.isEmpty {
            if actions.contains(.pauseInput) { inputPaused = true }
            if actions.contains(.resumeInput) { inputPaused = false }
            if actions.contains(.close) { return false }
            var next: SessionActions = []
            writing: while session.hasOutbound {
                let owed = session.pinOutboundForWrite()
                let w: Int
                do {
                    guard case .bytes(let count) = try sys.send(fd, from: owed.baseAddress!, count: owed.count) else {
                        session.unpinOutbound()
                        if dontWait { break writing }
                        continue
                    }
                    w = count
                } catch {
                    session.unpinOutbound()
                    sys.count(.resets)
                    return false
                }
                sys.count(.bytesOut, UInt64(w))
                next.formUnion(session.sent(w))
            }
            actions = next.subtracting([.send, .timerChanged])
        }
        return true
    }

    /// Wakes a connection's thread from its wait (``iobench_poll_wakeable``), until the thread
    /// retires it: a post racing the connection's end never signals a thread that has gone.
    private final class ThreadWaker: Sendable {
        private let thread: Mutex<pthread_t?>
        init(thread: pthread_t) { self.thread = Mutex(thread) }
        func wake() { thread.withLock { if let thread = $0 { _ = iobench_wake_thread(thread) } } }
        func retire() { thread.withLock { $0 = nil } }
    }

    /// Ends a connection: its socket is closed now, or with `lingering` handed to the
    /// ``LingeringCloser`` (its peer may still be sending).
    private func finish(_ fd: Int32, _ sys: SystemCalls, lingering: Bool = false) {
        // Out of the set before closing, so stop() never shuts down a reused descriptor; the
        // thread count drops only after the close, so stop() returns with every socket closed
        // or handed to the closer, which stop() ends after the threads.
        live.withLock { _ = $0.fds.remove(fd) }
        if lingering {
            closer.adopt(fd, sys)
        } else {
            sys.close(fd)
            sys.count(.closed)
            limit.release()
        }
        live.withLock { $0.threads -= 1 }
    }

    public func stats() -> ServerStats {
        var stats = ServerStats(backend: kind, threads: 1 + live.withLock { $0.threads }, counters: registry.totals())
        stats.pattern = configuration.pattern
        hub.record(into: &stats)
        return stats
    }

    public func stop() {
        hub.stop()
        stopping.store(true, ordering: .relaxed)
        let (acceptor, listener) = lifecycle.withLock { state in
            defer { state.acceptor = nil; state.listener = nil }
            return (state.acceptor, state.listener)
        }
        // shutdown() wakes a thread blocked in accept (EINVAL) or recv/send (EOF/EPIPE).
        if let fd = listener?.peek(0) { SystemCalls.Uncounted.shutdown(fd) }
        acceptor?.join()
        _ = consume listener  // closes it, now that nothing accepts on it
        live.withLock { state in
            for fd in state.fds { SystemCalls.Uncounted.shutdown(fd) }
        }
        // Connection threads are detached; wait (bounded) for each to close its socket and end.
        for _ in 0..<2000 {
            if live.withLock({ $0.threads }) == 0 { break }
            usleep(500)
        }
        closer.stop()
    }
}

extension BackendKind {
    /// A thread per connection, blocking `recv`/`send`.
    public static let blocking = BackendKind("blocking")
}

extension BlockingServer: BackendFactory {
    public static func makeServer(configuration: ServerConfiguration) -> any BackendServer {
        BlockingServer(configuration: configuration)
    }

    public static func makeServer<Session: ConnectionSession & ~Copyable>(configuration: ServerConfiguration, session: Session.Type) -> (any BackendServer)? {
        BlockingServer(configuration: configuration, session: session)
    }
}
