import EchoCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One connection of an epoll loop: kept inline in the loop's ``ConnectionTable``. Output the
/// peer would not take yet is kept by the session (its outbound queue), so an idle connection
/// costs this record and nothing else.
struct EpollConnection<Session: ConnectionSession & ~Copyable>: ~Copyable {
    var fd: Int32
    /// The events registered with epoll now; changed with `Epoll.modify` only when it must.
    var interest: UInt32
    /// Reading is paused (the session said ``SessionActions/pauseInput``).
    var inputPaused = false
    /// The peer shut down its sending side (else a close lingers: see ``LingeringCloser``).
    var inputEnded = false
    /// The session's armed timer (monotonic ns), 0 for none: a timer-queue entry that does not
    /// match it when it comes due is stale.
    var timerDeadline: UInt64 = 0
    var session: Session
}

/// A level-triggered epoll event loop over sessions of one pattern. Per readable connection it
/// makes one `recv` into a shared buffer, gives the bytes to the session and executes what it
/// answers: echoed bytes are sent straight back from the read buffer (only what the peer would
/// not take is copied, into the session), produced bytes are sent from the session's outbound
/// queue, with `EPOLLOUT` armed while any are owed. At most one `recv` per readiness event
/// keeps the syscall count per message at about two plus a share of `epoll_wait`.
struct EpollEventLoop<Session: ConnectionSession & ~Copyable>: ~Copyable {
    static var listenerToken: UInt64 { UInt64.max }
    static var wakeToken: UInt64 { UInt64.max - 1 }
    static var readBufferSize: Int { 64 * 1024 }
    static var eventCapacity: Int32 { 1024 }
    /// How long accepting pauses after running out of descriptors.
    static var acceptBackoffNanoseconds: UInt64 { 50_000_000 }

    private let listener: Int32
    private let epoll: Int32
    private let wake: Int32
    private let limit: ConnectionLimit
    private let closer: LingeringCloser
    private let injection: CostInjection
    private let context: SessionContext
    private let sys: SystemCalls
    private var connections = ConnectionTable<EpollConnection<Session>>(initialCapacity: 256)
    private let readBuffer: UnsafeMutableRawPointer
    private let events: UnsafeMutablePointer<EpollEvent>
    /// Non-zero while accepting is paused after `EMFILE`: when to resume (monotonic ns).
    private var acceptResumeAt: UInt64 = 0
    /// Sessions' timers; `epoll_wait` sleeps no later than the first.
    private var timers = TimerQueue()
    /// Notifications from other loops, announced on the wake eventfd.
    private let notifier: Notifier
    private let mailbox: LoopMailbox
    private let loopNumber: UInt32
    /// Notes taken from the mailbox (kept, so taking allocates nothing).
    private var notesTaken: [Note] = []

    /// Takes ownership of `listener`: closed here if the loop cannot be made, else at the end of
    /// ``run(until:)``.
    init(listener: Int32, resources: LoopResources, limit: ConnectionLimit, closer: LingeringCloser, configuration: ServerConfiguration,
         hub: Hub) throws(SystemError) {
        sys = SystemCalls(counters: resources.counters)
        let epfd: Int32
        do throws(SystemError) {
            epfd = try sys.epollCreate()
            do throws(SystemError) {
                try sys.epollCtl(epfd, Epoll.add, listener, events: Epoll.input, data: Self.listenerToken)
                try sys.epollCtl(epfd, Epoll.add, resources.wake, events: Epoll.input, data: Self.wakeToken)
            } catch {
                sys.close(epfd)
                throw error
            }
        } catch {
            sys.close(listener)
            throw error
        }
        self.listener = listener
        epoll = epfd
        wake = resources.wake
        self.limit = limit
        self.closer = closer
        injection = configuration.injection
        context = SessionContext(maxOwed: configuration.maxOwedPerConnection, maxFrameSize: configuration.maxFrameSize,
                                 counters: sys, notifier: hub.notifier, hub: hub)
        notifier = hub.notifier
        (loopNumber, mailbox) = hub.notifier.register(wake: resources.wake)
        readBuffer = .allocate(byteCount: Self.readBufferSize, alignment: 64)
        events = .allocate(capacity: Int(Self.eventCapacity))
    }

    /// What the loop set up, for stats (nothing to say for epoll).
    var setupDescription: String? { nil }

