import CLibUring
import ServerKit
import Protocols
import BackendKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One connection of a ring: kept inline in the loop's ``ConnectionTable``.
struct RingConnection<Session: ConnectionSession & ~Copyable>: ~Copyable {
    var fd: Int32
    var state = RingConnectionState()
    /// Received buffers held for echo, not yet completely written.
    var held = HeldBuffers()
    /// The session's armed timer (monotonic ns), 0 for none; stale queue entries do not match it.
    var timerDeadline: UInt64 = 0
    var session: Session
}

/// A ring's event loop over sessions of one pattern. Per iteration: publish returned buffers,
/// re-arm connections that ran out of buffers, one `io_uring_submit_and_wait`, then reap
/// completions in a batch. Received bytes go to the session from the provided buffer they
/// arrived in; echoed bytes are sent straight from it (the buffer is held until written),
/// produced bytes from the session's pinned outbound queue.
struct RingEventLoop<Session: ConnectionSession & ~Copyable>: ~Copyable {
    static var completionBatch: Int { 256 }
    static var acceptBackoffNanoseconds: Int { 50_000_000 }
    /// The fewest completions a batch wait waits for (so it applies from 32 connections).
    static var smallestBatch: Int { 8 }

    let listener: OwnedDescriptor
    let wake: Int32
    let limit: ConnectionLimit
    let closer: LingeringCloser
    let health: ServerHealth
    let injection: CostInjection
    let context: SessionContext
    let sys: SystemCalls
    var ring: Ring
    var buffers: BufferRing
    let received: ReceiveQueue
    var connections = ConnectionTable<RingConnection<Session>>(initialCapacity: 256)
    let completions: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    /// Connections whose multishot recv ended with `ENOBUFS`, to re-arm as buffers return.
    var waiting: [UInt64] = []
    let wakeBuffer: UnsafeMutablePointer<UInt64>
    let backoff: UnsafeMutablePointer<__kernel_timespec>
    var acceptExhausted = false
    /// Microseconds a wait may hold out for a batch (0: wake on the first completion).
    let batchWait: UInt32
    let waitByPoll: Bool
    /// Receive with single-shot recvs (chosen, or the kernel refused the multishot cap).
    var singleShotRecv: Bool
    /// Sessions' timers: the wait returns no later than the first (the wait's own timeout,
    /// passed through `IORING_ENTER_EXT_ARG`, no timeout operation in the ring).
    var timers = TimerQueue()
    let waitTimeout: UnsafeMutablePointer<__kernel_timespec>
    /// Notifications from other loops, announced by a read completing on the wake eventfd.
    let notifier: Notifier
    let mailbox: LoopMailbox
    let loopNumber: UInt32
    /// Notes taken from the mailbox (kept, so taking allocates nothing).
    var notesTaken: [Note] = []

    var setupDescription: String? {
        batchWait > 0 ? "\(ring.setupFlagNames)|MIN_TIMEOUT=\(batchWait)us" : ring.setupFlagNames
    }

    /// Takes ownership of `listener`: closed with the loop (or at once if it cannot be made),
    /// after the ring's teardown has cancelled the accept on it. Must run on the thread that will run the loop (`SINGLE_ISSUER`).
    init(listener: consuming OwnedDescriptor, resources: LoopResources, limit: ConnectionLimit, closer: LingeringCloser, health: ServerHealth,
         configuration: ServerConfiguration, hub: Hub) throws(SystemError) {
        sys = SystemCalls(counters: resources.counters)
        let settings = configuration.backendSettings[IoUringSettings.self]
        // If either throws, what was made goes out of scope: the ring is torn down, the
        // listener closed.
        let newRing = try Ring(entries: settings.entries, waitByPoll: settings.waitByPoll,
                               needsMinTimeout: settings.batchWaitMicroseconds > 0)
        let newBuffers = try BufferRing(ring: newRing.raw, groupID: 1, count: settings.bufferCount, bufferSize: settings.bufferSize)
        ring = newRing
        buffers = newBuffers
        self.listener = listener
        wake = resources.wake
        self.limit = limit
        self.closer = closer
        self.health = health
        injection = configuration.injection
        batchWait = settings.batchWaitMicroseconds
        waitByPoll = settings.waitByPoll
        singleShotRecv = settings.singleShotRecv
        // Held echo buffers are bounded by the session, like owed bytes: a connection may hold
        // about its --max-owed in buffers (at least 4) before it stops reading.
        let maxHeld = max(4, configuration.maxOwedPerConnection / settings.bufferSize + 1)
        context = SessionContext(maxOwed: configuration.maxOwedPerConnection, maxHeldChunks: maxHeld,
                                 maxFrameSize: configuration.maxFrameSize, counters: sys, notifier: hub.notifier, hub: hub)
        notifier = hub.notifier
        (loopNumber, mailbox) = hub.notifier.register(wake: resources.wake)
        waitTimeout = .allocate(capacity: 1)
        received = ReceiveQueue(buffers: settings.bufferCount)
        completions = .allocate(capacity: Self.completionBatch)
        wakeBuffer = .allocate(capacity: 1)
        backoff = .allocate(capacity: 1)
        backoff.pointee = __kernel_timespec(tv_sec: 0, tv_nsec: Int64(Self.acceptBackoffNanoseconds))
    }

