import ResultAnalysis
import ServerKit
import Protocols
import BackendKit
import Histogram
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Latencies in nanoseconds, 3 significant digits, up to a minute.
public typealias LatencyHistogram = Histogram<UInt64>

extension Histogram where Count == UInt64 {
    public static func latency() -> LatencyHistogram {
        LatencyHistogram(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    }
}

/// What to drive and how.
public struct LoadOptions: Sendable {
    public var target: SocketAddress
    public var connections = 16
    /// Bytes per message.
    public var messageSize = 64
    /// Measured seconds, after the warm-up.
    public var duration = 5.0
    public var warmup = 1.0
    /// Messages in flight per connection (closed loop). 1 is request/response.
    public var depth = 1
    /// Open loop: messages per second in total, on a fixed schedule. Nil: closed loop.
    public var rate: Double?
    /// Generator threads, each an event loop over its share of the connections.
    public var threads = 1
    /// Pin generator thread i to `cpus[i % count]`.
    public var cpus: [Int]?
    /// Closed loop only: open and close the window at quiet moments, with nothing in flight,
    /// so the server's work inside the window is exactly the window's messages (counted
    /// measurements: instructions, allocations, system calls). Timed runs keep the load running
    /// across the window's opening.
    public var quietEdges = false
    /// After the window, how long every connection may take to get back all it sent; a
    /// connection still owed bytes then is an error (bytes that never came back).
    public var drainTimeout = 3.0
    /// The protocol: echo, rpc requests with a `messageSize`-byte payload, or any workload's wire.
    public var workload = Workload.echo
    /// rpc: microseconds of server CPU work each request asks for (`work_us`).
    public var workMicroseconds: UInt32 = 0

    public init(target: SocketAddress) { self.target = target }

    /// What one message is on the wire, both ways.
    var wire: any MessageWire { workload.wire(messageSize, workMicroseconds) }

    public var isOpenLoop: Bool { rate != nil }
}

/// What one load run measured. Latencies are in nanoseconds.
public struct LoadResult: Sendable {
    public var options: LoadOptions
    /// Length of the measured window.
    public var seconds: Double
    /// Messages whose echo came back complete and verified within the window.
    public var messages: UInt64
    /// Open loop: messages due within the window whose echo had not come back when it closed.
    /// Each is in `latency` at (window end − scheduled time), so a stalled server cannot hide.
    public var incomplete: UInt64 = 0
    /// Verification failures and connections lost: any is a failed run.
    public var errors: UInt64
    /// The first few errors in words.
    public var errorDetails: [String]
    /// Closed loop: send to echo. Open loop: scheduled send to echo (coordinated omission corrected).
    public var latency: LatencyHistogram
    /// Open loop only: actual send to echo (what a naive generator would report).
    public var uncorrectedLatency: LatencyHistogram?
    /// Open loop only: how late each message left against its schedule.
    public var sendLag: LatencyHistogram?
    /// CPU time of the generator threads within the window.
    public var generatorCPUSeconds: Double

    public var messagesPerSecond: Double { seconds > 0 ? Double(messages) / seconds : 0 }
    /// Payload echoed per second, in MB (10^6 bytes), one direction.
    public var megabytesPerSecond: Double { messagesPerSecond * Double(options.messageSize) / 1e6 }
    /// Share of its CPUs the generator used (1.0 = every generator thread always busy).
    public var generatorUtilization: Double {
        seconds > 0 ? generatorCPUSeconds / (seconds * Double(options.threads)) : 0
    }
    public var generatorCPUMicrosecondsPerMessage: Double {
        messages > 0 ? generatorCPUSeconds * 1e6 / Double(messages) : 0
    }
    /// Open loop: true when the generator sent late enough (p99 lag over 10% of the p99 latency
    /// or over 1 ms) that the latencies partly measure the generator, not the server.
    public var sendLagDistortsLatency: Bool {
        guard let lag = sendLag, lag.totalCount > 0 else { return false }
        let p99Lag = lag.valueAtPercentile(99)
        return p99Lag > 1_000_000 || Double(p99Lag) > 0.1 * Double(latency.valueAtPercentile(99))
    }
}

/// Where the generator stands, readable from the controlling thread at any time.
public struct LoadProgress: Sendable {
    let registry: CounterRegistry
    let messageSize: UInt64

