import EchoCore
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

    public init(target: SocketAddress) { self.target = target }

    public var isOpenLoop: Bool { rate != nil }
}

/// What one load run measured. Latencies are in nanoseconds.
public struct LoadResult: Sendable {
    public var options: LoadOptions
    /// Length of the measured window.
    public var seconds: Double
    /// Messages whose echo came back complete and verified within the window.
    public var messages: UInt64
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

/// Called from the controlling thread at the edges of the measured window, so probes of the
/// server can be read at the same moments.
public struct LoadHooks {
    public var measurementStarted: () -> Void = {}
    public var measurementEnded: () -> Void = {}
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
    /// Period of the shared pattern table (a prime, so connections' streams do not line up).
    static let patternPeriod = 65_521
    static let receiveBuffer = 64 * 1024

    public static func run(_ options: LoadOptions, hooks: LoadHooks = LoadHooks()) throws -> LoadResult {
        guard options.connections >= 1 else { throw LoadError.badOptions("--connections must be at least 1") }
        guard options.messageSize >= 1 else { throw LoadError.badOptions("--size must be at least 1 byte") }
        guard options.depth >= 1 else { throw LoadError.badOptions("--depth must be at least 1") }
        guard options.threads >= 1 else { throw LoadError.badOptions("--threads must be at least 1") }
        if let rate = options.rate, !(rate > 0) { throw LoadError.badOptions("--rate must be a positive number of messages per second") }
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

        let pattern = PatternTable(period: patternPeriod, window: max(options.messageSize, receiveBuffer))
        defer { pattern.deallocate() }
        let shared = SharedRun()
        let outcomes = Mutex<[WorkerOutcome]>([])
        var workers: [OSThread] = []
        for t in 0..<threads {
            let mine = stride(from: t, to: fds.count, by: threads).map { fds[$0] }
            let setup = GeneratorWorker.Setup(
                fds: mine, firstIndex: t, options: options, threadCount: threads,
                pattern: pattern, counters: shared.registry.makeCounters())
            workers.append(try OSThread(name: "load-\(t)") {
                if let cpus = options.cpus, !cpus.isEmpty { try? ProcessResources.pin(to: [cpus[t % cpus.count]]) }
                var worker = GeneratorWorker(setup)
                let outcome = worker.run(shared)
                outcomes.withLock { $0.append(outcome) }
            })
        }

        sleep(seconds: options.warmup)
        // Probe the server just before the window opens and just before it closes, so both
        // windows have the same length even when a probe is slow to answer.
        hooks.measurementStarted()
        shared.phase.store(SharedRun.measuring, ordering: .sequentiallyConsistent)
        let start = ProcessResources.monotonicNanoseconds()
        let end = start + UInt64(options.duration * 1e9)
        var nextProgress = start + 500_000_000
        while true {
            let now = ProcessResources.monotonicNanoseconds()
            if now >= end || shared.workersDone.load(ordering: .relaxed) == threads { break }
            if now >= nextProgress {
                let received = shared.registry.totals()[.bytesIn]
                hooks.progress(Double(now - start) / 1e9, received / UInt64(options.messageSize))
                nextProgress = now + 500_000_000
            }
            let wake = min(end, nextProgress)
            sleep(seconds: wake > now ? min(Double(wake - now) / 1e9, 0.1) : 0)
        }
        hooks.measurementEnded()
        shared.phase.store(SharedRun.stopping, ordering: .sequentiallyConsistent)
        let stop = ProcessResources.monotonicNanoseconds()
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
            result.errors += outcome.errors
            result.errorDetails += outcome.errorDetails
            result.latency.add(outcome.latency)
            if let h = outcome.uncorrected { result.uncorrectedLatency?.add(h) }
            if let h = outcome.sendLag { result.sendLag?.add(h) }
            result.generatorCPUSeconds += Double(outcome.cpuNanoseconds) / 1e9
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
final class SharedRun: Sendable {
    static let warmingUp = 0, measuring = 1, stopping = 2
    let phase = Atomic<Int>(SharedRun.warmingUp)
    let workersDone = Atomic<Int>(0)
    let registry = CounterRegistry()
}

/// The bytes every connection sends: a random table read at a per-connection offset, long
/// enough that any window of `window` bytes from any offset below `period` is contiguous.
struct PatternTable: @unchecked Sendable {
    let period: Int
    let bytes: UnsafeMutablePointer<UInt8>

    init(period: Int, window: Int) {
        self.period = period
        bytes = .allocate(capacity: period + window)
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        for i in 0..<period {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            bytes[i] = UInt8(truncatingIfNeeded: state >> 32)
        }
        for i in 0..<window { bytes[period + i] = bytes[i % period] }
    }

    /// Where stream offset `offset` of the connection whose stream starts at `start` lies.
    @inline(__always)
    func window(start: Int, offset: UInt64) -> UnsafeMutablePointer<UInt8> {
        bytes + (start + Int(offset % UInt64(period))) % period
    }

    func deallocate() { bytes.deallocate() }
}

struct WorkerOutcome: Sendable {
    var messages: UInt64 = 0
    var errors: UInt64 = 0
    var errorDetails: [String] = []
    var latency = LatencyHistogram.latency()
    var uncorrected: LatencyHistogram?
    var sendLag: LatencyHistogram?
    var cpuNanoseconds: UInt64 = 0
}
