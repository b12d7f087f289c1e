import ServerKit
import Protocols
import BackendKit
import Readiness
#if canImport(Glibc)
import Glibc
#endif

/// An epoll instance as a ``ReadinessSelector``: the set lives in the kernel, a wait returns
/// only the ready descriptors (O(ready), not O(registered)).
public struct EpollSelector: ReadinessSelector, ~Copyable {
    @inlinable public static var name: String { "epoll" }
    @inlinable static var eventCapacity: Int32 { 1024 }

    @usableFromInline let sys: SystemCalls
    /// Closed with the selector.
    @usableFromInline let epoll: OwnedDescriptor
    @usableFromInline let events: UnsafeMutablePointer<EpollEvent>

    @inlinable
    public init(sys: SystemCalls) throws(SystemError) {
        self.sys = sys
        epoll = OwnedDescriptor(adopting: try sys.epollCreate())
        events = .allocate(capacity: Int(Self.eventCapacity))
    }

    @inlinable
    public mutating func register(_ fd: Int32, interest: UInt32, token: UInt64) throws(SystemError) {
        try sys.epollCtl(epoll.raw, Epoll.add, fd, events: interest, data: token)
    }

    @inlinable
    public mutating func reregister(_ fd: Int32, interest: UInt32, token: UInt64) throws(SystemError) {
        try sys.epollCtl(epoll.raw, Epoll.modify, fd, events: interest, data: token)
    }

    @inlinable
    public mutating func deregister(_ fd: Int32) throws(SystemError) {
        try sys.epollCtl(epoll.raw, Epoll.delete, fd, events: 0, data: 0)
    }

    /// Closing a descriptor removes it from the epoll set.
    @inlinable public mutating func closing(_ fd: Int32) {}

    @inlinable
    public mutating func wait(timeoutMilliseconds: Int32) throws(SystemError) -> Int {
        try sys.epollWait(epoll.raw, events, capacity: Self.eventCapacity, timeoutMilliseconds: timeoutMilliseconds)
    }

    @inlinable @inline(__always)
    public func event(_ index: Int) -> (token: UInt64, events: UInt32) {
        let event = events[index]
        return (event.token, event.events)
    }

    deinit {
        events.deallocate()
    }
}
