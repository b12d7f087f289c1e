import CSystemShims
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What a non-blocking read or write did.
public enum IOResult: Equatable, Sendable {
    /// This many bytes moved; for a read, 0 means the peer closed its side.
    case bytes(Int)
    /// The call would block (`EAGAIN`): wait for readiness.
    case wouldBlock
}

/// The syscall seam. Every libc call of the servers goes through here: `EINTR` is retried in
/// one place, `EAGAIN` becomes a value (``IOResult/wouldBlock`` or `nil`), every other failure
/// is a ``SystemError`` naming the call, and each call is counted by kind in the calling
/// thread's own ``ThreadCounters`` block (plain stores, no shared atomic).
///
/// A value of this type belongs to one thread; it holds a raw pointer so the hot path does no
/// reference counting.
public struct SystemCalls {
    @usableFromInline let block: UnsafeMutablePointer<UInt64>

    public init(counters: ThreadCounters) { block = counters.block }

    @inlinable @inline(__always)
    public func count(_ kind: SyscallKind, _ amount: UInt64 = 1) {
        iobench_counter_add(block + kind.rawValue, amount)
    }

    @inlinable @inline(__always)
    public func count(_ event: EventCounter, _ amount: UInt64 = 1) {
        iobench_counter_add(block + SyscallKind.other.rawValue + 1 + event.rawValue, amount)
    }

    /// The error a failed call throws. `EBADF` and `EFAULT` mean a bug in iobench (a descriptor
    /// used after close, a bad pointer): the process stops there, in release builds too, as
    /// SwiftNIO's syscall wrappers do, rather than serve on with corrupted state.
    @usableFromInline
    static func failure(_ call: String, _ error: Errno) -> SystemError {
        precondition(!error.indicatesBug, "\(call): \(error) is a bug in iobench")
        return SystemError(call, error)
    }

    /// Runs `body` until it stops failing with `EINTR`. Returns nil for `EAGAIN`.
    @inline(__always)
    func retrying(_ kind: SyscallKind, _ call: StaticString, _ body: () -> Int) throws(SystemError) -> Int? {
        while true {
            count(kind)
            let result = body()
            if result >= 0 { return result }
            let error = Errno.current
            if error == .interrupted { continue }
            if error == .wouldBlock { return nil }
            throw Self.failure("\(call)", error)
        }
    }

    public func recv(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count length: Int) throws(SystemError) -> IOResult {
        guard let n = try retrying(.recv, "recv", { Glibc.recv(fd, buffer, length, 0) }) else { return .wouldBlock }
        return .bytes(n)
    }

    public func send(_ fd: Int32, from buffer: UnsafeRawPointer, count length: Int) throws(SystemError) -> IOResult {
        guard let n = try retrying(.send, "send", { Glibc.send(fd, buffer, length, Int32(MSG_NOSIGNAL)) }) else {
            return .wouldBlock
        }
        return .bytes(n)
    }

    /// Reads and throws away up to `count` bytes of a TCP socket's input without copying them
    /// (`MSG_TRUNC`) and without waiting; `.bytes(0)` when the peer has closed its side.
    public func discardInput(_ fd: Int32, upTo count: Int) throws(SystemError) -> IOResult {
        let flags = Int32(MSG_DONTWAIT) | Int32(MSG_TRUNC)
        guard let n = try retrying(.recv, "recv", { Glibc.recv(fd, nil, count, flags) }) else { return .wouldBlock }
        return .bytes(n)
    }

    /// Accepts one connection; nil when none is waiting. The new socket is close-on-exec and,
    /// with `nonBlocking`, non-blocking.
    public func accept(_ fd: Int32, nonBlocking: Bool) throws(SystemError) -> Int32? {
        var flags = Int32(SOCK_CLOEXEC.rawValue)
        if nonBlocking { flags |= Int32(SOCK_NONBLOCK.rawValue) }
        guard let client = try retrying(.accept, "accept", { Int(iobench_accept4(fd, nil, nil, flags)) }) else {
            return nil
        }
        return Int32(client)
    }

    /// Closes a descriptor. `EINTR` on close is not retried: Linux has already released it.
    public func close(_ fd: Int32) {
        count(.close)
        _ = Glibc.close(fd)
    }

    public func shutdown(_ fd: Int32, _ how: Int32) {
        count(.shutdown)
        _ = Glibc.shutdown(fd, how)
    }

    public func epollCreate() throws(SystemError) -> Int32 {
        count(.other)
        let fd = epoll_create1(Int32(EPOLL_CLOEXEC))
        if fd < 0 { throw SystemError("epoll_create1", .current) }
        return fd
    }

    public func epollCtl(_ epfd: Int32, _ op: Int32, _ fd: Int32, events: UInt32, data: UInt64) throws(SystemError) {
        var event = epoll_event()
        event.events = events
        event.data.u64 = data
        _ = try retrying(.epollCtl, "epoll_ctl", { Int(epoll_ctl(epfd, op, fd, &event)) })
    }

    /// Waits for events; returns how many were stored (0 on timeout or `EINTR`).
    public func epollWait(_ epfd: Int32, _ events: UnsafeMutablePointer<epoll_event>, capacity: Int32, timeoutMilliseconds: Int32) throws(SystemError) -> Int {
        count(.epollWait)
        let n = epoll_wait(epfd, events, capacity, timeoutMilliseconds)
        if n >= 0 { return Int(n) }
        let error = Errno.current
        if error == .interrupted { return 0 }
        throw Self.failure("epoll_wait", error)
    }

