import CLibUring
import ServerKit
import Protocols
import BackendKit
#if canImport(Glibc)
import Glibc
#endif

/// The backend services a ring gives its sessions: timers (the ring wait's own timeout, passed
/// with `IORING_ENTER_EXT_ARG`: no timeout operation in the ring) and notifications from other
/// loops (a read on the wake eventfd kept in the ring completes when one is posted).
extension RingEventLoop where Session: ~Copyable {
    /// Submits and waits for a completion or the first timer's deadline, whichever is first.
    @inline(never)  // not per message: out of line, so the completion loop stays compact
    mutating func waitNoLaterThanTheNextTimer() -> Int32 {
        let now = ProcessResources.monotonicNanoseconds()
        let wait = (timers.nextDeadline ?? now) > now ? timers.nextDeadline! - now : 0
        if waitByPoll {
            let rc = io_uring_submit_and_get_events(ring.raw)
            guard rc >= 0, io_uring_cq_ready(ring.raw) == 0, wait > 0 else { return rc }
            sys.count(.poll)
            var descriptor = pollfd(fd: ring.raw.pointee.ring_fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&descriptor, 1, Int32(clamping: (wait + 999_999) / 1_000_000))
            sys.count(.ioUringEnter)
            return io_uring_get_events(ring.raw)
        }
        waitTimeout.pointee = __kernel_timespec(tv_sec: Int64(wait / 1_000_000_000), tv_nsec: Int64(wait % 1_000_000_000))
        var cqe: UnsafeMutablePointer<io_uring_cqe>?
        return io_uring_submit_and_wait_timeout(ring.raw, &cqe, 1, waitTimeout, nil)
    }

    /// Notifications posted from other threads: each to its connection, if it is still there.
    @inline(never)  // not per message: out of line, so the completion loop stays compact
    mutating func deliverNotes() {
        mailbox.take(into: &notesTaken)
        for note in notesTaken {
            let index = Int(note.slot)
            guard index < connections.capacity, connections.isLive(index, generation: note.generation) else { continue }
            let conn = connections.slots + index
            guard !conn.pointee.state.closing else { continue }
            perform(conn.pointee.session.notified(note.value), conn, index, recvStillArmed: conn.pointee.state.recvArmed)
        }
    }

    /// Runs every timer that is due; stale entries (cancelled, re-armed, closed) are dropped.
    @inline(never)  // not per message: out of line, so the completion loop stays compact
    mutating func fireDueTimers() {
        let now = ProcessResources.monotonicNanoseconds()
        while let entry = timers.popDue(now) {
            let index = Int(entry.slot)
            guard connections.isLive(index, generation: entry.generation) else { continue }
            let conn = connections.slots + index
            guard conn.pointee.timerDeadline == entry.deadline, !conn.pointee.state.closing else { continue }
            conn.pointee.timerDeadline = 0
            perform(conn.pointee.session.timerFired(), conn, index, recvStillArmed: conn.pointee.state.recvArmed)
        }
    }

    /// Arms the connection's timer for what its session now asks (or cancels it).
    @inline(never)  // not per message: out of line, so the completion loop stays compact
    mutating func timerChanged(_ conn: UnsafeMutablePointer<RingConnection<Session>>, _ index: Int) {
        guard let deadline = conn.pointee.session.timerDeadline else {
            conn.pointee.timerDeadline = 0
            return
        }
        conn.pointee.timerDeadline = max(deadline, 1)
        timers.schedule(conn.pointee.timerDeadline, slot: UInt32(index), generation: connections.generation(index))
    }
}
