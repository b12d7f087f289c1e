import ArgumentParser
import BenchRunner
import LoadGeneration
import ResultAnalysis
import ResultReporting
import ServerKit
import Protocols
import BackendKit
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct LoadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Drive any TCP echo server and measure it; every echoed byte is verified.",
        discussion: """
        Closed loop by default: each connection keeps --depth messages in flight (1 is request/response). \
        With --rate the load is open loop: messages leave on a fixed schedule and latency is measured \
        from the scheduled time, so coordinated omission is corrected; the uncorrected figures and the \
        generator's send lag are reported too. Exits 1 when any byte came back wrong or a connection \
        was lost, 64 on bad usage.
        """
    )

    @Option(help: "The server, HOST:PORT ([::1]:7000 for IPv6).")
    var target: String

    @Option(name: [.customShort("c"), .long], help: "Concurrent connections (-c, as wrk).")
    var connections: Int = 16

    @Option(help: "Protocol: echo (bytes back as sent), rpc (framed requests, docs/PROTOCOL.md; start the server with the same --pattern), push (subscribers; serve --pattern push), long-poll (pollers each keeping a WAIT held; serve --pattern poll) or short-poll (pollers asking every --poll-interval, or with --job-duration submitting jobs and polling STATUS; serve --pattern poll).")
    var pattern: LoadCommandPattern = .echo

    @Option(help: "push, long-poll, short-poll: clients listening (the same as --connections).")
    var subscribers: Int?

    @Option(help: "push, long-poll, short-poll: the topic to listen to.")
    var topic: UInt32 = 1

    @Option(help: "push, long-poll, short-poll: spread the clients over this many topics (--topic and up); with serve --event-arrivals poisson each topic has its own independent stream of events.")
    var topics: Int = 1

    @Option(help: "push, long-poll, short-poll: events per second. With --publishers, this generator publishes them (PUBLISH, fixed schedule, stamped with the due time); without, it is the rate the server was given (serve --event-rate), for the expected counts and short polling's theory.")
    var eventRate: Double = 0

    @Option(help: "push, long-poll, short-poll: connections that publish --event-rate events (0: the server's own events).")
    var publishers: Int = 0

    @Flag(help: "short-poll: the server's events arrive as a Poisson process (serve --event-arrivals poisson): compare the empty-poll fraction with e^(-rate × interval).")
    var poissonEvents = false

    @Option(help: "short-poll: time between one client's polls (for example 100ms).")
    var pollInterval: Duration = Duration(0.1)

    @Option(help: "short-poll: each job's duration; clients SUBMIT a job, poll STATUS until DONE, and start the next at a random moment (without it they poll the topic for events).")
    var jobDuration: Duration?

    @Option(help: "long-poll: each WAIT's timeout (for example 30s).")
    var holdTimeout: Duration = Duration(30)

    @Flag(help: "long-poll: one round: do not ask again after an answer (to measure simultaneous timeouts with nothing else for the generator to do).")
    var noRearm = false

    @Option(help: "push: how many of the subscribers never read (to see what stalled subscribers do to the others).")
    var stalled: Int = 0

    @Option(help: "push, long-poll, short-poll: the server's process id (same host): report its CPU and context switches per delivered event over the window, and its memory per client, from /proc.")
    var serverPid: Int32?

    @Option(name: [.customShort("s"), .long], help: "Bytes per message (units: 64, 4k, 1m); for rpc, the payload of each request (a request adds 17 bytes of header, a response 13).")
    var size: ByteSize = ByteSize(64)

    @Option(help: "rpc: microseconds of server CPU work each request asks for (work_us).")
    var work: UInt32 = 0

    @Option(name: [.customShort("d"), .long], help: "Measured time (units: 500ms, 10s; -d, as wrk).")
    var duration: Duration = Duration(5)

    @Option(help: "Warm-up before measuring; not counted.")
    var warmup: Duration = Duration(1)

    @Option(help: "Messages in flight per connection (closed loop).")
    var depth: Int = 1

    @Option(name: [.customShort("R"), .long], help: "Open loop: messages per second in total, on a fixed schedule (-R, as wrk2).")
    var rate: Double?

    @Option(name: [.customShort("t"), .long], help: "Generator threads (event loops; -t, as wrk).")
    var threads: Int = 1

    @Option(help: "Pin generator thread i to the i-th of these CPUs (for example 1 or 2-3).")
    var cpus: CPUList?

    @Option(help: "Write the full latency percentile spectrum (HdrHistogram .hgrm text, microseconds) to this file.")
    var histogram: String?

    @Option(help: "Output: table (for people), csv or json.")
    var format: OutputFormat = .table

    @Flag(help: "No progress line.")
    var quiet = false

    func validate() throws {
        guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
        guard size.bytes >= 1 && size.bytes <= 64 << 20 else { throw ValidationError("--size must be from 1 byte to 64m") }
        guard depth >= 1 && depth <= 4096 else { throw ValidationError("--depth must be from 1 to 4096") }
        guard threads >= 1 && threads <= 256 else { throw ValidationError("--threads must be from 1 to 256") }
        guard duration.seconds > 0 else { throw ValidationError("--duration must be positive") }
        if let rate, !(rate > 0 && rate.isFinite) { throw ValidationError("--rate must be a positive number of messages per second") }
    }

    enum LoadCommandPattern: String, ExpressibleByArgument, CaseIterable {
        case echo, rpc, push
        case longPoll = "long-poll"
        case shortPoll = "short-poll"
    }

    func run() throws {
        let address: SocketAddress
        do { address = try SocketAddress(parsing: target) } catch { throw usageError(error) }
        if pattern == .push || pattern == .longPoll || pattern == .shortPoll {
            try runNotifications(address)
            return
        }
        var options = LoadOptions(target: address)
        options.connections = connections
        options.messageSize = size.bytes
        options.workload = pattern == .rpc ? .rpc : .echo
        options.workMicroseconds = work
        options.duration = duration.seconds
        options.warmup = warmup.seconds
        options.depth = depth
        options.rate = rate
        options.threads = threads
        options.cpus = cpus?.cpus
        if connections + 64 > ProcessResources.raiseDescriptorLimit() {
            throw UsageError("\(connections) connections need more file descriptors than the limit allows: raise it (ulimit -n) or use fewer connections")
        }
        // The histogram's file is made (with its folder) before measuring, so a bad path costs
        // nothing; it is filled after.
        if let histogram {
            do {
                _ = try CSVAppender(path: histogram, columns: [])
            } catch {
                throw UsageError("--histogram \(histogram): \(error)")
            }
        }
        let progress = ProgressLine(quiet: quiet || duration.seconds <= 1)
        var hooks = LoadHooks()
        hooks.progress = { elapsed, messages in
            progress.show("load \(target): \(String(format: "%.1f", elapsed))/\(duration.seconds) s, \(formatCount(Double(messages) / max(elapsed, 0.001))) msgs/s")
        }
        let result: LoadResult
        do {
            result = try LoadGenerator.run(options, hooks: hooks)
        } catch let error as LoadError {
            progress.clear()
            printError("iobench: \(error)")
            throw ExitCode.failure
        }
        progress.clear()

        if let histogram {
            var text = ""
            result.latency.outputPercentileDistribution(to: &text, outputValueUnitScalingRatio: 1000)
            do {
                try text.write(toFile: histogram, atomically: true, encoding: .utf8)
            } catch {
                printError("iobench: cannot write the histogram to \(histogram): \(CSVAppender.reason(error))")
                throw ExitCode.failure
            }
        }
        var row = ResultRow()
        row.fill(load: result)
        row["workload"] = options.workload.name
        row["backend"] = target
        row["connections"] = "\(connections)"
        row["client_cpus"] = cpus?.text ?? ""
        row["bottleneck"] = result.generatorUtilization >= Bottleneck.saturation ? "generator" : ""
        switch format {
        case .table: print(humanSummary(result))
        case .csv:
            let columns = ResultRow.columnNames.filter { row[$0] != nil }
            print(CSV.write([row], columns: columns), terminator: "")
        case .json:
            let fields = ResultRow.columnNames.compactMap { name in row[name].map { (name, $0) } }
            print("{" + fields.map { "\"\($0.0)\":" + (Double($0.1) != nil ? $0.1 : "\"\($0.1)\"") }.joined(separator: ",") + "}")
        }
        if result.errors > 0 {
            printError("iobench: \(result.errors) errors: \(result.errorDetails.joined(separator: "; "))")
            throw ExitCode.failure
        }
    }

    /// push, long-poll and short-poll: listen to events on every client, checking each.
    func runNotifications(_ address: SocketAddress) throws {
        var options = NotificationLoadOptions(target: address)
        options.mode = NotificationLoadOptions.Mode(rawValue: pattern.rawValue)!
        options.connections = subscribers ?? connections
        options.topic = topic
        options.topics = topics
        guard topics >= 1 && topics <= 65_536 else { throw UsageError("--topics must be from 1 to 65536") }
        options.duration = duration.seconds
        options.warmup = warmup.seconds
        options.holdTimeoutMilliseconds = UInt32(min(holdTimeout.seconds * 1000, Double(Frame.maxDurationMilliseconds)).rounded())
        options.pollInterval = pollInterval.seconds
        options.rearm = !noRearm
        options.jobDuration = jobDuration?.seconds
        options.eventRate = eventRate
        options.publishers = publishers
        options.eventSize = size.bytes
        options.poissonEvents = poissonEvents
        options.stalled = stalled
        options.cpu = cpus?.cpus.first
        options.serverPID = serverPid
        guard options.connections >= 1 else { throw UsageError("--subscribers must be at least 1") }
        guard eventRate >= 0 && eventRate.isFinite && eventRate <= 1_000_000 else { throw UsageError("--event-rate must be from 0 to 1000000 events per second") }
        guard publishers >= 0 && publishers <= 1024 else { throw UsageError("--publishers must be from 0 to 1024") }
        guard publishers == 0 || eventRate > 0 else { throw UsageError("--publishers needs --event-rate: the events per second they publish") }
        guard (0.001...3600).contains(pollInterval.seconds) else { throw UsageError("--poll-interval must be from 1ms to 1h") }
        if let jobDuration, !(0...3600).contains(jobDuration.seconds) { throw UsageError("--job-duration must be from 0 to 1h") }
        guard stalled >= 0 && stalled < options.connections else { throw UsageError("--stalled must be from 0 to fewer than the subscribers") }
        guard stalled == 0 || pattern == .push else { throw UsageError("--stalled is for --pattern push") }
        guard size.bytes <= 60_000 || publishers == 0 else { throw UsageError("--size must be at most 60000 bytes for published events") }
        if options.connections + publishers + 64 > ProcessResources.raiseDescriptorLimit() {
            throw UsageError("\(options.connections) clients need more file descriptors than the limit allows: raise it (ulimit -n) or use fewer")
        }
        let result: NotificationLoadResult
        do {
            result = try NotificationLoad.run(options)
        } catch {
            printError("iobench: \(error)")
            throw ExitCode.failure
        }
        let fields = result.fields
        switch format {
        case .json:
            print("{" + fields.map { "\"\($0.name)\":" + (Double($0.value) != nil ? $0.value : "\"\($0.value)\"") }.joined(separator: ",") + "}")
        case .csv:
            print(CSV.write([ResultRow(Dictionary(uniqueKeysWithValues: fields.map { ($0.name, $0.value) }))], columns: fields.map(\.name)), terminator: "")
        case .table:
            print(notificationSummary(result))
        }
        // Events were expected (the server's own or published here) and none came: fail, and
        // say what is likely wrong.
        // (At least 5 expected: with fewer, a window without an event is not unusual.)
        let expectedEvents = jobDuration == nil && eventRate * duration.seconds >= 5
        let silent = expectedEvents && result.deliveries == 0
            ? ["no event arrived in the window: is the server publishing (iobench serve --pattern \(pattern == .push ? "push" : "poll") --event-rate N), or do its events go to another --topic?"] : []
        let problems = result.errors + silent + (result.duplicates > 0 ? ["\(result.duplicates) events delivered twice"] : [])
            + (result.gaps > 0 ? ["\(result.gaps) events missing (gaps in seq): the server dropped them (drop-oldest acts on a subscriber more than --max-queue behind) or lost them"] : [])
            + (result.reorders > 0 ? ["\(result.reorders) events delivered after a later one"] : [])
            + (result.payloadErrors > 0 ? ["\(result.payloadErrors) events with a wrong payload"] : [])
        if !problems.isEmpty {
            printError("iobench: \(problems.joined(separator: "; "))")
            throw ExitCode.failure
        }
    }

    func notificationSummary(_ r: NotificationLoadResult) -> String {
        let o = r.options
        let us = { (ns: UInt64) in String(format: "%.1f", Double(ns) / 1000) }
        func percentiles(_ h: LatencyHistogram) -> String {
            guard h.totalCount > 0 else { return "none" }
            return "p50 \(us(h.valueAtPercentile(50)))  p99 \(us(h.valueAtPercentile(99)))  p99.9 \(us(h.valueAtPercentile(99.9)))  max \(us(h.max)) µs"
        }
        let who: String
        switch o.mode {
        case .push: who = "\(o.connections) subscribers\(o.stalled > 0 ? " (\(o.stalled) stalled)" : "")"
        case .longPoll: who = "\(o.connections) long pollers (WAIT timeout \(o.holdTimeoutMilliseconds) ms)"
        case .shortPoll: who = "\(o.connections) short pollers every \(String(format: "%g", o.pollInterval * 1000)) ms" + (o.jobDuration.map { ", jobs of \(String(format: "%g", $0 * 1000)) ms" } ?? "")
        }
        let source = o.publishers > 0 ? "\(o.publishers) publishers at \(formatCount(o.eventRate))/s" : "the server's own events"
        var lines = [
            "target      \(target): \(who) on topic \(o.topic), \(source)",
            "measured    \(String(format: "%.2f", r.seconds)) s after \(o.warmup) s warm-up",
            "deliveries  \(r.deliveries) (\(formatCount(r.deliveriesPerSecond))/s)",
            "latency     \(percentiles(r.latency)) (from each event's publish time\(o.jobDuration != nil ? " or job's completion" : ""))",
        ]
        if r.broadcasts > 0 {
            lines.append("broadcast   \(r.broadcasts) reached every listener: completion \(percentiles(r.broadcastCompletion)); skew p50 \(us(r.broadcastSkew.valueAtPercentile(50))) p99 \(us(r.broadcastSkew.valueAtPercentile(99))) µs\(r.incompleteBroadcasts > 0 ? "; \(r.incompleteBroadcasts) not complete by the end" : "")")
        }
        if o.mode == .longPoll {
            lines.append("long poll   \(r.answers) EVENTS answers, \(r.timeouts) timeouts, \(r.caughtUp) events caught up; wake \(percentiles(r.wakeLatency))")
            if r.timeoutLateness.totalCount > 0 { lines.append("timeouts    after their deadline: \(percentiles(r.timeoutLateness))") }
        }
        if o.mode == .shortPoll {
            let empty = r.emptyPollFraction.map { String(format: "%.3f", $0) } ?? "-"
            let theory = r.theoreticalEmptyFraction.map { String(format: "%.3f", $0) } ?? "-"
            lines.append("short poll  \(r.polls) polls (\(formatCount(Double(r.polls) / max(r.seconds, 0.001)))/s), empty \(empty) (theory \(theory)), \(r.latePolls) late; \(r.emptyPolls > 0 ? String(format: "%.1f", Double(r.emptyPollBytes) / Double(r.emptyPolls)) : "-") B per empty round trip")
            if let mean = r.meanLatency, let theory = r.theoreticalNoticeLatency {
                lines.append("notice      mean \(String(format: "%.1f", mean / 1000)) µs, theory (interval/2 + round trip) \(String(format: "%.1f", theory / 1000)) µs")
            }
        }
        lines.append("wire        \(r.requests) requests, \(r.bytesSent) B sent, \(r.bytesReceived) B received\(r.deliveries > 0 ? String(format: ": %.2f requests and %.1f B per event", Double(r.requests) / Double(r.deliveries), Double(r.bytesSent + r.bytesReceived) / Double(r.deliveries)) : "")")
        lines.append("checked     \(r.gaps) missing, \(r.duplicates) duplicated, \(r.reorders) reordered, \(r.payloadErrors) wrong payloads")
        lines.append("generator   \(String(format: "%.2f", r.generatorCPUSeconds)) s of CPU (\(Int(r.generatorUtilization * 100))%)")
        if let perDelivery = r.serverMicrosecondsPerDelivery, let cpu = r.serverCPUSeconds {
            lines.append("server      \(String(format: "%.3f", cpu)) s of CPU in the window: \(String(format: "%.2f", perDelivery)) µs per delivered event")
        }
        if let perConnection = r.serverBytesPerConnection, let before = r.serverRSSBefore, let held = r.serverRSSHeld {
            lines.append("memory      server RSS \(before / 1024) KiB before, \(held / 1024) KiB with \(o.connections) clients: \(Int(perConnection)) B per client\(r.serverRSSEnd.map { ", \($0 / 1024) KiB at the end" } ?? "")")
        }
        if r.generatorUtilization >= Bottleneck.saturation {
            lines.append("warning: the generator used \(Int(r.generatorUtilization * 100))% of its CPU: latencies partly measure it")
        }
        return lines.joined(separator: "\n")
    }

    func json(_ value: Double?) -> String { value.map { "\($0)" } ?? "null" }

    func humanSummary(_ r: LoadResult) -> String {
        let us = { (ns: UInt64) in String(format: "%.1f", Double(ns) / 1000) }
        func percentiles(_ h: LatencyHistogram) -> String {
            guard h.totalCount > 0 else { return "no messages" }
            return "p50 \(us(h.valueAtPercentile(50)))  p90 \(us(h.valueAtPercentile(90)))  p99 \(us(h.valueAtPercentile(99)))  p99.9 \(us(h.valueAtPercentile(99.9)))  p99.99 \(us(h.valueAtPercentile(99.99)))  max \(us(h.max)) µs"
        }
        let mode = r.options.rate.map { "open loop at \(formatCount($0)) msgs/s" } ?? "closed loop, depth \(r.options.depth)"
        var lines = [
            "target      \(target): \(r.options.connections) connections, \(r.options.messageSize) B messages, \(mode)",
            "measured    \(String(format: "%.2f", r.seconds)) s after \(r.options.warmup) s warm-up",
            "throughput  \(formatCount(r.messagesPerSecond)) msgs/s, \(String(format: "%.2f", r.megabytesPerSecond)) MB/s (\(r.messages) messages)",
            "latency     \(percentiles(r.latency))" + (r.options.rate != nil ? " (from the scheduled send time)" : ""),
        ]
        if let u = r.uncorrectedLatency { lines.append("uncorrected \(percentiles(u)) (from the actual send time)") }
        if let lag = r.sendLag, lag.totalCount > 0 {
            lines.append("send lag    p99 \(us(lag.valueAtPercentile(99))) µs, max \(us(lag.max)) µs")
        }
        lines.append("generator   \(r.options.threads) thread(s), CPU \(Int(r.generatorUtilization * 100))% of its CPUs, \(String(format: "%.2f", r.generatorCPUMicrosecondsPerMessage)) µs per message")
        lines.append("errors      \(r.errors)")
        if r.generatorUtilization >= Bottleneck.saturation {
            lines.append("warning: the generator used \(Int(r.generatorUtilization * 100))% of its CPUs: it may be the bottleneck; add --threads and CPUs")
        }
        if r.sendLagDistortsLatency {
            lines.append("warning: messages left late against their schedule (see send lag): latencies partly measure the generator; lower --rate or add generator threads")
        }
        return lines.joined(separator: "\n")
    }
}