    mutating func run(until stopping: borrowing Atomic<Bool>) {
        var running = true
        while running {
            var timeout: Int32 = -1
            if acceptResumeAt != 0 || !timers.isEmpty {
                let now = ProcessResources.monotonicNanoseconds()
                if acceptResumeAt != 0 {
                    if now >= acceptResumeAt {
                        resumeAccepting()
                    } else {
                        timeout = Int32((acceptResumeAt - now) / 1_000_000) + 1
                    }
                }
                timeout = timers.waitMilliseconds(now: now, cap: timeout)
            }
            let ready: Int
            do {
                ready = try sys.epollWait(epoll, events, capacity: Self.eventCapacity, timeoutMilliseconds: timeout)
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
                    sys.drain(eventFD: wake)
                    if stopping.load(ordering: .sequentiallyConsistent) { running = false }
                    deliverNotes()
                default:
                    handle(token: event.data.u64, events: event.events)
                }
            }
            if !timers.isEmpty { fireDueTimers() }
        }
        shutDown()
    }

    // MARK: Accepting

    private mutating func acceptConnections() {
        // Bounded so one burst of connects cannot starve established connections.
        for _ in 0..<64 {
            let fd: Int32
            do {
                guard let accepted = try sys.accept(listener, nonBlocking: true) else { return }
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
            guard limit.acquire() else {
                sys.count(.refused)
                sys.close(fd)
                continue
            }
            Socket.setNoDelay(fd)
            let index = connections.insert(EpollConnection(fd: fd, interest: Epoll.input, session: Session(context: context)))
            do {
                try sys.epollCtl(epoll, Epoll.add, fd, events: Epoll.input, data: token(index))
            } catch {
                _ = connections.remove(index)
                limit.release()
                sys.close(fd)
                continue
            }
            sys.count(.accepted)
            let conn = connections.slots + index
            let actions = conn.pointee.session.opened(at: ConnectionAddress(loop: loopNumber, slot: UInt32(index), generation: connections.generation(index)))
            if !actions.isEmpty && perform(actions, conn, index) { updateInterest(conn, index) }
        }
    }

    // MARK: Services

    /// Notifications posted from other threads: each to its connection, if it is still there.
    private mutating func deliverNotes() {
        mailbox.take(into: &notesTaken)
        for note in notesTaken {
            let index = Int(note.slot)
            guard connections.isLive(index, generation: note.generation) else { continue }
            let conn = connections.slots + index
            if perform(conn.pointee.session.notified(note.value), conn, index) { updateInterest(conn, index) }
        }
    }

    /// Runs every timer that is due; stale entries (cancelled, re-armed, closed) are dropped.
    private mutating func fireDueTimers() {
        let now = ProcessResources.monotonicNanoseconds()
        while let entry = timers.popDue(now) {
            let index = Int(entry.slot)
            guard connections.isLive(index, generation: entry.generation) else { continue }
            let conn = connections.slots + index
            guard conn.pointee.timerDeadline == entry.deadline else { continue }
            conn.pointee.timerDeadline = 0
            if perform(conn.pointee.session.timerFired(), conn, index) { updateInterest(conn, index) }
        }
    }

    /// Arms the connection's timer for what its session now asks (or cancels it).
    private mutating func timerChanged(_ conn: UnsafeMutablePointer<EpollConnection<Session>>, _ index: Int) {
        guard let deadline = conn.pointee.session.timerDeadline else {
            conn.pointee.timerDeadline = 0
            return
        }
        conn.pointee.timerDeadline = max(deadline, 1)
        timers.schedule(conn.pointee.timerDeadline, slot: UInt32(index), generation: connections.generation(index))
    }

    private mutating func pauseAccepting() {
        try? sys.epollCtl(epoll, Epoll.delete, listener, events: 0, data: 0)
        acceptResumeAt = ProcessResources.monotonicNanoseconds() + Self.acceptBackoffNanoseconds
    }

    private mutating func resumeAccepting() {
        acceptResumeAt = 0
        try? sys.epollCtl(epoll, Epoll.add, listener, events: Epoll.input, data: Self.listenerToken)
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
        if events & writable != 0 && conn.pointee.session.hasOutbound {
            guard flush(conn, index) else { return }
        }
        if events & (Epoll.input | Epoll.hangUp | Epoll.error) != 0 && !conn.pointee.inputPaused && conn.pointee.session.wantsInput {
            guard read(conn, index) else { return }
        }
        updateInterest(conn, index)
    }

    /// One recv, its bytes to the session, and what the session answers. Returns false when the
    /// connection was closed.
    private mutating func read(_ conn: UnsafeMutablePointer<EpollConnection<Session>>, _ index: Int) -> Bool {
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
            conn.pointee.inputEnded = true
            return perform(conn.pointee.session.inputDidEnd(), conn, index)
        }
        sys.count(.bytesIn, UInt64(n))
        if injection.isActive { sys.inject(injection) }
        let bytes = UnsafeRawBufferPointer(start: readBuffer, count: n)
        var actions = conn.pointee.session.received(bytes)
        if actions.contains(.echoReceived) {
            actions.remove(.echoReceived)
            if conn.pointee.session.hasOutbound {
                conn.pointee.session.keepEcho(bytes)  // behind what is already queued
                actions.insert(.send)
            } else {
                // Straight back from the read buffer; only what the peer will not take now is
                // copied, into the session.
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
                    actions.formUnion(conn.pointee.session.sent(w))
                }
                if offset < n {
                    conn.pointee.session.keepEcho(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
                } else {
                    actions.remove(.send)  // everything owed was just written
                }
            }
        }
        return actions.isEmpty || perform(actions, conn, index)
    }

    /// Executes a session's actions (echoed bytes are handled where they were read). Returns
    /// false when the connection was closed.
    private mutating func perform(_ actions: SessionActions, _ conn: UnsafeMutablePointer<EpollConnection<Session>>, _ index: Int) -> Bool {
        if actions.contains(.pauseInput) { conn.pointee.inputPaused = true }
        if actions.contains(.resumeInput) { conn.pointee.inputPaused = false }
        if actions.contains(.timerChanged) { timerChanged(conn, index) }
        if actions.contains(.close) {
            // Everything owed is written: a peer still sending gets a FIN after it, not an RST.
            closeConnection(index, lingering: !conn.pointee.inputEnded)
            return false
        }
        if actions.contains(.send) && conn.pointee.session.hasOutbound {
            return flush(conn, index)
        }
        return true
    }

    /// Writes the session's outbound bytes until done or the socket is full. Returns false
    /// when the connection was closed.
    private mutating func flush(_ conn: UnsafeMutablePointer<EpollConnection<Session>>, _ index: Int) -> Bool {
        while conn.pointee.session.hasOutbound {
            let bytes = conn.pointee.session.pinOutboundForWrite()
            let result: IOResult
            do {
                result = try sys.send(conn.pointee.fd, from: bytes.baseAddress!, count: bytes.count)
            } catch {
                sys.count(.resets)
                closeConnection(index)
                return false
            }
            guard case .bytes(let w) = result else {
                conn.pointee.session.unpinOutbound()  // nothing was written
                return true
            }
            sys.count(.bytesOut, UInt64(w))
            // Everything but .send (this loop writes until nothing is owed).
            guard perform(conn.pointee.session.sent(w).subtracting(.send), conn, index) else { return false }
        }
        return true
    }

    /// Reading while the session wants input and it is not paused, writability while the
    /// session holds output.
    private mutating func updateInterest(_ conn: UnsafeMutablePointer<EpollConnection<Session>>, _ index: Int) {
        var wanted: UInt32 = 0
        if !conn.pointee.inputPaused && conn.pointee.session.wantsInput { wanted |= Epoll.input }
        if conn.pointee.session.hasOutbound { wanted |= Epoll.output }
        guard wanted != conn.pointee.interest else { return }
        do {
            try sys.epollCtl(epoll, Epoll.modify, conn.pointee.fd, events: wanted, data: token(index))
            conn.pointee.interest = wanted
        } catch {
            closeConnection(index)
        }
    }

    /// Ends a connection: its socket is closed now, or with `lingering` handed to the
    /// ``LingeringCloser`` (its peer may still be sending).
    private mutating func closeConnection(_ index: Int, lingering: Bool = false) {
        let record = connections.remove(index)  // dropping it frees the session's memory
        if lingering {
            do {
                // Out of this loop's set first: the closer watches it from now on.
                try sys.epollCtl(epoll, Epoll.delete, record.fd, events: 0, data: 0)
                closer.adopt(record.fd, sys)
                return
            } catch {
                // Not in the set (cannot happen): close it here, at once.
            }
        }
        sys.close(record.fd)  // closing also removes it from the epoll set
        sys.count(.closed)
        limit.release()
    }

    private mutating func shutDown() {
        notifier.unregister(loopNumber)
        for index in connections.liveIndices() { closeConnection(index) }
        sys.close(listener)
        sys.close(epoll)
    }

    deinit {
        readBuffer.deallocate()
        events.deallocate()
    }
}
