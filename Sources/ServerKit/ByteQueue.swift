/// A connection's outbound bytes: one contiguous block, allocated only when there is something
/// to keep, with a committed prefix (ready to write) and an uncommitted tail (a response still
/// being assembled). The sole owner of its memory: not copyable, freed in `deinit`.
///
/// Unsafe invariant, the reason for ``pinForWrite()``: a completion-based backend hands the
/// committed bytes' address to the kernel and may not see the write finish until later, while
/// the session keeps appending. While pinned, the block being written is never moved or freed:
/// growing allocates a new block and keeps the pinned one in `retired` until the write that
/// pinned it is reported through ``consume(_:)``. Only one write per connection is in flight.
///
/// Sendable: it is the sole owner of its memory and cannot be copied, so whichever thread holds
/// it is the only one that can touch the bytes (a topic's lock fills it for a session).
public struct ByteQueue: ~Copyable, @unchecked Sendable {
    @usableFromInline var storage: UnsafeMutableRawPointer?
    @usableFromInline var capacity = 0
    @usableFromInline var head = 0
    @usableFromInline var committedEnd = 0
    @usableFromInline var tail = 0
    /// A block the kernel may still be reading (see the type's invariant).
    @usableFromInline var retired: UnsafeMutableRawPointer?
    @usableFromInline var pinned = false

    /// A drained block at most this big is kept for the next message (no allocation per
    /// message); a bigger one is freed, so an idle connection holds at most this much.
    public static let keptCapacity = 4096

    public init() {}

    deinit {
        storage?.deallocate()
        retired?.deallocate()
    }

    /// Bytes ready to write.
    @inlinable public var committedCount: Int { committedEnd - head }
    /// All bytes held, the uncommitted tail included.
    @inlinable public var count: Int { tail - head }
    @inlinable public var isEmpty: Bool { tail == head }

    /// The committed bytes; valid until the next mutation. Use ``pinForWrite()`` when the
    /// address outlives the call.
    @inlinable public var committed: UnsafeRawBufferPointer {
        guard let storage else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: storage + head, count: committedEnd - head)
    }

    /// The committed bytes, pinned until ``consume(_:)`` reports how many were written.
    @inlinable public mutating func pinForWrite() -> UnsafeRawBufferPointer {
        pinned = true
        return committed
    }

    /// Appends bytes to the uncommitted tail.
    @inlinable public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        let at = reserve(bytes.count)
        at.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        tail += bytes.count
    }

    /// Room for `count` more bytes at the tail; returns where they go (write them, then add
    /// `count` to the tail with ``extend(by:)``).
    @inlinable public mutating func reserve(_ count: Int) -> UnsafeMutableRawPointer {
        if let storage, tail + count <= capacity { return storage + tail }
        return makeRoom(count)
    }

    /// Counts `count` bytes just written at ``reserve(_:)``'s address as held.
    @inlinable public mutating func extend(by count: Int) { tail += count }

    /// Where the uncommitted tail begins (valid until the next mutation).
    @inlinable public var uncommittedStart: UnsafeMutableRawPointer { storage! + committedEnd }

    /// Everything appended so far may be written.
    @inlinable public mutating func commit() { committedEnd = tail }

    /// Drops the uncommitted tail (a response that will never be completed).
    public mutating func dropUncommitted() { tail = committedEnd }

    /// `count` committed bytes were written: forget them, release a pin and any block retired
    /// under it.
    @inlinable public mutating func consume(_ count: Int) {
        precondition(count >= 0 && count <= committedEnd - head, "consumed \(count) of \(committedEnd - head) committed bytes")
        head += count
        pinned = false
        if let old = retired {
            old.deallocate()
            retired = nil
        }
        if head == tail {
            head = 0; committedEnd = 0; tail = 0
            if capacity > Self.keptCapacity { release() }
        }
    }

    /// Frees the block (the queue must not be pinned).
    public mutating func release() {
        precondition(!pinned, "a pinned queue cannot be released")
        storage?.deallocate()
        storage = nil
        capacity = 0
        head = 0; committedEnd = 0; tail = 0
    }

    @usableFromInline
    mutating func makeRoom(_ count: Int) -> UnsafeMutableRawPointer {
        let held = tail - head
        if let storage, !pinned, held + count <= capacity {
            // Slide the held bytes to the front: nothing is reading them now.
            if held > 0 { storage.copyMemory(from: storage + head, byteCount: held) }
            committedEnd -= head; tail -= head; head = 0
            return storage + tail
        }
        var newCapacity = max(256, capacity)
        while newCapacity < held + count { newCapacity *= 2 }
        let grown = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        if let storage {
            if held > 0 { grown.copyMemory(from: storage + head, byteCount: held) }
            if pinned && retired == nil {
                retired = storage  // the kernel may be reading it: freed at the next consume
            } else {
                storage.deallocate()
            }
        }
        storage = grown
        capacity = newCapacity
        committedEnd -= head; tail -= head; head = 0
        return grown + tail
    }
}
