import ServerKit
import Protocols
import BackendKit
import Readiness
#if canImport(Glibc)
import Glibc
#endif

/// ppoll(2) as a ``ReadinessSelector``: the interface epoll replaced. The set lives here, in a
/// dense `pollfd` array handed whole to the kernel on every wait, which scans every entry (and
/// so does this selector, to find the ready ones): a wait costs O(registered descriptors), not
/// O(ready ones). That cost is what this backend is here to show.
///
/// Memory per registered descriptor: a `pollfd` (8 B), its token (8 B) and its position,
/// indexed by descriptor number (4 B). Removal swaps the last entry into the hole.
public struct PollSelector: ReadinessSelector, ~Copyable {
    @inlinable public static var name: String { "ppoll" }

    @usableFromInline let sys: SystemCalls
    /// The set: `count` entries of `fds` and, beside them, `tokens`.
    @usableFromInline var fds: UnsafeMutablePointer<pollfd>
    @usableFromInline var tokens: UnsafeMutablePointer<UInt64>
    @usableFromInline var count = 0
    @usableFromInline var capacity: Int
    /// Where each descriptor's entry is (-1: not registered), indexed by descriptor number.
    @usableFromInline var positions: UnsafeMutablePointer<Int32>
    @usableFromInline var positionCapacity: Int
    /// The last wait's ready entries (copied out, so the loop may change the set while it
    /// handles them).
    @usableFromInline var readyTokens: UnsafeMutablePointer<UInt64>
    @usableFromInline var readyEvents: UnsafeMutablePointer<UInt32>
    @usableFromInline var readyCapacity: Int

    @inlinable
    public init(sys: SystemCalls) throws(SystemError) {
        self.sys = sys
        capacity = 64
        fds = .allocate(capacity: capacity)
        tokens = .allocate(capacity: capacity)
        positionCapacity = 1024
        positions = .allocate(capacity: positionCapacity)
        positions.initialize(repeating: -1, count: positionCapacity)
        readyCapacity = 64
        readyTokens = .allocate(capacity: readyCapacity)
        readyEvents = .allocate(capacity: readyCapacity)
    }

    @inlinable
    public mutating func register(_ fd: Int32, interest: UInt32, token: UInt64) throws(SystemError) {
        guard fd >= 0 else { throw SystemError("ppoll register", .badFileDescriptor) }
        if Int(fd) >= positionCapacity { growPositions(to: Int(fd) + 1) }
        guard positions[Int(fd)] < 0 else { throw SystemError("ppoll register", Errno(rawValue: EEXIST)) }
        if count == capacity { growSet() }
        fds[count] = pollfd(fd: fd, events: Int16(truncatingIfNeeded: interest), revents: 0)
        tokens[count] = token
        positions[Int(fd)] = Int32(count)
        count += 1
    }

    @inlinable
    public mutating func reregister(_ fd: Int32, interest: UInt32, token: UInt64) throws(SystemError) {
        guard fd >= 0, Int(fd) < positionCapacity, positions[Int(fd)] >= 0 else { throw SystemError("ppoll reregister", .notFound) }
        let at = Int(positions[Int(fd)])
        fds[at].events = Int16(truncatingIfNeeded: interest)
        tokens[at] = token
    }

    @inlinable
    public mutating func deregister(_ fd: Int32) throws(SystemError) {
        guard fd >= 0, Int(fd) < positionCapacity, positions[Int(fd)] >= 0 else { throw SystemError("ppoll deregister", .notFound) }
        remove(fd)
    }

    @inlinable
    public mutating func closing(_ fd: Int32) {
        if fd >= 0, Int(fd) < positionCapacity, positions[Int(fd)] >= 0 { remove(fd) }
    }

    @inlinable
    mutating func remove(_ fd: Int32) {
        let at = Int(positions[Int(fd)])
        let last = count - 1
        if at != last {
            fds[at] = fds[last]
            tokens[at] = tokens[last]
            positions[Int(fds[at].fd)] = Int32(at)
        }
        positions[Int(fd)] = -1
        count = last
    }

    @inlinable
    public mutating func wait(timeoutMilliseconds: Int32) throws(SystemError) -> Int {
        let ready = try sys.ppoll(fds, count: count, timeoutMilliseconds: timeoutMilliseconds)
        guard ready > 0 else { return 0 }
        if ready > readyCapacity { growReady(to: ready) }
        // The kernel marked `ready` entries somewhere in the set: find them.
        var found = 0
        var i = 0
        while found < ready && i < count {
            let revents = fds[i].revents
            if revents != 0 {
                readyTokens[found] = tokens[i]
                // POLLNVAL (a descriptor that is not open) cannot happen unless the loop has a
                // bug; report it as an error so the connection is closed.
                readyEvents[found] = UInt32(UInt16(bitPattern: revents)) & 0x1F | (revents & Int16(POLLNVAL) != 0 ? Readiness.error : 0)
                found += 1
            }
            i += 1
        }
        return found
    }

    @inlinable @inline(__always)
    public func event(_ index: Int) -> (token: UInt64, events: UInt32) {
        (readyTokens[index], readyEvents[index])
    }

    /// `pointer`'s first `count` elements moved to a new allocation of `capacity`.
    @usableFromInline
    static func moved<T>(_ pointer: UnsafeMutablePointer<T>, count: Int, to capacity: Int) -> UnsafeMutablePointer<T> {
        let grown = UnsafeMutablePointer<T>.allocate(capacity: capacity)
        grown.moveInitialize(from: pointer, count: count)
        pointer.deallocate()
        return grown
    }

    @usableFromInline
    mutating func growSet() {
        capacity *= 2
        fds = Self.moved(fds, count: count, to: capacity)
        tokens = Self.moved(tokens, count: count, to: capacity)
    }

    @usableFromInline
    mutating func growPositions(to needed: Int) {
        var grown = positionCapacity
        while grown < needed { grown *= 2 }
        positions = Self.moved(positions, count: positionCapacity, to: grown)
        (positions + positionCapacity).initialize(repeating: -1, count: grown - positionCapacity)
        positionCapacity = grown
    }

    @usableFromInline
    mutating func growReady(to needed: Int) {
        while readyCapacity < needed { readyCapacity *= 2 }
        // Nothing to keep: the next wait fills them.
        readyTokens.deallocate()
        readyEvents.deallocate()
        readyTokens = .allocate(capacity: readyCapacity)
        readyEvents = .allocate(capacity: readyCapacity)
    }

    deinit {
        fds.deallocate()
        tokens.deallocate()
        positions.deallocate()
        readyTokens.deallocate()
        readyEvents.deallocate()
    }
}
