/// What a completion is for, packed into the 64-bit user data of its submission:
/// operation (8 bits) | connection generation (24 bits) | connection slot (32 bits).
struct UserData: Equatable {
    enum Operation: UInt8 {
        case accept = 1, recv, send, cancel, wake, acceptBackoff
    }

    let rawValue: UInt64

    @inline(__always)
    init(rawValue: UInt64) { self.rawValue = rawValue }

    @inline(__always)
    init(_ operation: Operation, slot: Int = 0, generation: UInt32 = 0) {
        rawValue = UInt64(operation.rawValue) << 56 | UInt64(generation & 0xFF_FFFF) << 32 | UInt64(UInt32(slot))
    }

    @inline(__always)
    var operation: Operation? { Operation(rawValue: UInt8(truncatingIfNeeded: rawValue >> 56)) }
    @inline(__always)
    var slot: Int { Int(rawValue & 0xFFFF_FFFF) }
    @inline(__always)
    var generation: UInt32 { UInt32(truncatingIfNeeded: rawValue >> 32) & 0xFF_FFFF }
}
