import Synchronization

/// The `--max-connections` bound, shared by a server's loops or threads. Touched once per
/// accept and once per close, never per message.
public final class ConnectionLimit: Sendable {
    private let open = Atomic<Int>(0)
    public let maximum: Int

    public init(maximum: Int) { self.maximum = maximum }

    /// Takes a place for a new connection; false when the server is full.
    public func acquire() -> Bool {
        let now = open.wrappingAdd(1, ordering: .relaxed).newValue
        if now > maximum {
            open.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    public func release() { open.wrappingSubtract(1, ordering: .relaxed) }
}
