import ArgumentParser
import Bench
import EchoCore
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

    @Option(help: "Concurrent connections.")
    var connections: Int = 16

    @Option(help: "Protocol: echo (bytes back as sent), rpc (framed requests, docs/PROTOCOL.md; start the server with the same --pattern), push (--connections subscribers; serve --pattern push --event-rate R) or long-poll (--connections pollers, each keeping a WAIT held; serve --pattern poll --event-rate R).")
    var pattern: LoadCommandPattern = .echo

    @Option(help: "push, long-poll: the topic to listen to.")
    var topic: UInt32 = 1

    @Option(help: "long-poll: each WAIT's timeout (for example 30s).")
    var holdTimeout: Duration = Duration(30)

    @Option(help: "push, long-poll: the server's process id (same host): report its CPU per delivered event over the window, and its memory per connection held, from /proc.")
    var serverPid: Int32?

    @Option(help: "Bytes per message (units: 64, 4k, 1m); for rpc, the payload of each request (a request adds 17 bytes of header, a response 13).")
    var size: ByteSize = ByteSize(64)

    @Option(help: "rpc: microseconds of server CPU work each request asks for (work_us).")
    var work: UInt32 = 0

    @Option(help: "Measured time (units: 500ms, 10s).")
    var duration: Duration = Duration(5)

    @Option(help: "Warm-up before measuring; not counted.")
    var warmup: Duration = Duration(1)

    @Option(help: "Messages in flight per connection (closed loop).")
    var depth: Int = 1

    @Option(help: "Open loop: messages per second in total, on a fixed schedule.")
    var rate: Double?

    @Option(help: "Generator threads (event loops).")
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
    }

    func run() throws {
        let address: SocketAddress
        do { address = try SocketAddress(parsing: target) } catch { exitForUsage(error) }
        if pattern == .push || pattern == .longPoll {
            try runNotifications(address)
            return
        }
        var options = LoadOptions(target: address)
        options.connections = connections
        options.messageSize = size.bytes
        options.pattern = pattern == .rpc ? .rpc : .echo
        options.workMicroseconds = work
        options.duration = duration.seconds
        options.warmup = warmup.seconds
        options.depth = depth
        options.rate = rate
        options.threads = threads
        options.cpus = cpus?.cpus
        if connections + 64 > ProcessResources.raiseDescriptorLimit() {
            exitForUsage(UsageError("\(connections) connections need more file descriptors than the limit allows: raise it (ulimit -n) or use fewer connections"))
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
                printError("iobench: cannot write the histogram to \(histogram): \(error.localizedDescription)")
                throw ExitCode.failure
            }
        }
        var row = ResultRow()
        row.fill(load: result)
        row["workload"] = options.pattern.rawValue
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

    /// push and long-poll: listen to the server's own events on every connection, checking each.
    func runNotifications(_ address: SocketAddress) throws {
        var options = NotificationLoadOptions(target: address)
        options.mode = pattern == .push ? .push : .longPoll
        options.connections = connections
        options.topic = topic
        options.duration = duration.seconds
        options.warmup = warmup.seconds
        options.holdTimeoutMilliseconds = UInt32(min(holdTimeout.seconds * 1000, Double(Frame.maxDurationMilliseconds)).rounded())
        options.cpu = cpus?.cpus.first
        options.serverPID = serverPid
        if connections + 64 > ProcessResources.raiseDescriptorLimit() {
            exitForUsage(UsageError("\(connections) connections need more file descriptors than the limit allows: raise it (ulimit -n) or use fewer connections"))
        }
        let result: NotificationLoadResult
        do {
            result = try NotificationLoad.run(options)
        } catch {
            printError("iobench: \(error)")
            throw ExitCode.failure
        }
        let us = { (ns: UInt64) in String(format: "%.1f", Double(ns) / 1000) }
        let h = result.latency
        let latency = h.totalCount == 0 ? "no events" :
            "p50 \(us(h.valueAtPercentile(50)))  p99 \(us(h.valueAtPercentile(99)))  p99.9 \(us(h.valueAtPercentile(99.9)))  max \(us(h.max)) µs (from each event's publish time)"
        if format == .json {
            print("{\"pattern\":\"\(pattern.rawValue)\",\"connections\":\(connections),\"seconds\":\(result.seconds),\"deliveries\":\(result.deliveries),\"deliveries_per_second\":\(result.deliveriesPerSecond),\"answers\":\(result.answers),\"timeouts\":\(result.timeouts),\"gaps\":\(result.gaps),\"duplicates\":\(result.duplicates),\"payload_errors\":\(result.payloadErrors),\"latency_p50_us\":\(Double(h.valueAtPercentile(50)) / 1000),\"latency_p99_us\":\(Double(h.valueAtPercentile(99)) / 1000),\"latency_max_us\":\(Double(h.max) / 1000),\"generator_cpu_seconds\":\(result.generatorCPUSeconds),\"server_cpu_us_per_delivery\":\(json(result.serverMicrosecondsPerDelivery)),\"server_rss_before\":\(json(result.serverRSSBefore.map(Double.init))),\"server_rss_held\":\(json(result.serverRSSHeld.map(Double.init))),\"server_bytes_per_connection\":\(json(result.serverBytesPerConnection))}")
        } else {
            print("""
            target      \(target): \(connections) \(pattern == .push ? "subscribers" : "long pollers") on topic \(topic)
            measured    \(String(format: "%.2f", result.seconds)) s after \(warmup.seconds) s warm-up
            deliveries  \(result.deliveries) (\(formatCount(result.deliveriesPerSecond))/s)\(pattern == .longPoll ? ", \(result.answers) EVENTS answers, \(result.timeouts) timeouts" : "")
            latency     \(latency)
            checked     \(result.gaps) missing, \(result.duplicates) duplicated, \(result.payloadErrors) wrong payloads
            generator   \(String(format: "%.2f", result.generatorCPUSeconds)) s of CPU
            """)
            if let perDelivery = result.serverMicrosecondsPerDelivery, let cpu = result.serverCPUSeconds {
                print("server      \(String(format: "%.3f", cpu)) s of CPU in the window: \(String(format: "%.2f", perDelivery)) µs per delivered event")
            }
            if let perConnection = result.serverBytesPerConnection, let before = result.serverRSSBefore, let held = result.serverRSSHeld {
                print("memory      server RSS \(before / 1024) KiB before, \(held / 1024) KiB with \(connections) held: \(Int(perConnection)) B per connection")
            }
        }
        let problems = result.errors + (result.duplicates > 0 ? ["\(result.duplicates) events delivered twice"] : [])
            + (result.payloadErrors > 0 ? ["\(result.payloadErrors) events with a wrong payload"] : [])
        if !problems.isEmpty {
            printError("iobench: \(problems.joined(separator: "; "))")
            throw ExitCode.failure
        }
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
