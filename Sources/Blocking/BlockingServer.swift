import EchoCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The thread-per-connection model: one acceptor thread blocks in `accept`, and each connection
/// gets its own small-stack OS thread that blocks in `recv` and `send`. Back-pressure is the
/// kernel's: a thread blocked in `send` to a slow reader simply stops reading.
public final class BlockingServer: EchoServer, @unchecked Sendable {
    public let kind = BackendKind.blocking
    private let configuration: ServerConfiguration
    private let registry = CounterRegistry()
    private let limit: ConnectionLimit
    private let stopping = Atomic<Bool>(false)
    /// Open connection sockets and the number of connection threads still running.
    private let live = Mutex<(fds: Set<Int32>, threads: Int)>(([], 0))
    // Written by start()/stop() on the controlling thread only.
    private var acceptor: OSThread?
    private var listener: Int32 = -1
    private var bound: SocketAddress

    static let bufferSize = 16 * 1024
    static let acceptBackoffMicroseconds: UInt32 = 50_000

    public init(configuration: ServerConfiguration) {
        self.configuration = configuration
        self.limit = ConnectionLimit(maximum: configuration.maxConnections)
        self.bound = configuration.address
    }

    public var boundAddress: SocketAddress { bound }

    public func start() throws {
        let (fds, address) = try Socket.listenOnEachLoop(configuration.address, count: 1, nonBlocking: false)
        listener = fds[0]
        bound = address
        let counters = registry.makeCounters()
        let listenFD = listener
        acceptor = try OSThread(name: "iob-accept") { [self] in acceptLoop(listenFD, counters) }
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
                let thread = try configuration.pattern.withSessionType(ConnectionStarter(server: self, fd: fd, counters: connectionCounters))
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
    private func serve<Session: ConnectionSession & ~Copyable>(_ fd: Int32, _ counters: ThreadCounters, _: Session.Type) {
        let sys = SystemCalls(counters: counters)
        let bufferSize = min(Self.bufferSize, configuration.maxOwedPerConnection)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 16)
        var session = Session(context: SessionContext(
            maxOwed: configuration.maxOwedPerConnection, maxFrameSize: configuration.maxFrameSize, counters: sys))
        var inputPaused = false
        serving: while true {
            // Every owed byte was written before the next read, so reading is never paused here.
            assert(!inputPaused)
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
                    // Straight back from the receive buffer: a blocking send takes it all.
                    var offset = 0
                    while offset < n {
                        do {
                            guard case .bytes(let w) = try sys.send(fd, from: buffer + offset, count: n - offset) else { continue }
                            offset += w
                            sys.count(.bytesOut, UInt64(w))
                            actions.formUnion(session.sent(w))
                        } catch {
                            sys.count(.resets)
                            break serving
                        }
                    }
                    actions.remove(.send)  // everything owed was just written
                }
            }
            // The other actions, and those the writes bring back, until none is left.
            while !actions.isEmpty {
                if actions.contains(.pauseInput) { inputPaused = true }
                if actions.contains(.resumeInput) { inputPaused = false }
                if actions.contains(.close) { break serving }
                var next: SessionActions = []
                while session.hasOutbound {
                    let owed = session.pinOutboundForWrite()
                    let w: Int
                    do {
                        guard case .bytes(let count) = try sys.send(fd, from: owed.baseAddress!, count: owed.count) else {
                            _ = session.sent(0)
                            continue
                        }
                        w = count
                    } catch {
                        _ = session.sent(0)
                        sys.count(.resets)
                        break serving
                    }
                    sys.count(.bytesOut, UInt64(w))
                    next.formUnion(session.sent(w))
                }
                actions = next.subtracting(.send)
            }
            if n == 0 && session.owed == 0 { break }
        }
        buffer.deallocate()
        finish(fd, sys)
        registry.retire(counters)
    }

    private func finish(_ fd: Int32, _ sys: SystemCalls) {
        // Out of the set before closing, so stop() never shuts down a reused descriptor; the
        // thread count drops only after the close, so stop() returns with every socket closed.
        live.withLock { _ = $0.fds.remove(fd) }
        sys.close(fd)
        sys.count(.closed)
        limit.release()
        live.withLock { $0.threads -= 1 }
    }

    public func stats() -> ServerStats {
        var stats = ServerStats(backend: kind, threads: 1 + live.withLock { $0.threads }, counters: registry.totals())
        stats.pattern = configuration.pattern
        return stats
    }

    public func stop() {
        stopping.store(true, ordering: .relaxed)
        // shutdown() wakes a thread blocked in accept (EINVAL) or recv/send (EOF/EPIPE).
        if listener >= 0 { shutdown(listener, Int32(SHUT_RDWR)) }
        acceptor?.join()
        acceptor = nil
        if listener >= 0 { close(listener); listener = -1 }
        live.withLock { state in
            for fd in state.fds { shutdown(fd, Int32(SHUT_RDWR)) }
        }
        // Connection threads are detached; wait (bounded) for each to close its socket and end.
        for _ in 0..<2000 {
            if live.withLock({ $0.threads }) == 0 { break }
            usleep(500)
        }
    }
}