    /// Waits for events with a nanosecond timeout (nil: wait indefinitely); 0 on timeout or `EINTR`.
    public func epollWait(_ epfd: Int32, _ events: UnsafeMutablePointer<epoll_event>, capacity: Int32, timeoutNanoseconds: UInt64?) throws(SystemError) -> Int {
        count(.epollWait)
        let n: Int32
        if let timeoutNanoseconds {
            var ts = timespec(tv_sec: Int(timeoutNanoseconds / 1_000_000_000), tv_nsec: Int(timeoutNanoseconds % 1_000_000_000))
            n = epoll_pwait2(epfd, events, capacity, &ts, nil)
        } else {
            n = epoll_pwait2(epfd, events, capacity, nil, nil)
        }
        if n >= 0 { return Int(n) }
        let error = Errno.current
        if error == .interrupted { return 0 }
        throw Self.failure("epoll_pwait2", error)
    }

    /// Waits with ppoll(2) until one of `count` descriptors is ready or `timeoutMilliseconds`
    /// pass (-1: no limit); returns how many have events (0 on timeout or `EINTR`).
    public func ppoll(_ fds: UnsafeMutablePointer<pollfd>, count descriptors: Int, timeoutMilliseconds: Int32) throws(SystemError) -> Int {
        count(.poll)
        let n = iobench_ppoll(fds, nfds_t(descriptors), timeoutMilliseconds)
        if n >= 0 { return Int(n) }
        let error = Errno.current
        if error == .interrupted { return 0 }
        throw Self.failure("ppoll", error)
    }

    /// Performs a ``CostInjection``: every 16th call a loop of `loopIterations` iterations
    /// (ticked inline, so its cost per message is the loop's and a few instructions, not a
    /// call), and on every call the extra system calls, busy wait and allocations (out of line).
    @inline(__always)
    public func inject(_ cost: CostInjection) {
        if cost.loopIterations > 0 {
            let ticks = block + SyscallKind.allCases.count + EventCounter.injectionTicks.rawValue
            ticks.pointee &+= 1
            if ticks.pointee & 15 == 0 { injectLoop(cost.loopIterations) }
        }
        if cost.everyChunk { injectEveryChunk(cost) }
    }

    @inline(never)
    func injectLoop(_ iterations: Int) {
        // A data-dependent chain the optimiser cannot fold, kept alive by the sink.
        var value = UInt64(truncatingIfNeeded: iterations)
        for i in 0..<iterations { value = value &* 6_364_136_223_846_793_005 &+ UInt64(truncatingIfNeeded: i) }
        injectionSink.store(value, ordering: .relaxed)
    }

    @inline(never)
    func injectEveryChunk(_ cost: CostInjection) {
        for _ in 0..<cost.syscalls {
            count(.other)
            _ = getppid()
        }
        if cost.delayNanoseconds > 0 {
            let until = ProcessResources.monotonicNanoseconds() + cost.delayNanoseconds
            while ProcessResources.monotonicNanoseconds() < until {}
        }
        for _ in 0..<cost.allocations {
            let block = malloc(64)
            injectionSink.store(UInt64(UInt(bitPattern: block)), ordering: .relaxed)
            free(block)
        }
    }

    /// A non-blocking, close-on-exec eventfd used to wake a loop.
    public func makeEventFD() throws(SystemError) -> Int32 {
        count(.eventfd)
        let fd = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        if fd < 0 { throw SystemError("eventfd", .current) }
        return fd
    }

    /// Adds one to an eventfd, waking whoever polls it.
    public func signal(eventFD fd: Int32) {
        count(.eventfd)
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { Glibc.write(fd, $0.baseAddress, 8) }
    }

    /// Resets an eventfd after it fired.
    public func drain(eventFD fd: Int32) {
        count(.eventfd)
        var value: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &value) { Glibc.read(fd, $0.baseAddress, 8) }
    }
}

extension SystemCalls {
    /// The control plane's calls: starting and stopping a server, one thread waking another's
    /// loop. They go through the seam like every other call, but are not counted: no counters
    /// block belongs to the thread that makes them (a loop's block is written by its own thread
    /// alone), and they are not per-message work.
    public enum Uncounted {
        /// Closes a descriptor (`EINTR` is not retried: Linux has already released it).
        public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

        /// Shuts a socket down, waking a thread blocked in accept, recv or send on it.
        public static func shutdown(_ fd: Int32, _ how: Int32 = Int32(SHUT_RDWR)) { _ = Glibc.shutdown(fd, how) }

        /// Adds one to an eventfd, waking whoever polls it.
        public static func signal(eventFD fd: Int32) {
            var one: UInt64 = 1
            _ = withUnsafeBytes(of: &one) { Glibc.write(fd, $0.baseAddress, 8) }
        }
    }
}

/// Where an injected loop leaves its result, so the loop is not optimised away.
let injectionSink = Atomic<UInt64>(0)

/// The epoll types and constants, re-exported from the shim so that only this seam imports it.
public typealias EpollEvent = epoll_event

extension EpollEvent {
    /// The token registered with the descriptor (`data.u64`).
    @inlinable public var token: UInt64 { data.u64 }
}

public enum Epoll {
    public static let input = EPOLLIN.rawValue
    public static let output = EPOLLOUT.rawValue
    public static let error = EPOLLERR.rawValue
    public static let hangUp = EPOLLHUP.rawValue
    /// The peer shut down its sending side.
    public static let peerClosed = EPOLLRDHUP.rawValue
    public static let add = EPOLL_CTL_ADD
    public static let modify = EPOLL_CTL_MOD
    public static let delete = EPOLL_CTL_DEL
}
