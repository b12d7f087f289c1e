import Synchronization

/// A file descriptor and the duty to close it, as Rust's `OwnedFd` (mio keeps its selector's
/// epoll descriptor as one): never copied, only moved, and closed exactly once — when its owner
/// lets go of it, or earlier by ``close(_:)`` (a loop's own close, counted in its block).
/// `raw` lends the number to a system call; ``release()`` hands it to an owner that closes it
/// in its own way (a connection table, the lingering closer).
@frozen
public struct OwnedDescriptor: ~Copyable, Sendable {
    public let raw: Int32

    /// Takes ownership of `raw`, which nothing else may close.
    @inlinable public init(adopting raw: Int32) { self.raw = raw }

    /// Closes it now, counted in `sys`'s block.
    @inlinable
    public consuming func close(_ sys: SystemCalls) {
        sys.close(raw)
        discard self
    }

    /// Gives the number up without closing it: the caller owns it now.
    @inlinable
    public consuming func release() -> Int32 {
        let raw = raw
        discard self
        return raw
    }

    deinit { SystemCalls.Uncounted.close(raw) }
}

/// Descriptors made together and handed out one by one (a listener per loop thread): each is
/// taken once, as an ``OwnedDescriptor``, by the thread that serves it; any not taken (a loop
/// that never started) is closed when the set is released. No descriptor is closed by hand on
/// an error path.
public final class DescriptorHandoff: Sendable {
    private let slots: Mutex<[Int32?]>
    public let count: Int

    /// Takes ownership of `descriptors`.
    public init(adopting descriptors: [Int32]) {
        slots = Mutex(descriptors.map { $0 })
        count = descriptors.count
    }

    /// The `index`th descriptor, now the caller's; nil if it was taken already.
    public func take(_ index: Int) -> OwnedDescriptor? {
        guard let raw = slots.withLock({ slots -> Int32? in
            defer { slots[index] = nil }
            return slots[index]
        }) else { return nil }
        return OwnedDescriptor(adopting: raw)
    }

    /// The `index`th descriptor's number while it is still here (nil once taken), lent.
    public func peek(_ index: Int) -> Int32? { slots.withLock { $0[index] } }

    deinit {
        for case let raw? in slots.withLock({ $0 }) { SystemCalls.Uncounted.close(raw) }
    }
}