    mutating func run(until stopping: borrowing Atomic<Bool>) {
        armAccept()
        armWake()
        var running = true
        while running {
            buffers.publish()
            if !waiting.isEmpty && buffers.available > 0 { rearmWaiting() }
            sys.count(.ioUringEnter)
            let rc: Int32
            let batch = connections.count / 4
            if !timers.isEmpty {
                rc = waitNoLaterThanTheNextTimer()
            } else if batchWait > 0 && batch >= Self.smallestBatch {
                // A batch of a completion per four connections (at depth 1 a message brings a
                // recv and a send completion). Smaller batches save too few wake-ups to pay for
                // the timer the kernel arms for the wait.
                rc = iobench_submit_and_wait_batch(ring.raw, UInt32(batch), batchWait)
            } else if waitByPoll {
                rc = ring.submitAndWaitByPoll(sys)
            } else {
                rc = io_uring_submit_and_wait(ring.raw, 1)
            }
            if rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY && rc != -ETIME {
                loopFailed(SystemError("io_uring_submit_and_wait", Errno(negatedResult: rc)))
                break
            }
            while true {
                let n = Int(io_uring_peek_batch_cqe(ring.raw, completions, UInt32(Self.completionBatch)))
                if n == 0 { break }
                for i in 0..<n {
                    let cqe = completions[i]!
                    if !handle(UserData(rawValue: cqe.pointee.user_data), cqe.pointee.res, cqe.pointee.flags) {
                        // The wake eventfd was read: a stop, or notifications to deliver.
                        running = !stopping.load(ordering: .sequentiallyConsistent) && woken()
                    }
                }
                io_uring_cq_advance(ring.raw, UInt32(n))
                if n < Self.completionBatch { break }
            }
            if !timers.isEmpty { fireDueTimers() }
        }
        shutDown()
    }

    @inline(never)
    func loopFailed(_ error: SystemError) {
        health.loopFailed("io_uring loop \(loopNumber) stopped: its wait failed: \(error)")
    }

    /// The wake eventfd was read and the loop is not stopping: an injected failure, or notes
    /// to deliver. Returns whether the loop goes on. Out of line, as the rest of the wake-up
    /// path: inside `run` the failure check made the compiler inline the completion handlers
    /// differently (io_uring counted +26 instructions per message).
    @inline(never)
    mutating func woken() -> Bool {
        if health.failureInjected {
            loopFailed(SystemError("io_uring_submit_and_wait (injected)", .noMemory))
            return false
        }
        deliverNotes()
        armWake()
        return true
    }

    // MARK: Submissions

