#if canImport(Glibc)
import Glibc
#endif
import ServerKit

/// CPU work on the calling thread, measured on the thread's own CPU clock, so a request's
/// `work_us` is CPU the server spent on it even when the thread is preempted meanwhile.
public enum CPUWork {
    /// Spins until this thread has used `microseconds` more CPU time. The clock is read about
    /// every 2 µs of work, so reading it costs a few percent of the work, not more.
    public static func spin(microseconds: UInt32) {
        let target = ProcessResources.threadCPUNanoseconds() + UInt64(microseconds) * 1000
        var sink: UInt64 = 0x9E37_79B9_7F4A_7C15
        while ProcessResources.threadCPUNanoseconds() < target {
            for _ in 0..<512 {
                sink = sink &* 6364136223846793005 &+ 1442695040888963407
            }
        }
        blackHole(sink)
    }

    /// Keeps the spin's result alive so the optimiser cannot drop the loop.
    @_optimize(none)
    static func blackHole(_ value: UInt64) {}

    @inline(__always)
    static func threadCPUNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
