/// A slab of per-connection records for an event loop: contiguous unsafe storage (no class per
/// connection, no reference counting on the hot path), slots reused through a free list, and a
/// generation per slot so an event or completion for a connection that has since closed (and
/// whose slot was reused) is recognised as stale.
///
/// Owned by one loop thread; not thread-safe. The sole owner of its storage: not copyable;
/// `deinit` drops every live record (closing nothing: a loop closes its sockets first) and
/// frees the storage.
///
/// Unsafe invariant: ``slots`` and any pointer into it are valid only until the next
/// ``insert(_:)``, which may move the storage. A loop takes a record's pointer after the
/// insert that could move it and never holds one across an accept.
public struct ConnectionTable<Record: ~Copyable>: ~Copyable {
    public private(set) var slots: UnsafeMutablePointer<Record>
    private var generations: UnsafeMutablePointer<UInt32>
    private var nextFree: UnsafeMutablePointer<Int32>
    public private(set) var capacity: Int
    private var freeHead: Int32 = -1
    private var used = 0
    /// Slots in use now.
    public private(set) var count = 0

    public init(initialCapacity: Int = 64) {
        capacity = max(initialCapacity, 1)
        slots = .allocate(capacity: capacity)
        generations = .allocate(capacity: capacity)
        generations.initialize(repeating: 0, count: capacity)
        nextFree = .allocate(capacity: capacity)
    }

    deinit {
        for index in 0..<used where generations[index] & 1 == 1 {
            (slots + index).deinitialize(count: 1)
        }
        slots.deallocate()
        generations.deallocate()
        nextFree.deallocate()
    }

    /// Stores `record` and returns its slot index. Grows (doubling) when full.
    public mutating func insert(_ record: consuming Record) -> Int {
        let index: Int
        if freeHead >= 0 {
            index = Int(freeHead)
            freeHead = nextFree[index]
        } else {
            if used == capacity { grow() }
            index = used
            used += 1
        }
        (slots + index).initialize(to: record)
        generations[index] &+= 1
        count += 1
        return index
    }

    /// Removes the record at `index`; its generation moves on so stale references are detected.
    @discardableResult
    public mutating func remove(_ index: Int) -> Record {
        let record = (slots + index).move()
        generations[index] &+= 1
        nextFree[index] = freeHead
        freeHead = Int32(index)
        count -= 1
        return record
    }

    @inline(__always)
    public func generation(_ index: Int) -> UInt32 { generations[index] }

    /// Whether `index` holds a live record of the given generation. Generations are odd while
    /// a slot is live and even while it is free.
    @inline(__always)
    public func isLive(_ index: Int, generation: UInt32) -> Bool {
        index < used && generations[index] == generation && generation & 1 == 1
    }

    /// Indices of every live record (for shutdown).
    public func liveIndices() -> [Int] {
        (0..<used).filter { generations[$0] & 1 == 1 }
    }

    private mutating func grow() {
        let newCapacity = capacity * 2
        let newSlots = UnsafeMutablePointer<Record>.allocate(capacity: newCapacity)
        newSlots.moveInitialize(from: slots, count: used)
        slots.deallocate()
        slots = newSlots
        let newGenerations = UnsafeMutablePointer<UInt32>.allocate(capacity: newCapacity)
        newGenerations.moveInitialize(from: generations, count: capacity)
        (newGenerations + capacity).initialize(repeating: 0, count: newCapacity - capacity)
        generations.deallocate()
        generations = newGenerations
        let newNext = UnsafeMutablePointer<Int32>.allocate(capacity: newCapacity)
        newNext.moveInitialize(from: nextFree, count: used)
        nextFree.deallocate()
        nextFree = newNext
        capacity = newCapacity
    }
}
