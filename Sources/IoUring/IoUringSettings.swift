import BackendKit

/// io_uring's own serve settings (`--ring-buffers`, `--ring-buffer-size`, `--batch-wait`,
/// `--ring-wait-by-poll`, `--ring-single-shot-recv`), kept in the configuration's
/// `backendSettings` under this type.
public struct IoUringSettings: BackendSettings, Equatable {
    /// Buffers in each ring's provided buffer ring (a power of two).
    public var bufferCount = 1024
    /// Size of each provided buffer.
    public var bufferSize = 16 * 1024
    /// Submission queue entries per ring.
    public var entries = 4096
    /// How long a loop may wait for a batch of completions (one per four connections, from 32
    /// connections) before any single completion ends the wait; 0 waits for one completion, as
    /// an unbatched loop does. Trades up to this much latency for fewer `io_uring_enter` calls
    /// and wake-ups. Needs Linux 6.12 (`IORING_FEAT_MIN_TIMEOUT`).
    public var batchWaitMicroseconds: UInt32 = 0
    /// Wait for completions in `poll(2)` on the ring's descriptor, then reap them without
    /// blocking, instead of waiting inside `io_uring_enter`. For running under valgrind (3.19),
    /// which does not know that `io_uring_enter` can block: a thread waiting in it keeps
    /// valgrind's lock, and every other thread of the server stops until a completion arrives.
    /// Costs a `poll` and a second `io_uring_enter` per wait that blocks.
    public var waitByPoll = false
    /// Receive with one single-shot recv per buffer instead of a multishot recv capped at what
    /// the session may still take (the way of kernels before 6.17, which lack the cap; chosen on
    /// such kernels by itself). Each recv then reads at most one buffer.
    public var singleShotRecv = false

    public init() {}
}