    /// Messages echoed back so far, warm-up included (a fraction while one is half received).
    public func messagesReceived() -> Double {
        Double(registry.totals()[.bytesIn]) / Double(messageSize)
    }
}

/// Called from the controlling thread around the measured window. The window's edges are
/// instants: `windowOpened` and `windowClosed` run right beside them and must be quick (read a
/// CPU clock). Slow probes (a server's stats over a pipe, a scan of its threads) belong in
/// `beforeWindow` and `afterWindow`, which run outside the window and are told how many
/// messages had come back, so a probe's own window can be matched with its messages.
public struct LoadHooks {
    public var beforeWindow: (LoadProgress) -> Void = { _ in }
    public var windowOpened: () -> Void = {}
    public var windowClosed: () -> Void = {}
    /// After the window, once every connection has drained (nothing in flight).
    public var afterWindow: (LoadProgress) -> Void = { _ in }
    /// Every half second of the window: seconds elapsed, messages so far.
    public var progress: (Double, UInt64) -> Void = { _, _ in }
    public init() {}
}

public enum LoadError: Error, CustomStringConvertible {
    case cannotConnect(SocketAddress, Errno, connected: Int)
    case badOptions(String)

    public var description: String {
        switch self {
        case .cannotConnect(let address, let errno, let connected):
            let hint = errno == .tooManyOpenFiles
                ? "raise the file descriptor limit (ulimit -n)"
                : "is an echo server listening there?"
            return "cannot connect to \(address) after \(connected) connections: \(errno); \(hint)"
        case .badOptions(let text):
            return text
        }
    }
}

/// The load generator: an epoll event loop per generator thread, non-blocking sockets, a
/// pseudo-random byte stream per connection verified on every echoed byte.
public enum LoadGenerator {
    static let receiveBuffer = 64 * 1024

