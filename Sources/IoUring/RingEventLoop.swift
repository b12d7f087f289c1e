import CLibUring
import EchoCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One connection of a ring: kept inline in the loop's ``ConnectionTable``. Its received
/// buffers form a FIFO linked through the loop's per-buffer `next` array, so the record stays
/// small however much is queued.
struct RingConnection {
    static let noBuffer = UInt16.max

    var fd: Int32
    var session: EchoSession
    var queueHead = RingConnection.noBuffer
    var queueTail = RingConnection.noBuffer
    /// Buffers this connection holds (received, not yet fully sent).
    var heldBuffers: UInt16 = 0
    /// Bytes of the head buffer already sent.
    var headOffset: UInt32 = 0
    /// Operations submitted and not yet completed for good; the socket is closed only at zero.
    var inFlight: UInt8 = 0
    var recvArmed = false
    var sendInFlight = false
    var closing = false
    var waitingForBuffers = false
}

/// A ring's event loop. Per iteration: publish returned buffers, re-arm connections that ran
/// out of buffers, one `io_uring_submit_and_wait`, then reap completions in a batch.
struct RingEventLoop {
    struct Setup: @unchecked Sendable {
        let listener: Int32
        let wake: Int32
        let counters: ThreadCounters
        let limit: ConnectionLimit
        let configuration: ServerConfiguration
    }

    static let completionBatch = 256
    static let acceptBackoffNanoseconds = 50_000_000
    /// Names the missing kernel feature in the error a ring without it reports.
    static let minTimeoutCall = "io_uring min-timeout wait"
    /// The fewest completions a batch wait waits for (so it applies from 32 connections).
    static let smallestBatch = 8

    private let setup: Setup
    private let sys: SystemCalls
    private let ring: UnsafeMutablePointer<io_uring>
    private var buffers: BufferRing
    /// Per buffer: the next buffer in its connection's queue, and how many bytes it holds.
    private let bufferNext: UnsafeMutablePointer<UInt16>
    private let bufferLength: UnsafeMutablePointer<UInt32>
    private var connections = ConnectionTable<RingConnection>(initialCapacity: 256)
    private let completions: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    /// Connections whose multishot recv ended with `ENOBUFS`, to re-arm as buffers return.
    private var waiting: [UInt64] = []
    private let wakeBuffer: UnsafeMutablePointer<UInt64>
    private let backoff: UnsafeMutablePointer<__kernel_timespec>
    private let maxHeldBuffers: UInt16
    private var acceptArmed = false
    private var acceptExhausted = false
    /// Microseconds a wait may hold out for a batch (0: wake on the first completion).
    private let batchWait: UInt32
    private let waitByPoll: Bool
    /// The setup flags the kernel accepted, for stats.
    let setupFlagNames: String

