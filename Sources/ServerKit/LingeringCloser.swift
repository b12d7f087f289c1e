import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Closes connections whose peer may still be sending, without losing what the peer was owed.
///
/// Closing a TCP socket that still has unread input makes the kernel answer with RST instead of
/// FIN, and a peer that receives RST may throw away answers it had not read yet. So when a server
/// ends a connection its peer has not finished (after a `too_large` ERROR, say), it writes every
/// owed byte first and then hands the socket here: the sending side is shut down (the FIN follows
/// the last owed byte), input is read and discarded until the peer closes its side, and only then
/// is the socket closed — or once ``maxDiscardedBytes`` were discarded or ``timeoutNanoseconds``
/// passed, whichever comes first (docs/PROTOCOL.md, "Closing"). Apache's lingering close and
/// nginx's `lingering_close` do the same.
///
/// One thread per server, started by the first socket handed over (a server that never ends a
/// connection this way has none), waiting in epoll on the sockets it holds. A connection counts
/// as open, and keeps its place under `--max-connections`, until its socket is closed here.
public final class LingeringCloser: Sendable {
    /// The most input discarded from one connection before it is closed regardless.
    public static let maxDiscardedBytes = 1 << 20
    /// The longest a connection lingers after its sending side was shut down.
    public static let timeoutNanoseconds: UInt64 = 2_000_000_000

    private struct State {
        var thread: OSThread?
        var epoll: Int32 = -1
        var wake: Int32 = -1
        /// Sockets handed over and not yet taken by the thread.
        var incoming: [Int32] = []
        var stopped = false
    }

    private let state = Mutex(State())
    private let stopping = Atomic<Bool>(false)
    private let limit: ConnectionLimit
    private let registry: CounterRegistry
    private static let wakeToken = UInt64.max

    public init(limit: ConnectionLimit, registry: CounterRegistry) {
        self.limit = limit
        self.registry = registry
    }

    /// Takes over `fd`, a connected socket nothing else refers to any more (no operation is in
    /// flight on it, no epoll set watches it): shuts down its sending side now and closes it once
    /// the peer has closed its side or a bound is reached. `sys` counts the shutdown (the
    /// caller's thread); the close is counted by this closer's own thread.
    public func adopt(_ fd: Int32, _ sys: SystemCalls) {
        sys.shutdown(fd, Int32(SHUT_WR))
        let wake = state.withLock { state -> Int32? in
            guard !state.stopped else { return nil }
            if state.thread == nil && !startThread(&state) { return nil }
            state.incoming.append(fd)
            return state.wake
        }
        guard let wake else {
            // Stopping, or no thread could be started: close at once rather than hold it.
            sys.close(fd)
            sys.count(.closed)
            limit.release()
            return
        }
        sys.signal(eventFD: wake)
    }

    /// Closes every socket it still holds and ends its thread. Idempotent.
    public func stop() {
        let (thread, wake, epoll) = state.withLock { state in
            state.stopped = true
            defer { state.thread = nil }
            return (state.thread, state.wake, state.epoll)
        }
        guard let thread else { return }
        stopping.store(true, ordering: .sequentiallyConsistent)
        SystemCalls.Uncounted.signal(eventFD: wake)
        thread.join()
        SystemCalls.Uncounted.close(wake)
        SystemCalls.Uncounted.close(epoll)
    }

    private func startThread(_ state: inout State) -> Bool {
        let counters = registry.makeCounters()
        let sys = SystemCalls(counters: counters)
        do {
            let epoll = try sys.epollCreate()
            let wake: Int32
            do {
                wake = try sys.makeEventFD()
            } catch {
                sys.close(epoll)
                throw error
            }
            do {
                try sys.epollCtl(epoll, Epoll.add, wake, events: Epoll.input, data: Self.wakeToken)
                state.thread = try OSThread(name: "iob-linger", stackSize: 128 * 1024) { [self] in
                    run(epoll: epoll, wake: wake, sys: SystemCalls(counters: counters))
                }
            } catch {
                sys.close(wake)
                sys.close(epoll)
                throw error
            }
            state.epoll = epoll
            state.wake = wake
            return true
        } catch {
            reportError("iobench: cannot start lingering closes (sockets are closed at once instead): \(error)")
            return false
        }
    }

