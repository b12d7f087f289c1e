import CLibUring
import ServerKit
import Protocols
import BackendKit
#if canImport(Glibc)
import Glibc
#endif

/// One io_uring instance: the sole owner of its submission and completion queues. Set up with
/// the best flags the kernel accepts; torn down by ``exit()`` (or at the latest by `deinit`).
struct Ring: ~Copyable {
    /// Names the missing kernel feature in the error a ring without it reports.
    static let minTimeoutCall = "io_uring min-timeout wait"

    /// liburing's ring; stable for the ring's life (the kernel's queues are mapped through it).
    let raw: UnsafeMutablePointer<io_uring>
    /// The setup flags the kernel accepted, for stats.
    let setupFlagNames: String
    private var exited = false

    init(entries: Int, waitByPoll: Bool, needsMinTimeout: Bool) throws(SystemError) {
        raw = .allocate(capacity: 1)
        // SINGLE_ISSUER|DEFER_TASKRUN runs completion work only when this thread enters the
        // kernel to wait, so it is never interrupted mid-batch; older kernels refuse it.
        // Waiting in poll(2) needs completion work that runs without this thread entering the
        // ring (DEFER_TASKRUN and COOP_TASKRUN would leave poll asleep): plain task work.
        let attempts: [(UInt32, String)] = waitByPoll ? [(0, "none")] : [
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
            let rc = io_uring_queue_init_params(UInt32(entries), raw, &params)
            if rc == 0 { chosen = name; features = params.features; break }
            lastError = rc
            if rc != -EINVAL { break }
        }
        guard let chosen else {
            raw.deallocate()
            throw SystemError("io_uring_queue_init_params", Errno(negatedResult: lastError))
        }
        if needsMinTimeout && features & IORING_FEAT_MIN_TIMEOUT == 0 {
            io_uring_queue_exit(raw)
            raw.deallocate()
            throw SystemError(Ring.minTimeoutCall, Errno(rawValue: ENOSYS))
        }
        setupFlagNames = chosen
    }

    deinit {
        if !exited { io_uring_queue_exit(raw) }
        raw.deallocate()
    }

    /// Tears the ring down: the kernel cancels and reaps every operation still in flight, so
    /// afterwards no buffer or socket is in its hands and all may be released.
    mutating func exit() {
        guard !exited else { return }
        io_uring_queue_exit(raw)
        exited = true
    }

    /// A submission slot; when the queue is full, submits what is there first.
    @inline(__always)
    func nextSQE(_ sys: SystemCalls) -> UnsafeMutablePointer<io_uring_sqe> {
        while true {
            if let sqe = io_uring_get_sqe(raw) { return sqe }
            sys.count(.ioUringEnter)
            _ = io_uring_submit(raw)
        }
    }

    /// Submits, and when nothing is ready blocks in `poll(2)` on the ring (readable once a
    /// completion or deferred completion work is pending), then reaps without blocking.
    func submitAndWaitByPoll(_ sys: SystemCalls) -> Int32 {
        let rc = io_uring_submit_and_get_events(raw)
        guard rc >= 0, io_uring_cq_ready(raw) == 0 else { return rc }
        sys.count(.poll)
        var descriptor = pollfd(fd: raw.pointee.ring_fd, events: Int16(POLLIN), revents: 0)
        _ = poll(&descriptor, 1, -1)  // EINTR or an error: the reap below finds what there is
        sys.count(.ioUringEnter)
        return io_uring_get_events(raw)
    }
}
