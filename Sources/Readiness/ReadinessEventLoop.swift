import ServerKit
import Protocols
import BackendKit
import Synchronization

/// One connection of a readiness loop: kept inline in the loop's ``ConnectionTable``. Output
/// the peer would not take yet is kept by the session (its outbound queue), so an idle
/// connection costs this record (and its selector's entry) and nothing else.
@usableFromInline
struct ReadinessConnection<Session: ConnectionSession & ~Copyable>: ~Copyable {
    @usableFromInline var fd: Int32
    /// The events registered with the selector now; changed only when it must.
    @usableFromInline var interest: UInt32
    /// Reading is paused (the session said ``SessionActions/pauseInput``).
    @usableFromInline var inputPaused = false
    /// The peer shut down its sending side (else a close lingers: see ``LingeringCloser``).
    @usableFromInline var inputEnded = false
    /// The session's armed timer (monotonic ns), 0 for none: a timer-queue entry that does not
    /// match it when it comes due is stale.
    @usableFromInline var timerDeadline: UInt64 = 0
    @usableFromInline var session: Session

    @inlinable
    init(fd: Int32, interest: UInt32, session: consuming Session) {
        self.fd = fd
        self.interest = interest
        self.session = session
    }
}

/// A level-triggered readiness event loop over sessions of one pattern, on any
/// ``ReadinessSelector`` (epoll, ppoll). Per readable connection it makes one `recv` into a
/// shared buffer, gives the bytes to the session and executes what it
/// answers: echoed bytes are sent straight back from the read buffer (only what the peer would
/// not take is copied, into the session), produced bytes are sent from the session's outbound
/// queue, with writability watched while any are owed. At most one `recv` per readiness event
/// keeps the syscall count per message at about two plus a share of the selector's wait.
///
/// Everything here is inlinable: the backend's module instantiates the loop for its selector
/// and each session type, and the compiler specialises the hot path there.
public struct ReadinessEventLoop<Selector: ReadinessSelector & ~Copyable, Session: ConnectionSession & ~Copyable>: ~Copyable {
    @inlinable static var listenerToken: UInt64 { UInt64.max }
    @inlinable static var wakeToken: UInt64 { UInt64.max - 1 }
    @inlinable static var readBufferSize: Int { 64 * 1024 }
    /// How long accepting pauses after running out of descriptors.
    @inlinable static var acceptBackoffNanoseconds: UInt64 { 50_000_000 }

    @usableFromInline let listener: OwnedDescriptor
    @usableFromInline var selector: Selector
    @usableFromInline let wake: Int32
    @usableFromInline let limit: ConnectionLimit
    @usableFromInline let closer: LingeringCloser
    @usableFromInline let health: ServerHealth
    @usableFromInline let injection: CostInjection
    @usableFromInline let context: SessionContext
    @usableFromInline let sys: SystemCalls
    @usableFromInline var connections = ConnectionTable<ReadinessConnection<Session>>(initialCapacity: 256)
    @usableFromInline let readBuffer: UnsafeMutableRawPointer
    /// Non-zero while accepting is paused after `EMFILE`: when to resume (monotonic ns).
    @usableFromInline var acceptResumeAt: UInt64 = 0
    /// Sessions' timers; the selector waits no later than the first.
    @usableFromInline var timers = TimerQueue()
    /// Notifications from other loops, announced on the wake eventfd.
    @usableFromInline let notifier: Notifier
    @usableFromInline let mailbox: LoopMailbox
    @usableFromInline let loopNumber: UInt32
    /// Notes taken from the mailbox (kept, so taking allocates nothing).
    @usableFromInline var notesTaken: [Note] = []

    /// Takes ownership of `listener`: closed with the loop (or at once if it cannot be made).
    @inlinable
    public init(listener: consuming OwnedDescriptor, resources: LoopResources, services: LoopServices) throws(SystemError) {
        sys = SystemCalls(counters: resources.counters)
        // If any of these throws, the selector made so far and the listener go out of scope
        // and close themselves.
        var made = try Selector(sys: sys)
        try made.register(listener.raw, interest: Readiness.input, token: Self.listenerToken)
        try made.register(resources.wake, interest: Readiness.input, token: Self.wakeToken)
        selector = made
        self.listener = listener
        wake = resources.wake
        let configuration = services.configuration, hub = services.hub
        limit = services.limit
        closer = services.closer
        health = services.health
        injection = configuration.injection
        context = SessionContext(maxOwed: configuration.maxOwedPerConnection, maxFrameSize: configuration.maxFrameSize,
                                 counters: sys, notifier: hub.notifier, hub: hub)
        notifier = hub.notifier
        (loopNumber, mailbox) = hub.notifier.register(wake: resources.wake)
        readBuffer = .allocate(byteCount: Self.readBufferSize, alignment: 64)
    }

    /// What the loop set up, for stats (nothing to say for a readiness loop).
    @inlinable public var setupDescription: String? { nil }