    mutating func armAccept() {
        let sqe = ring.nextSQE(sys)
        io_uring_prep_multishot_accept(sqe, listener.raw, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
        io_uring_sqe_set_data64(sqe, UserData(.accept).rawValue)
    }

    mutating func armWake() {
        let sqe = ring.nextSQE(sys)
        io_uring_prep_read(sqe, wake, wakeBuffer, 8, 0)
        io_uring_sqe_set_data64(sqe, UserData(.wake).rawValue)
    }

    /// Arms a recv into the provided buffers. A multishot recv goes on filling buffers as data
    /// arrives until it is stopped, and a cancel (at a pause) takes effect only at the next
    /// submission, so it is capped at what the session may still take before its `--max-owed`
    /// bound (`optlen`, Linux 6.17; `file_index` in liburing 2.3's header): the kernel ends it
    /// there, and a peer that does not read makes the connection hold at most about
    /// `--max-owed` plus one buffer, as a read-sized step does on the other backends.
    @inline(__always)
    mutating func armRecv(_ conn: UnsafeMutablePointer<RingConnection<Session>>, _ index: Int) {
        let sqe = ring.nextSQE(sys)
        if singleShotRecv {
            io_uring_prep_recv(sqe, conn.pointee.fd, nil, Int(buffers.bufferSize), 0)
        } else {
            io_uring_prep_recv_multishot(sqe, conn.pointee.fd, nil, 0, 0)
            sqe.pointee.file_index = UInt32(max(context.maxOwed - conn.pointee.session.owed, 1))
        }
        sqe.pointee.flags |= UInt8(1 << IOSQE_BUFFER_SELECT_BIT)
        sqe.pointee.buf_group = buffers.groupID
        io_uring_sqe_set_data64(sqe, UserData(.recv, slot: index, generation: connections.generation(index)).rawValue)
        conn.pointee.state.recvSubmitted()
    }

    /// Sends what is owed next: the session's outbound bytes (pinned until the send completes)
    /// or else the rest of the head held buffer, straight from the ring memory it arrived in.
    @inline(__always)
    mutating func submitSend(_ conn: UnsafeMutablePointer<RingConnection<Session>>, _ index: Int) {
        let address: UnsafeRawPointer
        let count: Int
        let outbound = conn.pointee.session.hasOutbound
        if outbound {
            let bytes = conn.pointee.session.pinOutboundForWrite()
            address = bytes.baseAddress!
            count = bytes.count
        } else {
            guard !conn.pointee.held.isEmpty else { return }
            let head = received.unwritten(conn.pointee.held)
            address = UnsafeRawPointer(buffers.address(of: head.id) + head.offset)
            count = head.count
        }
        let sqe = ring.nextSQE(sys)
        io_uring_prep_send(sqe, conn.pointee.fd, address, count, Int32(MSG_NOSIGNAL))
        io_uring_sqe_set_data64(sqe, UserData(.send, slot: index, generation: connections.generation(index)).rawValue)
        conn.pointee.state.sendSubmitted(outbound: outbound)
    }

    mutating func cancelRecv(_ conn: UnsafeMutablePointer<RingConnection<Session>>, _ index: Int) {
        let sqe = ring.nextSQE(sys)
        io_uring_prep_cancel64(sqe, UserData(.recv, slot: index, generation: connections.generation(index)).rawValue, 0)
        io_uring_sqe_set_data64(sqe, UserData(.cancel, slot: index, generation: connections.generation(index)).rawValue)
        conn.pointee.state.otherSubmitted()
    }

    // MARK: Completions

    /// Handles one completion. Returns false when it was the stop signal.
    @inline(__always)
    mutating func handle(_ data: UserData, _ res: Int32, _ flags: UInt32) -> Bool {
        switch data.operation {
        case .recv?: onRecv(data, res, flags)
        case .send?: onSend(data, res)
        case .cancel?:
            if let conn = live(data) { finishOperation(conn, data.slot) }
        case .accept?: onAccept(res, flags)
        case .acceptBackoff?:
            acceptExhausted = false
            armAccept()
        case .wake?:
            return false
        case nil:
            break
        }
        return true
    }

    @inline(__always)
    func live(_ data: UserData) -> UnsafeMutablePointer<RingConnection<Session>>? {
        let index = data.slot
        guard index < connections.capacity else { return nil }
        let generation = connections.generation(index)
        guard generation & 1 == 1, generation & 0xFF_FFFF == data.generation else { return nil }
        return connections.slots + index
    }

    @inline(never)  // not per message: out of line, so the completion loop stays compact
    mutating func onAccept(_ res: Int32, _ flags: UInt32) {
        if res >= 0 {
            accepted(res)
        } else {
            sys.count(.acceptErrors)
            let error = Errno(negatedResult: res)
            if error.isDescriptorExhaustion || error == .noMemory || error == .noBuffers {
                acceptExhausted = true
                if flags & IORING_CQE_F_MORE != 0 {
                    // Still armed: it would fail again at once. Cancel it; its final completion
                    // arms the back-off timer below.
                    let sqe = ring.nextSQE(sys)
                    io_uring_prep_cancel64(sqe, UserData(.accept).rawValue, 0)
                    io_uring_sqe_set_data64(sqe, 0)
                }
            }
        }
        if flags & IORING_CQE_F_MORE == 0 {
            if acceptExhausted {
                // Waiting connections stay in the backlog; try again once descriptors may be free.
                let sqe = ring.nextSQE(sys)
                io_uring_prep_timeout(sqe, backoff, 0, 0)
                io_uring_sqe_set_data64(sqe, UserData(.acceptBackoff).rawValue)
            } else {
                armAccept()
            }
        }
    }

    @inline(never)  // not per message: out of line, so the completion loop stays compact
    mutating func accepted(_ fd: Int32) {
        guard limit.acquire() else {
            sys.count(.refused)
            sys.close(fd)
            return
        }
        Socket.setNoDelay(fd)
        let index = connections.insert(RingConnection(fd: fd, session: Session(context: context)))
        sys.count(.accepted)
        let conn = connections.slots + index
        armRecv(conn, index)
        let actions = conn.pointee.session.opened(at: ConnectionAddress(loop: loopNumber, slot: UInt32(index), generation: connections.generation(index)))
        if !actions.isEmpty { perform(actions, conn, index, recvStillArmed: true) }
    }

    @inline(__always)
    mutating func onRecv(_ data: UserData, _ res: Int32, _ flags: UInt32) {
        guard let conn = live(data) else {
            // A connection's slot is freed only when nothing is in flight, so this cannot carry
            // a buffer; ignore it.
            return
        }
        let index = data.slot
        let more = flags & IORING_CQE_F_MORE != 0
        if !more { conn.pointee.state.recvEnded() }
        if res > 0 {
            let id = UInt16(truncatingIfNeeded: flags >> UInt32(IORING_CQE_BUFFER_SHIFT))
            buffers.taken(id)
            if conn.pointee.state.closing || !conn.pointee.session.wantsInput && !conn.pointee.state.inputPaused {
                buffers.give(back: id)  // after end of input or close: nothing more is read
            } else {
                sys.count(.bytesIn, UInt64(res))
                if injection.isActive { sys.inject(injection) }
                let bytes = UnsafeRawBufferPointer(start: buffers.address(of: id), count: Int(res))
                var actions = conn.pointee.session.received(bytes)
                if actions.contains(.echoReceived) {
                    received.append(id, bytes: UInt32(res), to: &conn.pointee.held)
                    actions.formUnion(conn.pointee.session.holdingReceivedBuffer())
                } else {
                    buffers.give(back: id)  // the session took what it needed during the call
                }
                perform(actions, conn, index, recvStillArmed: more)
            }
        } else if res == 0 {
            conn.pointee.state.inputEnded = true
            if !conn.pointee.state.closing {
                perform(conn.pointee.session.inputDidEnd(), conn, index, recvStillArmed: more)
            }
        } else {
            let error = Errno(negatedResult: res)
            if error == .noBuffers {
                if !conn.pointee.state.closing && !conn.pointee.state.waitingForBuffers {
                    conn.pointee.state.waitingForBuffers = true
                    waiting.append(data.rawValue)
                }
            } else if error == .invalidArgument && !singleShotRecv && !more {
                // A kernel before 6.17 refuses the multishot cap: receive one buffer at a time.
                singleShotRecv = true
            } else if error != .cancelled && !conn.pointee.state.closing {
                sys.count(.resets)
                beginClose(conn, index)
            }
        }
        if !more { finishOperation(conn, index) }
    }

    @inline(__always)
    mutating func onSend(_ data: UserData, _ res: Int32) {
        guard let conn = live(data) else { return }
        let index = data.slot
        conn.pointee.state.sendCompleted()
        if res < 0 {
            if conn.pointee.session.hasOutbound && conn.pointee.state.sendingOutbound {
                conn.pointee.session.unpinOutbound()  // the kernel is done with the bytes
            }
            if !conn.pointee.state.closing {
                sys.count(.resets)
                beginClose(conn, index)
            }
            finishOperation(conn, index)
            return
        }
        sys.count(.bytesOut, UInt64(res))
        var actions: SessionActions = []
        if !conn.pointee.state.sendingOutbound, let done = received.written(Int(res), from: &conn.pointee.held) {
            // Every byte of this buffer is on its way to the peer: only now may it be reused.
            buffers.give(back: done)
            actions = conn.pointee.session.echoChunkWritten()
        }
        actions.formUnion(conn.pointee.session.sent(Int(res)))
        if !conn.pointee.state.closing { perform(actions, conn, index, recvStillArmed: conn.pointee.state.recvArmed) }
        finishOperation(conn, index)
    }

    /// Executes a session's actions (every one of them).
    @inline(__always)
    mutating func perform(_ actions: SessionActions, _ conn: UnsafeMutablePointer<RingConnection<Session>>, _ index: Int, recvStillArmed: Bool) {
        if actions.contains(.timerChanged) { timerChanged(conn, index) }
        if actions.contains(.close) {
            // Everything owed is written: a peer still sending gets a FIN after it, not an RST.
            beginClose(conn, index, lingering: true)
            return
        }
        if actions.contains(.pauseInput) {
            conn.pointee.state.inputPaused = true
            if recvStillArmed && conn.pointee.state.recvArmed { cancelRecv(conn, index) }
        }
        if actions.contains(.resumeInput) {
            conn.pointee.state.inputPaused = false
            if conn.pointee.state.shouldArmRecv(sessionWantsInput: conn.pointee.session.wantsInput) { armRecv(conn, index) }
        }
        // .echoReceived: the buffer is already in the connection's queue; like .send, it is
        // written by the next send.
        if actions.contains(.send) || actions.contains(.echoReceived), !conn.pointee.state.sendInFlight {
            submitSend(conn, index)
        }
    }

    /// An operation on `conn` completed for good. Re-arms reading where it should go on, and
    /// closes the socket once a closing connection has nothing in flight.
    @inline(__always)
    mutating func finishOperation(_ conn: UnsafeMutablePointer<RingConnection<Session>>, _ index: Int) {
        if conn.pointee.state.operationFinished() {
            finishClose(index)
        } else if conn.pointee.state.shouldArmRecv(sessionWantsInput: conn.pointee.session.wantsInput) {
            armRecv(conn, index)
        }
    }

    @inline(never)  // not per message: out of line, so the completion loop stays compact
    mutating func beginClose(_ conn: UnsafeMutablePointer<RingConnection<Session>>, _ index: Int, lingering: Bool = false) {
        guard !conn.pointee.state.closing else { return }
        let recvArmed = conn.pointee.state.recvArmed
        // A send still in flight at a close is one the peer is not reading (a session closes
        // only once its output is written, unless it gives up on a slow peer): shutting the
        // socket down completes it, so the close does not wait on the peer.
        if conn.pointee.state.sendInFlight { sys.shutdown(conn.pointee.fd, Int32(SHUT_RDWR)) }
        if conn.pointee.state.beginClose(lingering: lingering) {
            finishClose(index)
        } else if recvArmed {
            cancelRecv(conn, index)
        }
    }

    /// Nothing is in flight on this socket any more: return its buffers and close it.
    @inline(never)  // not per message: out of line, so the completion loop stays compact
    mutating func finishClose(_ index: Int) {
        let record = connections.remove(index)  // dropping it frees the session's memory
        var id = record.held.head
        while id != HeldBuffers.none {
            let following = received.following(id)
            buffers.give(back: id)
            id = following
        }
        if record.state.lingers {
            closer.adopt(record.fd, sys)
        } else {
            sys.close(record.fd)
            sys.count(.closed)
            limit.release()
        }
    }

    /// Re-arms as many connections that hit `ENOBUFS` as there are buffers to receive into.
    @inline(never)  // not per message: out of line, so the completion loop stays compact
    mutating func rearmWaiting() {
        var budget = buffers.available
        var kept: [UInt64] = []
        for raw in waiting {
            let data = UserData(rawValue: raw)
            guard let conn = live(data), conn.pointee.state.waitingForBuffers else { continue }
            if budget == 0 { kept.append(raw); continue }
            conn.pointee.state.waitingForBuffers = false
            if conn.pointee.state.shouldArmRecv(sessionWantsInput: conn.pointee.session.wantsInput) {
                armRecv(conn, data.slot)
                budget -= 1
            }
        }
        waiting = kept
    }

    mutating func shutDown() {
        // Tearing the ring down cancels and reaps every operation still in flight, so after it
        // no buffer or socket is in the kernel's hands and all may be released.
        ring.exit()
        notifier.unregister(loopNumber)
        for index in connections.liveIndices() {
            let record = connections.remove(index)
            sys.close(record.fd)
            sys.count(.closed)
            limit.release()
        }
        // The listener is closed with the loop, right after this.
    }

    deinit {
        // run() tore the ring down before returning, and a loop that never ran submitted
        // nothing: no operation in the kernel refers to this memory any more.
        completions.deallocate()
        wakeBuffer.deallocate()
        backoff.deallocate()
        waitTimeout.deallocate()
    }
}