    init(_ setup: Setup) throws(SystemError) {
        self.setup = setup
        sys = SystemCalls(counters: setup.counters)
        let configuration = setup.configuration
        ring = .allocate(capacity: 1)
        // SINGLE_ISSUER|DEFER_TASKRUN runs completion work only when this thread enters the
        // kernel to wait, so it is never interrupted mid-batch; older kernels refuse it.
        // Waiting in poll(2) needs completion work that runs without this thread entering the
        // ring (DEFER_TASKRUN and COOP_TASKRUN would leave poll asleep): plain task work.
        let attempts: [(UInt32, String)] = configuration.ringWaitByPoll ? [(0, "none")] : [
            (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, "SINGLE_ISSUER|DEFER_TASKRUN"),
            (IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN"),
            (0, "none"),
        ]
        var chosen: String?
        var lastError: Int32 = 0
        var features: UInt32 = 0
        for (flags, name) in attempts {
            var params = io_uring_params()
            params.flags = flags | IORING_SETUP_SUBMIT_ALL
            let rc = io_uring_queue_init_params(UInt32(configuration.ringEntries), ring, &params)
            if rc == 0 { chosen = name; features = params.features; break }
            lastError = rc
            if rc != -EINVAL { break }
        }
        guard let chosen else {
            ring.deallocate()
            throw SystemError("io_uring_queue_init_params", Errno(negatedResult: lastError))
        }
        setupFlagNames = chosen
        if configuration.batchWaitMicroseconds > 0 && features & IORING_FEAT_MIN_TIMEOUT == 0 {
            io_uring_queue_exit(ring)
            ring.deallocate()
            throw SystemError(RingEventLoop.minTimeoutCall, Errno(rawValue: ENOSYS))
        }
        batchWait = configuration.batchWaitMicroseconds
        waitByPoll = configuration.ringWaitByPoll
        do {
            buffers = try BufferRing(ring: ring, groupID: 1, count: configuration.ringBufferCount, bufferSize: configuration.ringBufferSize)
        } catch {
            io_uring_queue_exit(ring)
            ring.deallocate()
            throw error
        }
        bufferNext = .allocate(capacity: configuration.ringBufferCount)
        bufferLength = .allocate(capacity: configuration.ringBufferCount)
        completions = .allocate(capacity: Self.completionBatch)
        wakeBuffer = .allocate(capacity: 1)
        backoff = .allocate(capacity: 1)
        backoff.pointee = __kernel_timespec(tv_sec: 0, tv_nsec: Int64(Self.acceptBackoffNanoseconds))
        maxHeldBuffers = UInt16(clamping: max(4, configuration.maxOwedPerConnection / configuration.ringBufferSize + 1))
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
            if batchWait > 0 && batch >= Self.smallestBatch {
                // A batch of a completion per four connections (at depth 1 a message brings a
                // recv and a send completion). Smaller batches save too few wake-ups to pay for
                // the timer the kernel arms for the wait.
                rc = iobench_submit_and_wait_batch(ring, UInt32(batch), batchWait)
            } else if waitByPoll {
                rc = submitAndWaitByPoll()
            } else {
                rc = io_uring_submit_and_wait(ring, 1)
            }
            if rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY && rc != -ETIME {
                reportError("iobench: io_uring loop stopped: \(SystemError("io_uring_submit_and_wait", Errno(negatedResult: rc)))")
                break
            }
            while true {
                let n = Int(io_uring_peek_batch_cqe(ring, completions, UInt32(Self.completionBatch)))
                if n == 0 { break }
                for i in 0..<n {
                    let cqe = completions[i]!
                    if !handle(UserData(rawValue: cqe.pointee.user_data), cqe.pointee.res, cqe.pointee.flags) {
                        running = !stopping.load(ordering: .sequentiallyConsistent)
                    }
                }
                io_uring_cq_advance(ring, UInt32(n))
                if n < Self.completionBatch { break }
            }
        }
        shutDown()
    }

    /// Submits, and when nothing is ready blocks in `poll(2)` on the ring (readable once a
    /// completion or deferred completion work is pending), then reaps without blocking.
    private mutating func submitAndWaitByPoll() -> Int32 {
        var rc = io_uring_submit_and_get_events(ring)
        guard rc >= 0, io_uring_cq_ready(ring) == 0 else { return rc }
        sys.count(.poll)
        var descriptor = pollfd(fd: ring.pointee.ring_fd, events: Int16(POLLIN), revents: 0)
        _ = poll(&descriptor, 1, -1)  // EINTR or an error: the reap below finds what there is
        sys.count(.ioUringEnter)
        rc = io_uring_get_events(ring)
        return rc
    }

    // MARK: Submissions

    /// A submission slot; when the queue is full, submits what is there first.
    @inline(__always)
    private mutating func nextSQE() -> UnsafeMutablePointer<io_uring_sqe> {
        while true {
            if let sqe = io_uring_get_sqe(ring) { return sqe }
            sys.count(.ioUringEnter)
            _ = io_uring_submit(ring)
        }
    }

