import ArgumentParser
import Backends
import Dispatch
import ServerKit
import Protocols
import BackendKit
import IoUring
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run one server backend (echo, rpc, push or poll) until SIGINT, SIGTERM or 'quit' on stdin.",
        discussion: """
        Once listening it prints one line: 'listening on ADDRESS backend=B threads=N pid=P'. \
        On stdin it accepts 'stats' (answers one JSON line of counters) and 'quit'. It stops \
        within a second and prints final stats as one JSON line.
        """
    )

    @Option(help: ArgumentHelp("The backend: \(Backends.all.map { "\($0.kind) (\($0.summary))" }.joined(separator: "; ")).", valueName: "backend"))
    var backend: BackendKind

    @Option(help: "Protocol on every connection: echo (bytes back as they came, no framing), rpc (framed request/response), push (SUBSCRIBE, then every EVENT) or poll (short polling: SUBMIT/STATUS; long polling: WAIT). See docs/PROTOCOL.md.")
    var pattern: ServerPattern = .echo

    @Option(help: "push, poll: events that may wait in the server for one subscriber (and that each topic keeps for long polls); past it --slow-consumer acts.")
    var maxQueue: Int = 1024

    @Option(help: "push: what happens to a subscriber with more than --max-queue events waiting: drop-oldest (skip the oldest; the subscriber sees the gap by sequence number) or disconnect.")
    var slowConsumer: SlowConsumerPolicy = .dropOldest

    @Option(help: "push, poll: events the server itself publishes per second to every topic that exists (one a client subscribed, waited or published to; 0: only PUBLISH frames publish).")
    var eventRate: Double = 0

    @Option(help: "push, poll: when the server's own events fall due: fixed (every 1/rate) or poisson (exponential gaps of mean 1/rate, from a fixed seed).")
    var eventArrivals: EventArrivals = .fixed

    @Option(help: "push, poll: payload size of the server's own events.")
    var eventSize: String = "64"

    @Option(help: "poll: how long a finished job can still be asked about (for example 10s).")
    var jobTtl: String = "10s"

    @Option(help: "push, poll: the memory all topics' event logs may take together (for example 256m); a PUBLISH that would need more is refused with out_of_range.")
    var maxEventMemory: String = "256m"

    @Option(help: "Framed patterns: the largest frame accepted, header included (for example 64k); a longer declared length is refused with an ERROR frame and the connection closed.")
    var maxFrame: String = "64k"

    @Option(help: "Address to bind. Defaults to loopback: an open echo server is a gift to attackers.")
    var host: String = "127.0.0.1"

    @Option(parsing: .unconditional, help: "TCP port; 0 picks a free port (the listening line shows which).")
    var port: Int = 7000

    @Option(help: "Event loops, each with its own SO_REUSEPORT listener (the event-loop backends); the blocking backend uses a thread per connection instead.")
    var threads: Int = 1

    @Option(help: "Pin the server to these CPUs, for example 0 or 0,1 or 2-3.")
    var cpus: String?

    @Option(help: "Connections open at once; more are accepted, closed at once and counted as refused.")
    var maxConnections: Int = 1_000_000

    @Option(help: "Stack size of each blocking connection thread (for example 64k).")
    var stackSize: String = "64k"

    @Option(help: "Bytes a connection may owe its peer before the server stops reading from it.")
    var maxOwed: String = "256k"

    @Option(help: "io_uring: provided buffers per ring (a power of two).")
    var ringBuffers: Int = 1024

    @Option(help: "io_uring: size of each provided buffer (at most 32k).")
    var ringBufferSize: String = "16k"

    @Option(help: "io_uring: wait up to this long (for example 50us) for a batch of completions, one per four connections (from 32 connections), before a single completion ends the wait; 0 wakes on the first. Fewer io_uring_enter calls and wake-ups for up to this much added latency. Linux 6.12 or later.")
    var batchWait: String = "0"

    @Flag(help: "io_uring: wait for completions in poll(2) on the ring, then reap them without blocking. Only for running under valgrind, which cannot run other threads beside one waiting in io_uring_enter; costs a poll and an io_uring_enter per blocking wait.")
    var ringWaitByPoll = false

    @Flag(help: "io_uring: one single-shot recv per provided buffer instead of a multishot recv capped at what the connection may still take before --max-owed (what kernels before 6.17 get by themselves, lacking the cap).")
    var ringSingleShotRecv = false

    @Flag(help: "Stop when stdin reaches its end (the harness uses this so a server never outlives it).")
    var quitOnEOF = false

    @Option(help: .hidden)
    var injectSyscalls: Int = 0

    @Option(help: .hidden)
    var injectDelayUs: Int = 0

    @Option(help: .hidden)
    var injectDelayNs: Int = 0

    @Option(help: .hidden)
    var injectLoop: Int = 0

    @Option(help: .hidden)
    var injectAllocations: Int = 0

    /// Opens /dev/null once the server has started and never closes it: the leak check's own test.
    @Option(help: .hidden)
    var injectDescriptorLeak = false

    /// A duration: then every loop fails as if its wait had failed (tests of failure reporting).
    @Option(help: .hidden)
    var injectLoopFailureAfter: String?

    /// KIND:EVERY (drop, duplicate, reorder, late): a fault clients must catch.
    @Option(help: .hidden)
    var injectEventFault: String?

    func validate() throws {
        guard (0...65535).contains(port) else {
            throw ValidationError("port \(port) is out of range: use 0 to 65535 (0 picks a free port)")
        }
        guard (1...1024).contains(threads) else {
            throw ValidationError("--threads \(threads) is out of range: use 1 to 1024")
        }
        guard maxConnections >= 1 else {
            throw ValidationError("--max-connections must be at least 1")
        }
        guard ringBuffers > 0, ringBuffers & (ringBuffers - 1) == 0, ringBuffers <= 32768 else {
            throw ValidationError("--ring-buffers \(ringBuffers) must be a power of two from 1 to 32768")
        }
    }

    func run() throws {
        var configuration: ServerConfiguration
        let cpuList: [Int]?
        do {
            configuration = ServerConfiguration(address: try SocketAddress(host: host, port: port))
            configuration.threads = threads
            configuration.maxConnections = maxConnections
            configuration.threadStackSize = try Units.parseByteCount(stackSize)
            configuration.maxOwedPerConnection = try Units.parseByteCount(maxOwed)
            configuration.pattern = pattern
            configuration.maxFrameSize = try Units.parseByteCount(maxFrame)
            guard (Frame.smallestMaxSize...Frame.largestMaxSize).contains(configuration.maxFrameSize) else {
                throw UsageError("--max-frame \(maxFrame) is out of range: use \(Frame.smallestMaxSize) to 16m")
            }
            var ring = IoUringSettings()
            ring.bufferCount = ringBuffers
            ring.bufferSize = try Units.parseByteCount(ringBufferSize)
            configuration.injection.syscalls = max(0, injectSyscalls)
            configuration.injection.delayNanoseconds = UInt64(max(0, injectDelayUs)) * 1000 + UInt64(max(0, injectDelayNs))
            configuration.injection.loopIterations = max(0, injectLoop)
            configuration.injection.allocations = max(0, injectAllocations)
            let batchWaitSeconds = try Units.parseDuration(batchWait)
            guard (0...0.1).contains(batchWaitSeconds) else {
                throw UsageError("--batch-wait \(batchWait) is out of range: use 0 to 100ms")
            }
            // Options of one backend are refused by the others (the registry says whose they are).
            let given = [("--batch-wait", batchWaitSeconds > 0), ("--ring-wait-by-poll", ringWaitByPoll),
                         ("--ring-single-shot-recv", ringSingleShotRecv)].filter(\.1).map(\.0)
            for option in given where !Backends.descriptor(backend).serveOptions.contains(option) {
                let owners = Backends.all.filter { $0.serveOptions.contains(option) }.map(\.kind.rawValue).joined(separator: ", ")
                throw UsageError("\(option) applies to the \(owners) backend only, not \(backend)")
            }
            ring.batchWaitMicroseconds = UInt32((batchWaitSeconds * 1e6).rounded())
            guard !(ringWaitByPoll && batchWaitSeconds > 0) else {
                throw UsageError("--ring-wait-by-poll and --batch-wait cannot be combined: choose one way for io_uring to wait")
            }
            ring.waitByPoll = ringWaitByPoll
            ring.singleShotRecv = ringSingleShotRecv
            guard (16 * 1024...64 * 1024 * 1024).contains(configuration.threadStackSize) else {
                throw UsageError("--stack-size \(stackSize) is out of range: use 16k to 64m")
            }
            guard (256...32 * 1024).contains(ring.bufferSize) else {
                throw UsageError("--ring-buffer-size \(ringBufferSize) is out of range: use 256 to 32k")
            }
            configuration.backendSettings[IoUringSettings.self] = ring
            guard configuration.maxOwedPerConnection >= 1024 else {
                throw UsageError("--max-owed \(maxOwed) is too small: use at least 1k")
            }
            guard (1...1_000_000).contains(maxQueue) else {
                throw UsageError("--max-queue \(maxQueue) is out of range: use 1 to 1000000 events")
            }
            configuration.notifications.maxQueue = maxQueue
            configuration.notifications.slowConsumer = slowConsumer
            guard eventRate.isFinite, (0...1_000_000).contains(eventRate) else {
                throw UsageError("--event-rate \(eventRate) is out of range: use 0 to 1000000 events per second")
            }
            configuration.notifications.eventRate = eventRate
            configuration.notifications.eventArrivals = eventArrivals
            if let injectEventFault {
                guard let fault = EventFault(parsing: injectEventFault) else {
                    throw UsageError("--inject-event-fault \(injectEventFault) is not KIND:EVERY with KIND drop, duplicate, reorder or late and EVERY at least 2")
                }
                configuration.notifications.fault = fault
            }
            let eventBytes = try Units.parseByteCount(eventSize)
            guard (0...(configuration.maxFrameSize - Frame.eventOverhead)).contains(eventBytes) else {
                throw UsageError("--event-size \(eventSize) is out of range: use 0 to \(configuration.maxFrameSize - Frame.eventOverhead) (--max-frame minus \(Frame.eventOverhead))")
            }
            configuration.notifications.eventSize = eventBytes
            let ttl = try Units.parseDuration(jobTtl)
            guard ttl >= 0.001, ttl <= 86_400 else {
                throw UsageError("--job-ttl \(jobTtl) is out of range: use 1ms to 24h")
            }
            configuration.notifications.jobTTLMilliseconds = UInt32((ttl * 1000).rounded())
            configuration.notifications.maxEventMemory = try Units.parseByteCount(maxEventMemory)
            guard configuration.notifications.maxEventMemory >= 64 * 1024 else {
                throw UsageError("--max-event-memory \(maxEventMemory) is too small: use at least 64k")
            }
            cpuList = try cpus.map(Units.parseCPUList)
            if let cpuList { try ProcessResources.pin(to: cpuList) }
        } catch {
            throw usageError(error)
        }

        signal(SIGPIPE, SIG_IGN)
        ProcessResources.raiseDescriptorLimit()
        let control = ServeControl()
        control.startSignalWatcher()
        let server = Backends.descriptor(backend).factory.makeServer(configuration: configuration)
        control.startStdinReader(server, quitOnEOF: quitOnEOF)
        // libdispatch opens its event manager's descriptors (an epoll, an eventfd and a timerfd)
        // the first time a timer or asynchronous work runs, and keeps them for the life of the
        // process; SwiftNIO's shutdown uses Dispatch. Started before counting, so that what a
        // stopped server leaves open is its own (otherwise NIO appeared to leak 3).
        // A timer found already due when Dispatch's manager thread first runs (a busy machine)
        // fires without arming the timerfd, which Dispatch then opened later, after the count
        // (CI saw "left open: anon_inode:[timerfd]" on four backends): arm timers, each a little
        // later, until the timerfd is there.
        for delay in [1, 10, 20, 40, 80] {
            let dispatchStarted = DispatchSemaphore(value: 0)
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(delay)) { dispatchStarted.signal() }
            dispatchStarted.wait()
            if ProcessResources.openDescriptors().values.contains("anon_inode:[timerfd]") { break }
        }
        let baselineFDs = ProcessResources.openDescriptors()
        do {
            try server.start()
        } catch let error as UsageError {
            throw usageError(error)
        } catch {
            printError("iobench: cannot start the \(backend) server: \(error)")
            throw ExitCode.failure
        }
        var line = "listening on \(server.boundAddress) backend=\(backend) threads=\(threads) pid=\(getpid()) pattern=\(pattern)"
        if let setup = server.stats().setup { line += " setup=\(setup)" }
        control.emit(line)
        if injectDescriptorLeak { _ = open("/dev/null", O_RDONLY) }
        if let injectLoopFailureAfter {
            let seconds = (try? Units.parseDuration(injectLoopFailureAfter)) ?? 0
            let injector = try? OSThread(name: "inject-failure", stackSize: 64 * 1024) {
                usleep(UInt32(min(seconds, 3600) * 1e6))
                server.injectLoopFailure()
            }
            injector?.detach()
        }

        control.waitForStop()
        let stopStarted = ProcessResources.monotonicNanoseconds()
        server.stop()
        let stopMilliseconds = Double(ProcessResources.monotonicNanoseconds() - stopStarted) / 1e6
        // What the server left behind: it must have closed every descriptor it opened and ended
        // every thread it started. A detached blocking thread may need a moment to exit after
        // its last close, so look again briefly before calling a thread or a descriptor leaked
        // (CI once saw one descriptor more than at start, on two backends in one run, that a
        // second look did not explain: the ones still open are now named on stderr).
        var leftOpen = ProcessResources.openDescriptors().filter { baselineFDs[$0.key] != $0.value }
        for _ in 0..<100 where !leftOpen.isEmpty {
            usleep(2000)
            leftOpen = ProcessResources.openDescriptors().filter { baselineFDs[$0.key] != $0.value }
        }
        if !leftOpen.isEmpty {
            printError("iobench: left open after stopping: " + leftOpen.sorted { $0.key < $1.key }.map { "fd \($0.key) → \($0.value)" }.joined(separator: ", "))
        }
        let leakedFDs = leftOpen.count
        var leakedThreads = ProcessResources.threadCount(namePrefix: OSThread.serverThreadPrefix)
        for _ in 0..<100 where leakedThreads > 0 {
            usleep(1000)
            leakedThreads = ProcessResources.threadCount(namePrefix: OSThread.serverThreadPrefix)
        }
        var final = server.stats().line
        final.final = true
        final.stopMilliseconds = (stopMilliseconds * 10).rounded() / 10
        final.leakedFileDescriptors = leakedFDs
        final.leakedThreads = leakedThreads
        control.emit(final.json)
    }
}

