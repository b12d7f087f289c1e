import CSystemShims
import Synchronization

/// The system calls the backends make, counted per kind.
public enum SyscallKind: Int, CaseIterable, Sendable {
    // `other` stays last: the event counters follow it in a thread's counter block.
    case accept, recv, send, close, shutdown, epollWait, epollCtl, ioUringEnter, eventfd, poll, other

    /// The key used in stats JSON.
    public var name: String {
        switch self {
        case .accept: "accept"
        case .recv: "recv"
        case .send: "send"
        case .close: "close"
        case .shutdown: "shutdown"
        case .epollWait: "epoll_wait"
        case .epollCtl: "epoll_ctl"
        case .ioUringEnter: "io_uring_enter"
        case .eventfd: "eventfd"
        case .poll: "poll"
        case .other: "other"
        }
    }
}

/// Server events counted next to the system calls.
public enum EventCounter: Int, CaseIterable, Sendable {
    case accepted, closed, refused, acceptErrors, bytesIn, bytesOut, resets
    /// Framed patterns: requests parsed, responses committed, frames refused by reason.
    case requests, responses
    case malformedTooLarge, malformedUnknownType, malformedTooShort, malformedTruncated, malformedWorkTooLarge
    case malformedUnknownJob, malformedWaitPending, malformedAlreadySubscribed, malformedOutOfRange
    /// push: events published (by PUBLISH or the server's own timer), EVENT frames completely
    /// written to subscribers, events a slow subscriber lost to drop-oldest, subscribers
    /// disconnected for being slow.
    case eventsPublished, eventsDelivered, eventsDropped, slowDisconnects
    /// short polling: jobs started, STATUS frames answered, of which PENDING (empty polls).
    case jobsSubmitted, statusPolls, statusPending
    /// long polling: valid WAITs, WAITs held (no event yet), answered with EVENTS (and the
    /// events in them), answered with TIMEOUT, of which more than 10 ms after their deadline.
    case waits, waitsHeld, waitsAnswered, eventsAnswered, waitsTimedOut, timeoutsLate
    /// Chunks seen by an injected loop (``CostInjection/loopIterations``), which runs every 16th.
    case injectionTicks
}

/// One thread's counters: written only by the thread that owns them (no shared atomic on the
/// hot path), read by anyone through relaxed loads when stats are asked for.
public final class ThreadCounters: @unchecked Sendable {
    static let slotCount = SyscallKind.allCases.count + EventCounter.allCases.count
    /// The raw block; pass it to ``SystemCalls`` so the hot path needs no reference counting.
    public let block: UnsafeMutablePointer<UInt64>

    public init() {
        block = .allocate(capacity: Self.slotCount)
        block.initialize(repeating: 0, count: Self.slotCount)
    }

    deinit { block.deallocate() }

    @inline(__always)
    public func add(_ event: EventCounter, _ amount: UInt64 = 1) {
        iobench_counter_add(block + SyscallKind.allCases.count + event.rawValue, amount)
    }

    public func value(_ kind: SyscallKind) -> UInt64 { iobench_counter_load(block + kind.rawValue) }
    public func value(_ event: EventCounter) -> UInt64 {
        iobench_counter_load(block + SyscallKind.allCases.count + event.rawValue)
    }
}

/// A snapshot of counters summed over threads.
public struct CounterTotals: Sendable, Equatable {
    public var syscalls: [SyscallKind: UInt64] = [:]
    public var events: [EventCounter: UInt64] = [:]

    public init() {}

    public subscript(kind: SyscallKind) -> UInt64 { syscalls[kind, default: 0] }
    public subscript(event: EventCounter) -> UInt64 { events[event, default: 0] }

    public var totalSyscalls: UInt64 { syscalls.values.reduce(0, +) }

    mutating func add(_ counters: ThreadCounters) {
        for kind in SyscallKind.allCases { syscalls[kind, default: 0] += counters.value(kind) }
        for event in EventCounter.allCases { events[event, default: 0] += counters.value(event) }
    }

    mutating func add(_ other: CounterTotals) {
        for (k, v) in other.syscalls { syscalls[k, default: 0] += v }
        for (k, v) in other.events { events[k, default: 0] += v }
    }
}

/// Every live thread's counters, plus the totals of threads that have ended.
public final class CounterRegistry: Sendable {
    private struct State {
        var live: [ObjectIdentifier: ThreadCounters] = [:]
        var retired = CounterTotals()
    }
    private let state = Mutex(State())

    public init() {}

    /// Counters for a new thread; call ``retire(_:)`` when the thread ends.
    public func makeCounters() -> ThreadCounters {
        let counters = ThreadCounters()
        state.withLock { $0.live[ObjectIdentifier(counters)] = counters }
        return counters
    }

    /// Folds an ending thread's counts into the retired totals.
    public func retire(_ counters: ThreadCounters) {
        state.withLock { state in
            state.live.removeValue(forKey: ObjectIdentifier(counters))
            state.retired.add(counters)
        }
    }

    public func totals() -> CounterTotals {
        state.withLock { state in
            var totals = state.retired
            for counters in state.live.values { totals.add(counters) }
            return totals
        }
    }
}
