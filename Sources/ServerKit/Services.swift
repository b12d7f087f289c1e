import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where a connection lives: its loop (for blocking, its thread) and its slot there, with the
/// slot's generation so a note for a connection that has since closed is dropped, not
/// delivered to a newcomer in the same slot.
public struct ConnectionAddress: Hashable, Sendable, CustomStringConvertible {
    public let loop: UInt32
    public let slot: UInt32
    public let generation: UInt32

    public init(loop: UInt32, slot: UInt32, generation: UInt32) {
        self.loop = loop
        self.slot = slot
        self.generation = generation
    }

    public var description: String { "\(loop).\(slot).\(generation)" }
}

/// A notification on its way to a connection.
public struct Note: Sendable, Equatable {
    public let slot: UInt32
    public let generation: UInt32
    public let value: UInt64

    public init(slot: UInt32, generation: UInt32, value: UInt64) {
        self.slot = slot
        self.generation = generation
        self.value = value
    }
}

/// A loop's inbox for notifications posted from other threads: a locked list and an eventfd
/// the poster writes when the list goes from empty to non-empty, so a burst of posts costs the
/// receiving loop one wake-up (epoll: readiness on the eventfd; io_uring: a read completing on it;
/// blocking: poll(2) on it).
public final class LoopMailbox: Sendable {
    /// The eventfd the loop watches.
    public let wake: Int32
    /// Whether the mailbox closes `wake` when the last reference to it goes: a poster on
    /// another thread may hold the mailbox a moment after the loop unregistered it, and must
    /// never write to a descriptor number that has since been reused.
    private let ownsWake: Bool
    /// Called instead of writing `wake` (a runtime with its own way to run work on a loop).
    private let waker: (@Sendable () -> Void)?
    private let notes = Mutex<[Note]>([])

    init(wake: Int32, ownsWake: Bool) {
        self.wake = wake
        self.ownsWake = ownsWake
        waker = nil
    }

    init(waker: @escaping @Sendable () -> Void) {
        wake = -1
        ownsWake = false
        self.waker = waker
    }

    private func signal() {
        if let waker {
            waker()
        } else {
            SystemCalls.Uncounted.signal(eventFD: wake)
        }
    }

    deinit {
        if ownsWake { SystemCalls.Uncounted.close(wake) }
    }

    package func post(_ note: Note) {
        let wasEmpty = notes.withLock { list in
            list.append(note)
            return list.count == 1
        }
        if wasEmpty { signal() }
    }

    package func post(contentsOf batch: [Note]) {
        let wasEmpty = notes.withLock { list in
            list.append(contentsOf: batch)
            return list.count == batch.count
        }
        if wasEmpty { signal() }
    }

    /// Everything posted so far (the loop reads its eventfd first, then takes).
    public func take() -> [Note] {
        var taken: [Note] = []
        take(into: &taken)
        return taken
    }

    /// Everything posted so far, in `taken` (emptied first): the two arrays trade places, so a
    /// loop that keeps its `taken` allocates nothing once both have grown to a burst's size.
    public func take(into taken: inout [Note]) {
        taken.removeAll(keepingCapacity: true)
        notes.withLock { list in swap(&list, &taken) }
    }
}

/// Posting notifications to connections owned by other loops or threads: the backend service
/// sessions use to wake each other (a publish reaching subscribers on every loop). Loops
/// register their mailbox when they start and unregister when they stop; a post to a loop that
/// is gone, or to a connection that has closed, is dropped.
public final class Notifier: Sendable {
    private let loops = Mutex<[UInt32: LoopMailbox]>([:])
    private let nextLoop = Atomic<UInt32>(0)

    public init() {}

    /// Registers a loop that watches `wake`; returns its number and mailbox. With
    /// `closingWake`, the mailbox takes `wake` over and closes it once nobody holds the mailbox
    /// (for a loop that ends before the server does); otherwise `wake` must outlive every
    /// poster (the event-loop servers close theirs after joining every thread).
    public func register(wake: Int32, closingWake: Bool = false) -> (loop: UInt32, mailbox: LoopMailbox) {
        let loop = nextLoop.wrappingAdd(1, ordering: .relaxed).oldValue
        let mailbox = LoopMailbox(wake: wake, ownsWake: closingWake)
        loops.withLock { $0[loop] = mailbox }
        return (loop, mailbox)
    }

    /// Registers a loop that is woken by `waker` (called on the posting thread when its
    /// mailbox goes from empty to non-empty; it must arrange for the loop to ``LoopMailbox/take()``).
    public func register(waker: @escaping @Sendable () -> Void) -> (loop: UInt32, mailbox: LoopMailbox) {
        let loop = nextLoop.wrappingAdd(1, ordering: .relaxed).oldValue
        let mailbox = LoopMailbox(waker: waker)
        loops.withLock { $0[loop] = mailbox }
        return (loop, mailbox)
    }

    public func unregister(_ loop: UInt32) {
        loops.withLock { _ = $0.removeValue(forKey: loop) }
    }

    /// The mailbox of loop `loop`, if it is registered.
    public func mailbox(for loop: UInt32) -> LoopMailbox? {
        loops.withLock { $0[loop] }
    }

    /// Posts `value` to the connection at `address`; false when its loop is gone.
    @discardableResult
    public func post(_ value: UInt64, to address: ConnectionAddress) -> Bool {
        guard let mailbox = loops.withLock({ $0[address.loop] }) else { return false }
        mailbox.post(Note(slot: address.slot, generation: address.generation, value: value))
        return true
    }
}

/// A loop's timers: a min-heap of deadlines (monotonic nanoseconds), one entry per arming.
/// Cancelled or re-armed timers are not searched for: each connection keeps its one armed
/// deadline, and an entry that no longer matches it when it comes due is dropped.
public struct TimerQueue: Sendable {
    public struct Entry: Sendable, Equatable {
        public let deadline: UInt64
        public let slot: UInt32
        public let generation: UInt32
    }

    @usableFromInline var heap: [Entry] = []

    public init() {}

    @inlinable public var isEmpty: Bool { heap.isEmpty }
    @inlinable public var count: Int { heap.count }
    /// The earliest deadline, if any.
    @inlinable public var nextDeadline: UInt64? { heap.first?.deadline }
    /// The earliest entry, if any.
    @inlinable public var first: Entry? { heap.first }

    public mutating func schedule(_ deadline: UInt64, slot: UInt32, generation: UInt32) {
        heap.append(Entry(deadline: deadline, slot: slot, generation: generation))
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].deadline < heap[parent].deadline else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    public mutating func popDue(_ now: UInt64) -> Entry? {
        guard let first = heap.first, first.deadline <= now else { return nil }
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var smallest = i
                if l < heap.count && heap[l].deadline < heap[smallest].deadline { smallest = l }
                if r < heap.count && heap[r].deadline < heap[smallest].deadline { smallest = r }
                if smallest == i { break }
                heap.swapAt(i, smallest)
                i = smallest
            }
        }
        return first
    }

    /// Milliseconds an `epoll_wait`/`poll` may sleep before the next deadline (rounded up;
    /// -1 when there is none), capped by `cap` when it is not -1.
    public func waitMilliseconds(now: UInt64, cap: Int32 = -1) -> Int32 {
        guard let next = nextDeadline else { return cap }
        let ms = next <= now ? 0 : Int32(clamping: (next - now + 999_999) / 1_000_000)
        return cap < 0 ? ms : min(ms, cap)
    }
}
