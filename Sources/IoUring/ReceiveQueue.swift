/// The received buffers a connection holds for echo, oldest first: a FIFO linked through the
/// loop's per-buffer ``ReceiveQueue`` arrays, so the record stays small however much is queued.
struct HeldBuffers: Equatable {
    static let none = UInt16.max
    var head = HeldBuffers.none
    var tail = HeldBuffers.none
    var count: UInt16 = 0
    /// Bytes of the head buffer already written.
    var headOffset: UInt32 = 0

    var isEmpty: Bool { head == HeldBuffers.none }
}

/// Per provided buffer: the next buffer in its connection's queue and how many bytes it holds.
/// Owns the two arrays (freed in `deinit`); a buffer is in at most one connection's queue.
struct ReceiveQueue: ~Copyable {
    private let next: UnsafeMutablePointer<UInt16>
    private let length: UnsafeMutablePointer<UInt32>
    let capacity: Int

    init(buffers: Int) {
        precondition(buffers > 0 && buffers < Int(HeldBuffers.none), "buffer ids are 16-bit")
        capacity = buffers
        next = .allocate(capacity: buffers)
        length = .allocate(capacity: buffers)
    }

    deinit {
        next.deallocate()
        length.deallocate()
    }

    /// Appends buffer `id`, holding `bytes` bytes, to a connection's queue.
    @inline(__always)
    func append(_ id: UInt16, bytes: UInt32, to held: inout HeldBuffers) {
        length[Int(id)] = bytes
        next[Int(id)] = HeldBuffers.none
        if held.tail == HeldBuffers.none {
            held.head = id
        } else {
            next[Int(held.tail)] = id
        }
        held.tail = id
        held.count += 1
    }

    /// The unwritten part of the head buffer: its id, offset and length.
    @inline(__always)
    func unwritten(_ held: HeldBuffers) -> (id: UInt16, offset: Int, count: Int) {
        (held.head, Int(held.headOffset), Int(length[Int(held.head)] - held.headOffset))
    }

    /// `count` bytes of the head buffer were written; returns the buffer's id when it is now
    /// completely written and out of the queue (only then may it be reused).
    @inline(__always)
    func written(_ count: Int, from held: inout HeldBuffers) -> UInt16? {
        held.headOffset += UInt32(count)
        let head = held.head
        precondition(held.headOffset <= length[Int(head)], "wrote past the head buffer")
        guard held.headOffset == length[Int(head)] else { return nil }
        held.head = next[Int(head)]
        if held.head == HeldBuffers.none { held.tail = HeldBuffers.none }
        held.count -= 1
        held.headOffset = 0
        return head
    }

    /// The buffer after `id` in its connection's queue (``HeldBuffers/none`` at the end).
    @inline(__always)
    func following(_ id: UInt16) -> UInt16 { next[Int(id)] }
}
