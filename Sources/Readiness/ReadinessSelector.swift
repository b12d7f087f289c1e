import ServerKit
import Protocols
import BackendKit
import Synchronization

/// The readiness bits a selector reports and is asked for: the values of both `EPOLLIN`… and
/// `POLLIN`… (Linux gives the two interfaces the same bits; a test holds them equal).
public enum Readiness {
    @inlinable public static var input: UInt32 { 0x001 }
    @inlinable public static var output: UInt32 { 0x004 }
    @inlinable public static var error: UInt32 { 0x008 }
    @inlinable public static var hangUp: UInt32 { 0x010 }
}

/// A readiness mechanism and nothing else, as mio's `Selector`: what a readiness backend
/// implements for ``ReadinessEventLoop``, which does the rest. The contract the loop relies on:
///
/// - **Level-triggered.** A descriptor that is still readable or writable is reported again by
///   the next wait; the loop makes one `recv` per readiness and relies on that.
/// - **Tokens.** Each registered descriptor carries a 64-bit token, reported with its events;
///   the loop tags connection tokens with their slot's generation, so an event for a closed
///   connection is dropped even if the descriptor number was reused.
/// - **Events** are ``Readiness`` bits; error and hang-up are reported even when not asked for.
/// - **Calls** go through the ``SystemCalls`` the selector was made with, so they are counted.
/// - **Closing.** The loop calls ``closing(_:)`` before it closes a registered descriptor (an
///   epoll set forgets a closed descriptor by itself; a poll set must drop it).
/// - The selector owns its own descriptors and memory and releases them in `deinit`.
public protocol ReadinessSelector: ~Copyable {
    /// Its name in messages (`epoll`, `ppoll`).
    static var name: String { get }
    init(sys: SystemCalls) throws(SystemError)
    mutating func register(_ fd: Int32, interest: UInt32, token: UInt64) throws(SystemError)
    mutating func reregister(_ fd: Int32, interest: UInt32, token: UInt64) throws(SystemError)
    mutating func deregister(_ fd: Int32) throws(SystemError)
    /// `fd`, registered, is about to be closed.
    mutating func closing(_ fd: Int32)
    /// Waits until something is ready or `timeoutMilliseconds` pass (-1: no limit); returns how
    /// many events ``event(_:)`` can read (0 on a timeout or a signal).
    mutating func wait(timeoutMilliseconds: Int32) throws(SystemError) -> Int
    /// The `index`th event of the last wait.
    func event(_ index: Int) -> (token: UInt64, events: UInt32)
}

/// What a readiness backend's `runLoop` is: the shared ``ReadinessEventLoop`` on its selector
/// (inlinable, so the backend's module specialises it for the selector and each session type).
@inlinable
public func runReadinessLoop<Selector: ReadinessSelector & ~Copyable, Session: ConnectionSession & ~Copyable>(
    _: Selector.Type, _: Session.Type, listener: consuming OwnedDescriptor, resources: LoopResources, services: LoopServices,
    ready: (String?) -> Void, stopping: borrowing Atomic<Bool>) throws {
    var loop = try ReadinessEventLoop<Selector, Session>(listener: listener, resources: resources, services: services)
    ready(loop.setupDescription)
    loop.run(until: stopping)
}
