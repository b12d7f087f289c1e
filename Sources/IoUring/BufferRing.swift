import CLibUring
import ServerKit
import Protocols
import BackendKit
#if canImport(Glibc)
import Glibc
#endif

/// A provided-buffer ring set up by hand: liburing 2.3 has no `io_uring_setup_buf_ring`, so the
/// ring memory is mmapped here, initialised and registered. The kernel picks a buffer for each
/// multishot recv completion; a buffer comes back to the ring only when its bytes have been
/// fully sent (the send reads straight from it), so until then it belongs to that connection.
struct BufferRing: ~Copyable {
    let groupID: UInt16
    let count: Int
    let bufferSize: Int
    private let ring: UnsafeMutablePointer<io_uring_buf_ring>
    private let ringBytes: Int
    private let memory: UnsafeMutableRawPointer
    private let mask: Int32
    /// Buffers added since the last ``publish()``.
    private var unpublished: Int32 = 0
    /// Buffers in the ring now (as far as this side knows), for deciding how many waiting
    /// connections to re-arm after `ENOBUFS`.
    private(set) var available: Int

    init(ring uring: UnsafeMutablePointer<io_uring>, groupID: UInt16, count: Int, bufferSize: Int) throws(SystemError) {
        precondition(count > 0 && count & (count - 1) == 0 && count <= 32768, "buffer count must be a power of two up to 32768")
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let ringBytes = (count * MemoryLayout<io_uring_buf>.stride + page - 1) / page * page
        let mapped = mmap(nil, ringBytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0)
        // MAP_FAILED does not import: it is (void *)-1.
        guard let mapped, mapped != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw SystemError("mmap", .current)
        }
        let ring = mapped.assumingMemoryBound(to: io_uring_buf_ring.self)
        io_uring_buf_ring_init(ring)
        var registration = io_uring_buf_reg()
        registration.ring_addr = UInt64(UInt(bitPattern: mapped))
        registration.ring_entries = UInt32(count)
        registration.bgid = groupID
        let rc = io_uring_register_buf_ring(uring, &registration, 0)
        if rc < 0 {
            munmap(mapped, ringBytes)
            throw SystemError("io_uring_register_buf_ring", Errno(negatedResult: rc))
        }
        self.groupID = groupID
        self.count = count
        self.bufferSize = bufferSize
        self.mask = io_uring_buf_ring_mask(UInt32(count))
        self.ringBytes = ringBytes
        self.ring = ring
        memory = .allocate(byteCount: count * bufferSize, alignment: 4096)
        available = 0
        for id in 0..<count { give(back: UInt16(id)) }
        publish()
    }

    @inline(__always)
    func address(of id: UInt16) -> UnsafeMutableRawPointer { memory + Int(id) * bufferSize }

    /// The kernel filled buffer `id`.
    @inline(__always)
    mutating func taken(_ id: UInt16) { available -= 1 }

    /// Queues buffer `id` to go back to the ring at the next ``publish()``.
    @inline(__always)
    mutating func give(back id: UInt16) {
        io_uring_buf_ring_add(ring, address(of: id), UInt32(bufferSize), id, mask, unpublished)
        unpublished += 1
        available += 1
    }

    /// Makes every buffer given back since the last call visible to the kernel (one store-release).
    @inline(__always)
    mutating func publish() {
        guard unpublished > 0 else { return }
        io_uring_buf_ring_advance(ring, unpublished)
        unpublished = 0
    }

    /// Frees the memory. The owning loop tears its ring down first, so nothing is in flight then.
    deinit {
        munmap(UnsafeMutableRawPointer(ring), ringBytes)
        memory.deallocate()
    }
}