    @inlinable
    public mutating func run(until stopping: borrowing Atomic<Bool>) {
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
                ready = try selector.wait(timeoutMilliseconds: timeout)
            } catch {
                health.loopFailed("\(Selector.name) loop \(loopNumber) stopped: its wait failed: \(error)")
                break
            }
            for i in 0..<ready {
                let (token, events) = selector.event(i)
                switch token {
                case Self.listenerToken:
                    acceptConnections()
                case Self.wakeToken:
                    sys.drain(eventFD: wake)
                    if stopping.load(ordering: .sequentiallyConsistent) { running = false }
                    if health.failureInjected {
                        health.loopFailed("\(Selector.name) loop \(loopNumber) stopped: its wait failed: \(SystemError("\(Selector.name) wait (injected)", .noMemory))")
                        running = false
                    }
                    deliverNotes()
                default:
                    handle(token: token, events: events)
                }
            }
            if !timers.isEmpty { fireDueTimers() }
        }
        shutDown()
    }

    // MARK: Accepting

    @inlinable mutating func acceptConnections() {
        // Bounded so one burst of connects cannot starve established connections.
        for _ in 0..<64 {
            let fd: Int32
            do {
                guard let accepted = try sys.accept(listener.raw, nonBlocking: true) else { return }
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
            let index = connections.insert(ReadinessConnection(fd: fd, interest: Readiness.input, session: Session(context: context)))
            do {
                try selector.register(fd, interest: Readiness.input, token: token(index))
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
    @inlinable mutating func deliverNotes() {
        mailbox.take(into: &notesTaken)
        for note in notesTaken {
            let index = Int(note.slot)
            guard connections.isLive(index, generation: note.generation) else { continue }
            let conn = connections.slots + index
            if perform(conn.pointee.session.notified(note.value), conn, index) { updateInterest(conn, index) }
        }
    }

    /// Runs every timer that is due; stale entries (cancelled, re-armed, closed) are dropped.
    @inlinable mutating func fireDueTimers() {
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
    @inlinable mutating func timerChanged(_ conn: UnsafeMutablePointer<ReadinessConnection<Session>>, _ index: Int) {
        guard let deadline = conn.pointee.session.timerDeadline else {
            conn.pointee.timerDeadline = 0
            return
        }
        conn.pointee.timerDeadline = max(deadline, 1)
        timers.schedule(conn.pointee.timerDeadline, slot: UInt32(index), generation: connections.generation(index))
    }

    @inlinable mutating func pauseAccepting() {
        do {
            try selector.deregister(listener.raw)
        } catch {
            reportError("iobench: cannot stop watching the listener while out of descriptors: \(error)")
        }
        acceptResumeAt = ProcessResources.monotonicNanoseconds() + Self.acceptBackoffNanoseconds
    }

    @inlinable mutating func resumeAccepting() {
        acceptResumeAt = 0
        do {
            try selector.register(listener.raw, interest: Readiness.input, token: Self.listenerToken)
        } catch {
            // Not watching the listener would stop accepting for good: try again after a pause.
            reportError("iobench: cannot watch the listener again: \(error)")
            acceptResumeAt = ProcessResources.monotonicNanoseconds() + Self.acceptBackoffNanoseconds
        }
    }

    // MARK: Connections

    @inlinable @inline(__always)
    func token(_ index: Int) -> UInt64 {
        UInt64(connections.generation(index)) << 32 | UInt64(index)
    }

    @inlinable mutating func handle(token: UInt64, events: UInt32) {
        let index = Int(token & 0xFFFF_FFFF)
        guard connections.isLive(index, generation: UInt32(truncatingIfNeeded: token >> 32)) else { return }
        let conn = connections.slots + index
        let writable = Readiness.output | Readiness.error | Readiness.hangUp
        if events & writable != 0 && conn.pointee.session.hasOutbound {
            guard flush(conn, index) else { return }
        }
        if events & (Readiness.input | Readiness.hangUp | Readiness.error) != 0 && !conn.pointee.inputPaused && conn.pointee.session.wantsInput {
            guard read(conn, index) else { return }
        }
        updateInterest(conn, index)
    }

    /// One recv, its bytes to the session, and what the session answers. Returns false when the
    /// connection was closed.
    @inlinable mutating func read(_ conn: UnsafeMutablePointer<ReadinessConnection<Session>>, _ index: Int) -> Bool {
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
    @inlinable mutating func perform(_ actions: SessionActions, _ conn: UnsafeMutablePointer<ReadinessConnection<Session>>, _ index: Int) -> Bool {
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
    @inlinable mutating func flush(_ conn: UnsafeMutablePointer<ReadinessConnection<Session>>, _ index: Int) -> Bool {
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
    @inlinable mutating func updateInterest(_ conn: UnsafeMutablePointer<ReadinessConnection<Session>>, _ index: Int) {
        var wanted: UInt32 = 0
        if !conn.pointee.inputPaused && conn.pointee.session.wantsInput { wanted |= Readiness.input }
        if conn.pointee.session.hasOutbound { wanted |= Readiness.output }
        guard wanted != conn.pointee.interest else { return }
        do {
            try selector.reregister(conn.pointee.fd, interest: wanted, token: token(index))
            conn.pointee.interest = wanted
        } catch {
            closeConnection(index)
        }
    }

    /// Ends a connection: its socket is closed now, or with `lingering` handed to the
    /// ``LingeringCloser`` (its peer may still be sending).
    @inlinable mutating func closeConnection(_ index: Int, lingering: Bool = false) {
        let record = connections.remove(index)  // dropping it frees the session's memory
        if lingering {
            do {
                // Out of this loop's set first: the closer watches it from now on.
                try selector.deregister(record.fd)
                closer.adopt(record.fd, sys)
                return
            } catch {
                // Not in the set (cannot happen): close it here, at once.
            }
        }
        selector.closing(record.fd)
        sys.close(record.fd)
        sys.count(.closed)
        limit.release()
    }

    @inlinable mutating func shutDown() {
        notifier.unregister(loopNumber)
        for index in connections.liveIndices() { closeConnection(index) }
        // The listener is closed with the loop, right after this.
        if acceptResumeAt == 0 { selector.closing(listener.raw) }
    }

    deinit {
        readBuffer.deallocate()
    }
}
