import EchoCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One connection of an epoll loop: kept inline in the loop's ``ConnectionTable``.
struct EpollConnection {
    var fd: Int32
    /// The events registered with epoll now; changed with `Epoll.modify` only when it must.
    var interest: UInt32
    var session: EchoSession
    /// Owed bytes that a send did not take; allocated only when a send falls short, freed once
    /// drained, so an idle connection costs this record and nothing else.
    var pending: UnsafeMutableRawPointer?
    var pendingStart: Int = 0
    var pendingCapacity: Int = 0
}

/// A level-triggered epoll event loop. Per readable connection it makes one `recv` into a
/// shared buffer and one `send` straight back; only what the peer would not take is copied to
/// the connection's pending buffer, with `EPOLLOUT` armed until it drains. At most one `recv`
/// per readiness event keeps the syscall count per message at about two plus a share of
/// `epoll_wait`.
struct EpollEventLoop {
    static let listenerToken = UInt64.max
    static let wakeToken = UInt64.max - 1
    static let readBufferSize = 64 * 1024
    static let eventCapacity: Int32 = 1024
    /// How long accepting pauses after running out of descriptors.
    static let acceptBackoffNanoseconds: UInt64 = 50_000_000

    struct Setup: @unchecked Sendable {
        let listener: Int32
        let epoll: Int32
        let wake: Int32
        let counters: ThreadCounters
        let limit: ConnectionLimit
        let maxOwed: Int
        let injection: CostInjection
    }

    private let setup: Setup
    private let sys: SystemCalls
    private var connections = ConnectionTable<EpollConnection>(initialCapacity: 256)
    private let readBuffer: UnsafeMutableRawPointer
    private let events: UnsafeMutablePointer<EpollEvent>
    /// Non-zero while accepting is paused after `EMFILE`: when to resume (monotonic ns).
    private var acceptResumeAt: UInt64 = 0

    init(_ setup: Setup) {
        self.setup = setup
        sys = SystemCalls(counters: setup.counters)
        readBuffer = .allocate(byteCount: Self.readBufferSize, alignment: 64)
        events = .allocate(capacity: Int(Self.eventCapacity))
    }

    mutating func run(until stopping: borrowing Atomic<Bool>) {
        var running = true
        while running {
            var timeout: Int32 = -1
            if acceptResumeAt != 0 {
                let now = ProcessResources.monotonicNanoseconds()
                if now >= acceptResumeAt {
                    resumeAccepting()
                } else {
                    timeout = Int32((acceptResumeAt - now) / 1_000_000) + 1
                }
            }
            let ready: Int
            do {
                ready = try sys.epollWait(setup.epoll, events, capacity: Self.eventCapacity, timeoutMilliseconds: timeout)
            } catch {
                reportError("iobench: epoll loop stopped: \(error)")
                break
            }
            for i in 0..<ready {
                let event = events[i]
                switch event.data.u64 {
                case Self.listenerToken:
                    acceptConnections()
                case Self.wakeToken:
                    sys.drain(eventFD: setup.wake)
                    if stopping.load(ordering: .sequentiallyConsistent) { running = false }
                default:
                    handle(token: event.data.u64, events: event.events)
                }
            }
        }
        shutDown()
    }

    // MARK: Accepting

    private mutating func acceptConnections() {
        // Bounded so one burst of connects cannot starve established connections.
        for _ in 0..<64 {
            let fd: Int32
            do {
                guard let accepted = try sys.accept(setup.listener, nonBlocking: true) else { return }
                fd = accepted
            } catch {
                sys.count(.acceptErrors)
                if error.errno.isDescriptorExhaustion || error.errno == .noMemory || error.errno == .noBuffers {
                    // Level-triggered: the listener would fire again at once and spin. Stop
                    // watching it for a while; waiting connections stay in the backlog.
                    pauseAccepting()
                    return
                }
                continue  // ECONNABORTED and the like concern one connection only
            }
            guard setup.limit.acquire() else {
                sys.count(.refused)
                sys.close(fd)
                continue
            }
            Socket.setNoDelay(fd)
            let record = EpollConnection(fd: fd, interest: Epoll.input, session: EchoSession(maxOwed: setup.maxOwed))
            let index = connections.insert(record)
            do {
                try sys.epollCtl(setup.epoll, Epoll.add, fd, events: Epoll.input, data: token(index))
            } catch {
                connections.remove(index)
                setup.limit.release()
                sys.close(fd)
                continue
            }
            sys.count(.accepted)
        }
    }

    private mutating func pauseAccepting() {
        try? sys.epollCtl(setup.epoll, Epoll.delete, setup.listener, events: 0, data: 0)
        acceptResumeAt = ProcessResources.monotonicNanoseconds() + Self.acceptBackoffNanoseconds
    }

    private mutating func resumeAccepting() {
        acceptResumeAt = 0
        try? sys.epollCtl(setup.epoll, Epoll.add, setup.listener, events: Epoll.input, data: Self.listenerToken)
    }

    // MARK: Connections

    @inline(__always)
    private func token(_ index: Int) -> UInt64 {
        UInt64(connections.generation(index)) << 32 | UInt64(index)
    }