    /// The closer's thread: takes handed-over sockets, discards what they receive, and closes
    /// each at its peer's end of input, at the byte bound, or at its deadline.
    private func run(epoll: Int32, wake: Int32, sys: SystemCalls) {
        struct Lingering {
            var serial: UInt64
            var deadline: UInt64
            var discarded = 0
        }
        var held: [Int32: Lingering] = [:]
        // Every socket lingers equally long, so adoption order is deadline order.
        var byDeadline: [(fd: Int32, serial: UInt64)] = []
        var next = 0
        var serial: UInt64 = 0
        let capacity: Int32 = 64
        let events = UnsafeMutablePointer<EpollEvent>.allocate(capacity: Int(capacity))
        defer { events.deallocate() }

        func finish(_ fd: Int32) {
            held[fd] = nil
            sys.close(fd)  // also takes it out of the epoll set
            sys.count(.closed)
            limit.release()
        }
        func isCurrent(_ entry: (fd: Int32, serial: UInt64)) -> Bool { held[entry.fd]?.serial == entry.serial }

        while !stopping.load(ordering: .sequentiallyConsistent) {
            while next < byDeadline.count && !isCurrent(byDeadline[next]) { next += 1 }
            if next > 256 && next * 2 > byDeadline.count {
                byDeadline.removeFirst(next)
                next = 0
            }
            var timeout: UInt64?
            if next < byDeadline.count, let first = held[byDeadline[next].fd] {
                let now = ProcessResources.monotonicNanoseconds()
                timeout = first.deadline > now ? first.deadline - now : 0
            }
            let ready: Int
            do {
                ready = try sys.epollWait(epoll, events, capacity: capacity, timeoutNanoseconds: timeout)
            } catch {
                reportError("iobench: lingering closes stopped: \(error)")
                break
            }
            for i in 0..<ready {
                let token = events[i].data.u64
                if token == Self.wakeToken {
                    sys.drain(eventFD: wake)
                    let taken = state.withLock { state in
                        defer { state.incoming.removeAll(keepingCapacity: true) }
                        return state.incoming
                    }
                    let deadline = ProcessResources.monotonicNanoseconds() + Self.timeoutNanoseconds
                    for fd in taken {
                        serial += 1
                        held[fd] = Lingering(serial: serial, deadline: deadline)
                        do {
                            try sys.epollCtl(epoll, Epoll.add, fd, events: Epoll.input | Epoll.peerClosed, data: UInt64(fd))
                            byDeadline.append((fd, serial))
                        } catch {
                            finish(fd)
                        }
                    }
                    continue
                }
                let fd = Int32(truncatingIfNeeded: token)
                guard var entry = held[fd] else { continue }
                let result: IOResult
                do {
                    result = try sys.discardInput(fd, upTo: Self.maxDiscardedBytes - entry.discarded)
                } catch {
                    finish(fd)  // the connection failed
                    continue
                }
                switch result {
                case .bytes(let n) where n > 0:
                    sys.count(.bytesIn, UInt64(n))
                    entry.discarded += n
                    if entry.discarded >= Self.maxDiscardedBytes {
                        finish(fd)
                    } else {
                        held[fd] = entry
                    }
                case .wouldBlock:
                    break
                case .bytes:
                    finish(fd)  // the peer closed its side
                }
            }
            let now = ProcessResources.monotonicNanoseconds()
            while next < byDeadline.count {
                let entry = byDeadline[next]
                if let lingering = held[entry.fd], lingering.serial == entry.serial {
                    guard lingering.deadline <= now else { break }
                    finish(entry.fd)
                }
                next += 1
            }
        }
        for fd in Array(held.keys) { finish(fd) }
        let left = state.withLock { state in
            defer { state.incoming.removeAll() }
            return state.incoming
        }
        for fd in left {
            sys.close(fd)
            sys.count(.closed)
            limit.release()
        }
    }
}