    public static func run(_ options: LoadOptions, hooks: LoadHooks = LoadHooks()) throws -> LoadResult {
        guard options.connections >= 1 else { throw LoadError.badOptions("--connections must be at least 1") }
        guard options.messageSize >= 1 else { throw LoadError.badOptions("--size must be at least 1 byte") }
        guard options.workMicroseconds <= Frame.maxWorkMicroseconds else {
            throw LoadError.badOptions("--work \(options.workMicroseconds)us is more than a request may ask for (\(Frame.maxWorkMicroseconds)us)")
        }
        guard options.workload.takesWork || options.workMicroseconds == 0 else {
            throw LoadError.badOptions("--work applies to --pattern rpc only: \(options.workload) does no work")
        }
        guard options.depth >= 1 else { throw LoadError.badOptions("--depth must be at least 1") }
        guard options.threads >= 1 else { throw LoadError.badOptions("--threads must be at least 1") }
        if let rate = options.rate, !(rate > 0) { throw LoadError.badOptions("--rate must be a positive number of messages per second") }
        guard !(options.quietEdges && options.isOpenLoop) else { throw LoadError.badOptions("quiet window edges need a closed loop: an open loop's schedule cannot pause") }
        let threads = min(options.threads, options.connections)

        var fds: [Int32] = []
        for _ in 0..<options.connections {
            switch Result(catching: { () throws(SystemError) -> Int32 in try Socket.connect(to: options.target) }) {
            case .success(let fd): fds.append(fd)
            case .failure(let error):
                for fd in fds { close(fd) }
                throw LoadError.cannotConnect(options.target, error.errno, connected: fds.count)
            }
        }
        for fd in fds { Socket.setNonBlocking(fd) }

        let stream = StreamPattern(window: max(options.messageSize, receiveBuffer))
        defer { stream.deallocate() }
        let shared = SharedRun(connections: options.connections)
        let progress = LoadProgress(registry: shared.registry, messageSize: UInt64(options.wire.responseSize))
        let outcomes = Mutex<[WorkerOutcome]>([])
        var workers: [OSThread] = []
        for t in 0..<threads {
            let mine = stride(from: t, to: fds.count, by: threads).map { fds[$0] }
            let setup = GeneratorWorker.Setup(
                fds: mine, firstIndex: t, options: options, threadCount: threads,
                stream: stream, counters: shared.registry.makeCounters(), shared: shared)
            workers.append(try OSThread(name: "load-\(t)") {
                if let cpus = options.cpus, !cpus.isEmpty { try? ProcessResources.pin(to: [cpus[t % cpus.count]]) }
                var worker = GeneratorWorker(setup)
                let outcome = worker.run()
                outcomes.withLock { $0.append(outcome) }
            })
        }

        sleep(seconds: options.warmup)
        var drainFailed = false
        if options.quietEdges { drainFailed = !shared.drain(threads: threads, timeout: options.drainTimeout) }
        hooks.beforeWindow(progress)
        hooks.windowOpened()
        shared.phase.store(SharedRun.measuring, ordering: .sequentiallyConsistent)
        let start = ProcessResources.monotonicNanoseconds()
        let end = start + UInt64(options.duration * 1e9)
        var nextProgress = start + 500_000_000
        while !drainFailed {
            let now = ProcessResources.monotonicNanoseconds()
            if now >= end || shared.connectionsAlive.load(ordering: .relaxed) == 0 { break }
            if now >= nextProgress {
                hooks.progress(Double(now - start) / 1e9, UInt64(progress.messagesReceived()))
                nextProgress = now + 500_000_000
            }
            let wake = min(end, nextProgress)
            sleep(seconds: wake > now ? min(Double(wake - now) / 1e9, 0.1) : 0)
        }
        var stop: UInt64
        if options.quietEdges {
            // The window closes when the last message sent in it has come back.
            drainFailed = !shared.drain(threads: threads, timeout: options.drainTimeout) || drainFailed
            stop = ProcessResources.monotonicNanoseconds()
            hooks.windowClosed()
        } else {
            hooks.windowClosed()
            stop = ProcessResources.monotonicNanoseconds()
            shared.windowEnd.store(stop, ordering: .relaxed)
            drainFailed = !shared.drain(threads: threads, timeout: options.drainTimeout)
        }
        hooks.afterWindow(progress)
        shared.phase.store(SharedRun.stopping, ordering: .sequentiallyConsistent)
        for worker in workers { worker.join() }

        var result = LoadResult(
            options: options, seconds: Double(stop - start) / 1e9, messages: 0, errors: 0, errorDetails: [],
            latency: .latency(),
            uncorrectedLatency: options.isOpenLoop ? .latency() : nil,
            sendLag: options.isOpenLoop ? .latency() : nil,
            generatorCPUSeconds: 0)
        result.options.threads = threads
        for outcome in outcomes.withLock({ $0 }) {
            result.messages += outcome.messages
            result.incomplete += outcome.incomplete
            result.errors += outcome.errors
            result.errorDetails += outcome.errorDetails
            result.latency.add(outcome.latency)
            if let h = outcome.uncorrected { result.uncorrectedLatency?.add(h) }
            if let h = outcome.sendLag { result.sendLag?.add(h) }
            result.generatorCPUSeconds += Double(outcome.cpuNanoseconds) / 1e9
        }
        if drainFailed && result.errors == 0 {
            result.errors = 1
            result.errorDetails.append("the connections did not drain within \(options.drainTimeout) s")
        }
        result.errorDetails = Array(result.errorDetails.prefix(5))
        return result
    }

    static func sleep(seconds: Double) {
        guard seconds > 0 else { return }
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}

/// State the controller shares with the generator threads.
///
/// Phases: warm-up → measuring → draining → stopping. While draining, workers queue nothing
/// new and tell `quiet` once all their connections have got back every byte they sent. With
/// quiet edges the window also opens after a drain (draining → measuring refills every
/// connection) and closes at one, and messages completed while draining still count.
final class SharedRun: Sendable {
    static let warmingUp = 0, measuring = 1, draining = 2, stopping = 3
    let phase = Atomic<Int>(SharedRun.warmingUp)
    /// Workers with nothing in flight in the current drain.
    let quiet = Atomic<Int>(0)
    /// Bumped at each drain, so a worker knows a new one began.
    let drainGeneration = Atomic<Int>(0)
    /// Monotonic time the (timed) window closed: open-loop messages due by then and not back are incomplete.
    let windowEnd = Atomic<UInt64>(0)
    let connectionsAlive: Atomic<Int>
    let registry = CounterRegistry()

    init(connections: Int) { connectionsAlive = Atomic(connections) }