/// The serve command's control channel: stdin lines, signals, and serialised stdout.
final class ServeControl: Sendable {
    private let stopRequested = DispatchSemaphore(value: 0)
    private let output = Mutex(())

    /// Prints one line to stdout and flushes it (the harness reads line by line).
    func emit(_ line: String) {
        var text = line
        text.append("\n")
        // One write(2) per line: unbuffered, so a reader on a pipe sees it at once.
        output.withLock { _ in
            text.withUTF8 { bytes in _ = write(1, bytes.baseAddress, bytes.count) }
        }
    }

    func requestStop() { stopRequested.signal() }

    func waitForStop() { stopRequested.wait() }

    /// SIGINT and SIGTERM are blocked in every thread and taken by one watcher with sigwait,
    /// so no handler runs in the middle of a backend's loop.
    func startSignalWatcher() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let watched = set
        let watcher = try? OSThread(name: "signals", stackSize: 64 * 1024) { [self] in
            var set = watched
            var signal: Int32 = 0
            sigwait(&set, &signal)
            requestStop()
        }
        watcher?.detach()
    }

    func startStdinReader(_ server: BackendServer, quitOnEOF: Bool) {
        let reader = try? OSThread(name: "control", stackSize: 256 * 1024) { [self] in
            // The harness reads counters through this thread at the edges of a measured window;
            // among hundreds of busy blocking connection threads it would answer late and skew
            // the window. A higher priority (when allowed) lets it answer at once; it only runs
            // when a command arrives.
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(ProcessResources.threadID()), -10)
            while let line = readLine() {
                switch line.trimmingCharacters() {
                case "stats": emit(server.stats().line.json)
                case "quit", "stop": requestStop(); return
                case "": continue
                case let other: emit("{\"error\":\"unknown command '\(other)': use stats or quit\"}")
                }
            }
            // End of input. Under a harness its parent has gone: stop. Otherwise (for example
            // stdin is /dev/null) keep serving until a signal.
            if quitOnEOF { requestStop() }
        }
        reader?.detach()
    }
}

extension String {
    func trimmingCharacters() -> String {
        String(drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed())
    }
}