    private mutating func armAccept() {
        let sqe = nextSQE()
        io_uring_prep_multishot_accept(sqe, setup.listener, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
        io_uring_sqe_set_data64(sqe, UserData(.accept).rawValue)
        acceptArmed = true
    }

    private mutating func armWake() {
        let sqe = nextSQE()
        io_uring_prep_read(sqe, setup.wake, wakeBuffer, 8, 0)
        io_uring_sqe_set_data64(sqe, UserData(.wake).rawValue)
    }

    @inline(__always)
    private mutating func armRecv(_ conn: UnsafeMutablePointer<RingConnection>, _ index: Int) {
        let sqe = nextSQE()
        io_uring_prep_recv_multishot(sqe, conn.pointee.fd, nil, 0, 0)
        sqe.pointee.flags |= UInt8(1 << IOSQE_BUFFER_SELECT_BIT)
        sqe.pointee.buf_group = buffers.groupID
        io_uring_sqe_set_data64(sqe, UserData(.recv, slot: index, generation: connections.generation(index)).rawValue)
        conn.pointee.recvArmed = true
        conn.pointee.inFlight += 1
    }

    /// Sends the rest of the head buffer, straight from the ring memory it was received into.
    @inline(__always)
    private mutating func submitSend(_ conn: UnsafeMutablePointer<RingConnection>, _ index: Int) {
        let head = conn.pointee.queueHead
        let offset = Int(conn.pointee.headOffset)
        let sqe = nextSQE()
        io_uring_prep_send(sqe, conn.pointee.fd, buffers.address(of: head) + offset, Int(bufferLength[Int(head)]) - offset, Int32(MSG_NOSIGNAL))
        io_uring_sqe_set_data64(sqe, UserData(.send, slot: index, generation: connections.generation(index)).rawValue)
        conn.pointee.sendInFlight = true
        conn.pointee.inFlight += 1
    }

    private mutating func cancelRecv(_ conn: UnsafeMutablePointer<RingConnection>, _ index: Int) {
        let sqe = nextSQE()
        io_uring_prep_cancel64(sqe, UserData(.recv, slot: index, generation: connections.generation(index)).rawValue, 0)
        io_uring_sqe_set_data64(sqe, UserData(.cancel, slot: index, generation: connections.generation(index)).rawValue)
        conn.pointee.inFlight += 1
    }

    // MARK: Completions

    /// Handles one completion. Returns false when it was the stop signal.
    @inline(__always)
    private mutating func handle(_ data: UserData, _ res: Int32, _ flags: UInt32) -> Bool {
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
    private func live(_ data: UserData) -> UnsafeMutablePointer<RingConnection>? {
        let index = data.slot
        guard index < connections.capacity else { return nil }
        let generation = connections.generation(index)
        guard generation & 1 == 1, generation & 0xFF_FFFF == data.generation else { return nil }
        return connections.slots + index
    }

    private mutating func onAccept(_ res: Int32, _ flags: UInt32) {
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
                    let sqe = nextSQE()
                    io_uring_prep_cancel64(sqe, UserData(.accept).rawValue, 0)
                    io_uring_sqe_set_data64(sqe, 0)
                }
            }
        }
        if flags & IORING_CQE_F_MORE == 0 {
            acceptArmed = false
            if acceptExhausted {
                // Waiting connections stay in the backlog; try again once descriptors may be free.
                let sqe = nextSQE()
                io_uring_prep_timeout(sqe, backoff, 0, 0)
                io_uring_sqe_set_data64(sqe, UserData(.acceptBackoff).rawValue)
            } else {
                armAccept()
            }
        }
    }

    private mutating func accepted(_ fd: Int32) {
        guard setup.limit.acquire() else {
            sys.count(.refused)
            sys.close(fd)
            return
        }
        Socket.setNoDelay(fd)
        let index = connections.insert(RingConnection(fd: fd, session: EchoSession(maxOwed: setup.configuration.maxOwedPerConnection)))
        sys.count(.accepted)
        armRecv(connections.slots + index, index)
    }

    @inline(__always)
    private mutating func onRecv(_ data: UserData, _ res: Int32, _ flags: UInt32) {
        guard let conn = live(data) else {
            // A connection's slot is freed only when nothing is in flight, so this cannot carry
            // a buffer; ignore it.
            return
        }
        let index = data.slot
        let more = flags & IORING_CQE_F_MORE != 0
        if !more { conn.pointee.recvArmed = false }
        if res > 0 {
            let id = UInt16(truncatingIfNeeded: flags >> UInt32(IORING_CQE_BUFFER_SHIFT))
            buffers.taken(id)
            if conn.pointee.closing || conn.pointee.session.inputEnded {
                buffers.give(back: id)
            } else {
                enqueue(conn, id, UInt32(res))
                sys.count(.bytesIn, UInt64(res))
                if setup.configuration.injection.isActive { sys.inject(setup.configuration.injection) }
                let actions = conn.pointee.session.received(Int(res))
                if !conn.pointee.sendInFlight { submitSend(conn, index) }
                if more && (actions.contains(.pauseInput) || conn.pointee.heldBuffers >= maxHeldBuffers) {
                    cancelRecv(conn, index)
                }
            }
        } else if res == 0 {
            if !conn.pointee.closing && conn.pointee.session.inputDidEnd().contains(.close) {
                beginClose(conn, index)
            }
        } else {
            let error = Errno(negatedResult: res)
            if error == .noBuffers {
                if !conn.pointee.closing && !conn.pointee.waitingForBuffers {
                    conn.pointee.waitingForBuffers = true
                    waiting.append(data.rawValue)
                }
            } else if error != .cancelled && !conn.pointee.closing {
                sys.count(.resets)
                beginClose(conn, index)
            }
        }
        if !more { finishOperation(conn, index) }
    }

    @inline(__always)
    private mutating func onSend(_ data: UserData, _ res: Int32) {
        guard let conn = live(data) else { return }
        let index = data.slot
        conn.pointee.sendInFlight = false
        if res < 0 {
            if !conn.pointee.closing {
                sys.count(.resets)
                beginClose(conn, index)
            }
            finishOperation(conn, index)
            return
        }
        sys.count(.bytesOut, UInt64(res))
        conn.pointee.headOffset += UInt32(res)
        let head = conn.pointee.queueHead
        if conn.pointee.headOffset == bufferLength[Int(head)] {
            // Every byte of this buffer is on its way to the peer: only now may it be reused.
            conn.pointee.queueHead = bufferNext[Int(head)]
            if conn.pointee.queueHead == RingConnection.noBuffer { conn.pointee.queueTail = RingConnection.noBuffer }
            conn.pointee.heldBuffers -= 1
            conn.pointee.headOffset = 0
            buffers.give(back: head)
        }
        let actions = conn.pointee.session.sent(Int(res))
        if !conn.pointee.closing {
            if actions.contains(.send) {
                submitSend(conn, index)
            } else if actions.contains(.close) {
                beginClose(conn, index)
            }
            if !conn.pointee.recvArmed && !conn.pointee.waitingForBuffers && mayRead(conn) {
                armRecv(conn, index)
            }
        }
        finishOperation(conn, index)
    }

    @inline(__always)
    private func mayRead(_ conn: UnsafeMutablePointer<RingConnection>) -> Bool {
        conn.pointee.session.wantsInput && conn.pointee.heldBuffers < maxHeldBuffers / 2 + 1
    }

    @inline(__always)
    private func enqueue(_ conn: UnsafeMutablePointer<RingConnection>, _ id: UInt16, _ length: UInt32) {
        bufferLength[Int(id)] = length
        bufferNext[Int(id)] = RingConnection.noBuffer
        if conn.pointee.queueTail == RingConnection.noBuffer {
            conn.pointee.queueHead = id
        } else {
            bufferNext[Int(conn.pointee.queueTail)] = id
        }
        conn.pointee.queueTail = id
        conn.pointee.heldBuffers += 1
    }

    /// An operation on `conn` completed for good. Re-arms reading where it should go on, and
    /// closes the socket once a closing connection has nothing in flight.
    @inline(__always)
    private mutating func finishOperation(_ conn: UnsafeMutablePointer<RingConnection>, _ index: Int) {
        conn.pointee.inFlight -= 1
        if conn.pointee.closing {
            if conn.pointee.inFlight == 0 { finishClose(index) }
        } else if !conn.pointee.recvArmed && !conn.pointee.waitingForBuffers && mayRead(conn) {
            armRecv(conn, index)
        }
    }

    private mutating func beginClose(_ conn: UnsafeMutablePointer<RingConnection>, _ index: Int) {
        conn.pointee.closing = true
        if conn.pointee.recvArmed { cancelRecv(conn, index) }
        if conn.pointee.inFlight == 0 { finishClose(index) }
    }

    /// Nothing is in flight on this socket any more: return its buffers and close it.
    private mutating func finishClose(_ index: Int) {
        let record = connections.remove(index)
        var id = record.queueHead
        while id != RingConnection.noBuffer {
            buffers.give(back: id)
            id = bufferNext[Int(id)]
        }
        sys.close(record.fd)
        sys.count(.closed)
        setup.limit.release()
    }

    /// Re-arms as many connections that hit `ENOBUFS` as there are buffers to receive into.
    private mutating func rearmWaiting() {
        var budget = buffers.available
        var kept: [UInt64] = []
        for raw in waiting {
            let data = UserData(rawValue: raw)
            guard let conn = live(data), conn.pointee.waitingForBuffers else { continue }
            if budget == 0 { kept.append(raw); continue }
            conn.pointee.waitingForBuffers = false
            if !conn.pointee.closing && !conn.pointee.recvArmed && mayRead(conn) {
                armRecv(conn, data.slot)
                budget -= 1
            }
        }
        waiting = kept
    }

    private mutating func shutDown() {
        // Tearing the ring down cancels and reaps every operation still in flight, so after it
        // no buffer or socket is in the kernel's hands and all may be released.
        io_uring_queue_exit(ring)
        for index in connections.liveIndices() {
            let record = connections.remove(index)
            sys.close(record.fd)
            sys.count(.closed)
            setup.limit.release()
        }
        connections.deallocate()
        sys.close(setup.listener)
        buffers.deallocate()
        bufferNext.deallocate()
        bufferLength.deallocate()
        completions.deallocate()
        wakeBuffer.deallocate()
        backoff.deallocate()
        ring.deallocate()
    }
}