    /// Starts a drain and waits, bounded, until every worker is quiet; false on time-out.
    func drain(threads: Int, timeout: Double) -> Bool {
        quiet.store(0, ordering: .sequentiallyConsistent)
        drainGeneration.wrappingAdd(1, ordering: .sequentiallyConsistent)
        phase.store(SharedRun.draining, ordering: .sequentiallyConsistent)
        let deadline = ProcessResources.monotonicNanoseconds() + UInt64(timeout * 1e9)
        while quiet.load(ordering: .sequentiallyConsistent) < threads {
            if ProcessResources.monotonicNanoseconds() >= deadline { return false }
            LoadGenerator.sleep(seconds: 0.0002)
        }
        return true
    }
}

/// The bytes every connection sends: two random tables of coprime prime periods, XORed, read at
/// per-connection offsets. The stream repeats only after 65,537 × 65,539 bytes (more than
/// 2^32), so a lost or duplicated block of any size a run can have in flight is seen. Each
/// table is extended by `window` bytes so any window from any offset is contiguous.
struct StreamPattern: @unchecked Sendable {
    static let periods = (65_537, 65_539)
    let window: Int
    // Owned by the run that made it (deallocated after every worker has joined); read-only after init.
    let first: UnsafeMutablePointer<UInt8>
    let second: UnsafeMutablePointer<UInt8>

    init(window: Int) {
        self.window = window
        first = Self.table(period: Self.periods.0, window: window, seed: 0x2545_F491_4F6C_DD1D)
        second = Self.table(period: Self.periods.1, window: window, seed: 0x9E37_79B9_7F4A_7C15)
    }

    private static func table(period: Int, window: Int, seed: UInt64) -> UnsafeMutablePointer<UInt8> {
        let bytes = UnsafeMutablePointer<UInt8>.allocate(capacity: period + window)
        var state = seed
        for i in 0..<period {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            bytes[i] = UInt8(truncatingIfNeeded: state >> 32)
        }
        for i in 0..<window { bytes[period + i] = bytes[i % period] }
        return bytes
    }

    /// Where connection `index`'s stream starts in each table.
    static func starts(forConnection index: Int) -> (Int, Int) {
        ((index &* 7919 &+ 17) % periods.0, (index &* 104_729 &+ 31) % periods.1)
    }

    /// Writes `count` (at most `window`) bytes of the stream that starts at `starts`, from
    /// stream offset `offset`, into `destination`.
    @inline(__always)
    func fill(_ destination: UnsafeMutableRawPointer, count: Int, starts: (Int, Int), offset: UInt64) {
        let a = UnsafeRawPointer(first + (starts.0 + Int(offset % UInt64(Self.periods.0))) % Self.periods.0)
        let b = UnsafeRawPointer(second + (starts.1 + Int(offset % UInt64(Self.periods.1))) % Self.periods.1)
        var i = 0
        while i + 8 <= count {
            let word = a.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ b.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            destination.storeBytes(of: word, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        while i < count {
            destination.storeBytes(of: a.load(fromByteOffset: i, as: UInt8.self) ^ b.load(fromByteOffset: i, as: UInt8.self), toByteOffset: i, as: UInt8.self)
            i += 1
        }
    }

    /// Checks `count` (at most `window`) received bytes against the stream from `offset` in one
    /// pass, without building the expected bytes: the index of the first byte that differs, or nil.
    @inline(__always)
    func firstMismatch(_ received: UnsafeRawPointer, count: Int, starts: (Int, Int), offset: UInt64) -> Int? {
        let a = UnsafeRawPointer(first + (starts.0 + Int(offset % UInt64(Self.periods.0))) % Self.periods.0)
        let b = UnsafeRawPointer(second + (starts.1 + Int(offset % UInt64(Self.periods.1))) % Self.periods.1)
        var i = 0
        while i + 8 <= count {
            let difference = received.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                ^ a.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ b.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            // Little-endian: the lowest set byte is the first that differs.
            if difference != 0 { return i + difference.trailingZeroBitCount / 8 }
            i += 8
        }
        while i < count {
            let byte = received.load(fromByteOffset: i, as: UInt8.self) ^ a.load(fromByteOffset: i, as: UInt8.self) ^ b.load(fromByteOffset: i, as: UInt8.self)
            if byte != 0 { return i }
            i += 1
        }
        return nil
    }

    func deallocate() {
        first.deallocate()
        second.deallocate()
    }
}

struct WorkerOutcome: Sendable {
    var messages: UInt64 = 0
    var incomplete: UInt64 = 0
    var errors: UInt64 = 0
    var errorDetails: [String] = []
    var latency = LatencyHistogram.latency()
    var uncorrected: LatencyHistogram?
    var sendLag: LatencyHistogram?
    var cpuNanoseconds: UInt64 = 0
}

extension LoadError: HarnessError {}