    private mutating func handle(token: UInt64, events: UInt32) {
        let index = Int(token & 0xFFFF_FFFF)
        guard connections.isLive(index, generation: UInt32(truncatingIfNeeded: token >> 32)) else { return }
        let conn = connections.slots + index
        let writable = Epoll.output | Epoll.error | Epoll.hangUp
        if events & writable != 0 && conn.pointee.session.owed > 0 {
            guard flush(conn, index) else { return }
        }
        if events & (Epoll.input | Epoll.hangUp | Epoll.error) != 0 && conn.pointee.session.wantsInput {
            guard read(conn, index) else { return }
        }
        updateInterest(conn, index)
    }

    /// One recv and, if nothing is queued, one send straight from the read buffer.
    /// Returns false when the connection was closed.
    private mutating func read(_ conn: UnsafeMutablePointer<EpollConnection>, _ index: Int) -> Bool {
        let fd = conn.pointee.fd
        let result: IOResult
        do {
            result = try sys.recv(fd, into: readBuffer, count: Self.readBufferSize)
        } catch {
            sys.count(.resets)
            closeConnection(index)
            return false
        }
        guard case .bytes(let n) = result else { return true }
        if n == 0 {
            if conn.pointee.session.inputDidEnd().contains(.close) {
                closeConnection(index)
                return false
            }
            return true
        }
        sys.count(.bytesIn, UInt64(n))
        if setup.injection.isActive { sys.inject(setup.injection) }
        let hadPending = conn.pointee.session.owed > 0
        _ = conn.pointee.session.received(n)  // .send, maybe .pauseInput (read via wantsInput)
        if hadPending {
            appendPending(conn, readBuffer, n)  // order: behind what is already queued
            return flush(conn, index)
        }
        var offset = 0
        while offset < n {
            let sent: IOResult
            do {
                sent = try sys.send(fd, from: readBuffer + offset, count: n - offset)
            } catch {
                sys.count(.resets)
                closeConnection(index)
                return false
            }
            guard case .bytes(let w) = sent else { break }
            offset += w
            sys.count(.bytesOut, UInt64(w))
            _ = conn.pointee.session.sent(w)
        }
        if offset < n { appendPending(conn, readBuffer + offset, n - offset) }
        return true
    }

    /// Writes queued bytes until done or the socket is full. Returns false when closed.
    private mutating func flush(_ conn: UnsafeMutablePointer<EpollConnection>, _ index: Int) -> Bool {
        while conn.pointee.session.owed > 0 {
            guard let pending = conn.pointee.pending else { break }
            let result: IOResult
            do {
                result = try sys.send(conn.pointee.fd, from: pending + conn.pointee.pendingStart, count: conn.pointee.session.owed)
            } catch {
                sys.count(.resets)
                closeConnection(index)
                return false
            }
            guard case .bytes(let w) = result else { return true }
            sys.count(.bytesOut, UInt64(w))
            conn.pointee.pendingStart += w
            if conn.pointee.session.sent(w).contains(.close) {
                closeConnection(index)
                return false
            }
        }
        if conn.pointee.session.owed == 0, let pending = conn.pointee.pending {
            pending.deallocate()
            conn.pointee.pending = nil
            conn.pointee.pendingStart = 0
            conn.pointee.pendingCapacity = 0
        }
        return true
    }

    /// Queues bytes the peer did not take yet (they are already counted as owed by the session).
    private func appendPending(_ conn: UnsafeMutablePointer<EpollConnection>, _ bytes: UnsafeRawPointer, _ count: Int) {
        let queued = conn.pointee.session.owed - count
        if conn.pointee.pendingStart + conn.pointee.session.owed > conn.pointee.pendingCapacity {
            let needed = conn.pointee.session.owed
            if needed <= conn.pointee.pendingCapacity, let pending = conn.pointee.pending {
                (pending).copyMemory(from: pending + conn.pointee.pendingStart, byteCount: queued)
            } else {
                let capacity = max(needed, min(conn.pointee.pendingCapacity * 2, setup.maxOwed + Self.readBufferSize), 4096)
                let grown = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
                if let old = conn.pointee.pending {
                    grown.copyMemory(from: old + conn.pointee.pendingStart, byteCount: queued)
                    old.deallocate()
                }
                conn.pointee.pending = grown
                conn.pointee.pendingCapacity = capacity
            }
            conn.pointee.pendingStart = 0
        }
        (conn.pointee.pending! + conn.pointee.pendingStart + queued).copyMemory(from: bytes, byteCount: count)
    }

    /// Reading while the session wants input, writability while bytes are owed.
    private mutating func updateInterest(_ conn: UnsafeMutablePointer<EpollConnection>, _ index: Int) {
        var wanted: UInt32 = 0
        if conn.pointee.session.wantsInput { wanted |= Epoll.input }
        if conn.pointee.session.owed > 0 { wanted |= Epoll.output }
        guard wanted != conn.pointee.interest else { return }
        do {
            try sys.epollCtl(setup.epoll, Epoll.modify, conn.pointee.fd, events: wanted, data: token(index))
            conn.pointee.interest = wanted
        } catch {
            closeConnection(index)
        }
    }

    private mutating func closeConnection(_ index: Int) {
        let record = connections.remove(index)
        record.pending?.deallocate()
        sys.close(record.fd)  // closing also removes it from the epoll set
        sys.count(.closed)
        setup.limit.release()
    }

    private mutating func shutDown() {
        for index in connections.liveIndices() { closeConnection(index) }
        connections.deallocate()
        sys.close(setup.listener)
        sys.close(setup.epoll)
        readBuffer.deallocate()
        events.deallocate()
    }
}
