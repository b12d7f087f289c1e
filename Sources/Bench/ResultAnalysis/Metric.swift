import Foundation

/// A figure the harness measures, said once: its CSV column, unit, meaning, which way is
/// better, which kind of measurement yields it, how the CSV writes it and how tables and charts
/// show it. The CSV schema (`ResultRow.schema`, `iobench report --schema`), the regression
/// check's list (`CheckedMetric.all`), table headers and chart axes read these, and code names a
/// metric by its static member (`row[.messagesPerSecond]`), so a misspelt metric does not compile.
public struct Metric: Sendable, Hashable, CustomStringConvertible {
    public enum Polarity: String, Sendable {
        case lowerIsBetter = "lower"
        case higherIsBetter = "higher"
        /// Context for the other figures (a utilisation, a count of events), not better either way.
        case neither = ""
    }

    /// Which measurement yields it.
    public enum Source: String, Sendable {
        /// Wall clock and CPU time under load.
        case timed
        /// The server under callgrind: counts that do not depend on the machine's speed.
        case counted
        /// Connections held open with nothing to do.
        case idle
        /// The notification patterns (push, long and short polling).
        case notification
    }

    /// How a table or chart shows it: a short label with its unit, the value divided into that
    /// unit (µs shown as ms: 1000), decimals.
    public struct Display: Sendable, Hashable {
        public let label: String
        public let divisor: Double
        public let decimals: Int

        public init(_ label: String, divisor: Double = 1, decimals: Int) {
            self.label = label
            self.divisor = divisor
            self.decimals = decimals
        }

        public func format(_ value: Double) -> String { String(format: "%.\(decimals)f", value / divisor) }
    }

    /// The CSV column.
    public let column: String
    /// Its unit, for people ("µs", "messages/s", "calls", "bytes", "fraction").
    public let unit: String
    public let polarity: Polarity
    public let source: Source
    /// Decimals the CSV writes (nil: a whole number).
    public let decimals: Int?
    public let display: Display
    /// One line: what it is and how it is measured.
    public let meaning: String
    /// A chart's axis: what is drawn and in which unit, in words ("server CPU per message", "µs").
    public let axis: (name: String, unit: String)?

    public init(_ column: String, unit: String, _ polarity: Polarity, _ source: Source, decimals: Int?, display: Display, meaning: String,
                axis: (name: String, unit: String)? = nil) {
        self.column = column
        self.unit = unit
        self.polarity = polarity
        self.source = source
        self.decimals = decimals
        self.display = display
        self.meaning = meaning
        self.axis = axis
    }

    /// The title of a chart axis that shows it, "name (unit[, log scale])".
    public func axisTitle(logScale: Bool = false) -> String {
        let (name, unit) = axis ?? (column, self.unit)
        return "\(name) (\(unit)\(logScale ? ", log scale" : ""))"
    }

    public var description: String { column }

    /// Its name in the regression check's reports and thresholds files: a counted figure carries
    /// a `counted.` prefix, since `syscalls_per_msg` under timed load and counted differ.
    public var id: String { source == .counted ? "counted." + column : column }

    public static func == (a: Metric, b: Metric) -> Bool { a.column == b.column && a.source == b.source }
    public func hash(into hasher: inout Hasher) { hasher.combine(column) }

    /// The value as the CSV writes it ("" for one that is not finite).
    public func csv(_ value: Double) -> String {
        guard value.isFinite else { return "" }
        guard let decimals else { return String(Int64(value.rounded())) }
        return String(format: "%.\(decimals)f", value)
    }
}

// MARK: - The echo and rpc rows (`iobench run`)

extension Metric {
    public static let messagesPerSecond = Metric("msgs_per_s", unit: "messages/s", .higherIsBetter, .timed, decimals: 1,
        display: Display("msgs/s", decimals: 0), meaning: "messages per second",
        axis: ("throughput", "messages per second"))
    public static let megabytesPerSecond = Metric("mb_per_s", unit: "MB/s", .higherIsBetter, .timed, decimals: 3,
        display: Display("MB/s", decimals: 1), meaning: "payload megabytes (10^6 B) echoed per second, one direction")
    /// The latency spectrum's axis (every percentile on one, log scale).
    public static let latencySpectrumAxisTitle = "latency (µs, log scale)"
    public static let latencyP50 = Metric("p50_us", unit: "µs", .lowerIsBetter, .timed, decimals: 1,
        display: Display("p50 µs", decimals: 1), meaning: "latency median, microseconds (open loop: from the scheduled send time)")
    public static let latencyP90 = Metric("p90_us", unit: "µs", .lowerIsBetter, .timed, decimals: 1,
        display: Display("p90 µs", decimals: 1), meaning: "latency 90th percentile, microseconds")
    public static let latencyP99 = Metric("p99_us", unit: "µs", .lowerIsBetter, .timed, decimals: 1,
        display: Display("p99 µs", decimals: 1), meaning: "latency 99th percentile, microseconds")
    public static let latencyP999 = Metric("p999_us", unit: "µs", .lowerIsBetter, .timed, decimals: 1,
        display: Display("p99.9 µs", decimals: 1), meaning: "latency 99.9th percentile, microseconds")
    public static let latencyP9999 = Metric("p9999_us", unit: "µs", .lowerIsBetter, .timed, decimals: 1,
        display: Display("p99.99 µs", decimals: 1), meaning: "latency 99.99th percentile, microseconds")
    public static let latencyMax = Metric("max_us", unit: "µs", .lowerIsBetter, .timed, decimals: 1,
        display: Display("max µs", decimals: 1), meaning: "largest latency, microseconds")
    public static let uncorrectedP99 = Metric("uncorrected_p99_us", unit: "µs", .lowerIsBetter, .timed, decimals: 1,
        display: Display("uncorrected p99 µs", decimals: 1),
        meaning: "open loop: 99th percentile from the actual send time (coordinated omission not corrected)")
    public static let sendLagP99 = Metric("send_lag_p99_us", unit: "µs", .lowerIsBetter, .timed, decimals: 1,
        display: Display("send lag p99 µs", decimals: 1), meaning: "open loop: 99th percentile of how late messages left against their schedule")
    public static let sendLagMax = Metric("send_lag_max_us", unit: "µs", .lowerIsBetter, .timed, decimals: 1,
        display: Display("send lag max µs", decimals: 1), meaning: "open loop: largest send lag")
    public static let errors = Metric("errors", unit: "count", .lowerIsBetter, .timed, decimals: nil,
        display: Display("errors", decimals: 0),
        meaning: "verification failures, lost connections and bytes that never came back after the window (a run with errors failed)")
    public static let serverCPUPerMessage = Metric("server_cpu_us_per_msg", unit: "µs", .lowerIsBetter, .timed, decimals: 3,
        display: Display("srv µs/msg", decimals: 2),
        meaning: "server CPU time (user + system, all threads, from its CPU-time clock read at the window's edges) per message, microseconds",
        axis: ("server CPU per message", "µs"))
    public static let serverCPUUtilisation = Metric("server_cpu_util", unit: "cores", .neither, .timed, decimals: 3,
        display: Display("srv CPU", decimals: 2), meaning: "server CPU time / wall time (1.0 = one core busy)")
    public static let generatorCPUPerMessage = Metric("generator_cpu_us_per_msg", unit: "µs", .neither, .timed, decimals: 3,
        display: Display("gen µs/msg", decimals: 2), meaning: "load generator CPU time per message, microseconds")
    public static let generatorCPUUtilisation = Metric("generator_cpu_util", unit: "fraction", .neither, .timed, decimals: 3,
        display: Display("gen CPU", decimals: 2), meaning: "generator CPU time / (wall time × generator threads)")
    public static let syscallsPerMessage = Metric("syscalls_per_msg", unit: "calls", .lowerIsBetter, .timed, decimals: 4,
        display: Display("sys/msg", decimals: 2),
        meaning: "server system calls per message (the server's own counters; timed: over the probes' window, a little wider than the timed one)")
    public static let ioUringEnterPerMessage = Metric("io_uring_enter_per_msg", unit: "calls", .lowerIsBetter, .timed, decimals: 4,
        display: Display("enter/msg", decimals: 3), meaning: "server io_uring_enter calls per message")
    public static let epollWaitPerMessage = Metric("epoll_wait_per_msg", unit: "calls", .lowerIsBetter, .timed, decimals: 4,
        display: Display("epoll_wait/msg", decimals: 3), meaning: "server epoll_wait calls per message")
    public static let contextSwitchesPerMessage = Metric("ctx_switches_per_msg", unit: "switches", .lowerIsBetter, .timed, decimals: 4,
        display: Display("ctxsw/msg", decimals: 3),
        meaning: "server context switches (voluntary + involuntary, all threads) per message, over the probes' window")
    public static let serverPeakRSS = Metric("server_rss_peak_kb", unit: "KiB", .lowerIsBetter, .timed, decimals: nil,
        display: Display("peak RSS KiB", decimals: 0), meaning: "server peak resident memory (VmHWM), KiB")
    public static let serverThreadsPeak = Metric("server_threads_peak", unit: "threads", .neither, .timed, decimals: nil,
        display: Display("threads", decimals: 0), meaning: "server threads at the end of the window")
    public static let userInstructionsPerMessage = Metric("user_instructions_per_msg", unit: "instructions", .lowerIsBetter, .counted, decimals: 2,
        display: Display("instructions/msg", decimals: 1), meaning: "counted: server user-space instructions per message (callgrind Ir, every thread)")
    public static let allocationsPerMessage = Metric("allocations_per_msg", unit: "calls", .lowerIsBetter, .counted, decimals: 4,
        display: Display("allocations/msg", decimals: 3),
        meaning: "counted: server calls into the heap allocator (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign) per message")
    /// The counted method's system calls per message: the same column as the timed one, a
    /// different figure (nothing in flight at the window's edges, no batching by load).
    public static let countedSyscallsPerMessage = Metric("syscalls_per_msg", unit: "calls", .lowerIsBetter, .counted, decimals: 4,
        display: Display("syscalls/msg", decimals: 3), meaning: "counted: server system calls per message")
    public static let idleBytesPerConnection = Metric("idle_rss_bytes_per_conn", unit: "bytes", .lowerIsBetter, .idle, decimals: 1,
        display: Display("B/conn", decimals: 0), meaning: "idle workload: server RSS growth per idle connection, bytes",
        axis: ("resident memory per idle connection", "bytes"))
    public static let idleAcceptSeconds = Metric("idle_accept_s", unit: "s", .lowerIsBetter, .idle, decimals: 3,
        display: Display("accept s", decimals: 2), meaning: "idle workload: seconds until the server had accepted every connection")
}

// MARK: - The notification rows (`iobench run --pattern`)

extension Metric {
    public static let serverCPUPerEvent = Metric("server_cpu_us_per_event", unit: "µs", .lowerIsBetter, .notification, decimals: 3,
        display: Display("CPU µs/event", decimals: 2), meaning: "the server's CPU over the window (its CPU-time clock) / deliveries, microseconds")
    public static let eventLatencyP50 = Metric("latency_p50_us", unit: "µs", .lowerIsBetter, .notification, decimals: 1,
        display: Display("latency p50 ms", divisor: 1000, decimals: 2), meaning: "delivery (push), wake-or-catch-up (long poll) or notice (short poll) latency, median, microseconds")
    public static let eventLatencyP99 = Metric("latency_p99_us", unit: "µs", .lowerIsBetter, .notification, decimals: 1,
        display: Display("latency p99 ms", divisor: 1000, decimals: 2), meaning: "delivery (push), wake-or-catch-up (long poll) or notice (short poll) latency, 99th percentile, microseconds")
    public static let wireBytesPerEvent = Metric("wire_bytes_per_event", unit: "bytes", .lowerIsBetter, .notification, decimals: 1,
        display: Display("wire B/event", decimals: 0), meaning: "frame bytes both ways in the window (TCP/IP headers not counted) per delivered event")
    public static let requestsPerEvent = Metric("requests_per_event", unit: "requests", .lowerIsBetter, .notification, decimals: 3,
        display: Display("requests/event", decimals: 2), meaning: "frames the clients sent in the window (SUBSCRIBE, WAIT, SUBMIT, STATUS, PUBLISH) per delivered event")
    public static let serverBytesPerClient = Metric("server_bytes_per_client", unit: "bytes", .lowerIsBetter, .notification, decimals: 0,
        display: Display("RSS B/client", decimals: 0), meaning: "(RSS with every client in place − RSS before connecting) / clients, bytes")
    public static let broadcastP99 = Metric("broadcast_p99_us", unit: "µs", .lowerIsBetter, .notification, decimals: 1,
        display: Display("broadcast p99 ms", divisor: 1000, decimals: 2), meaning: "publish time to the last listener's receipt (broadcast completion), 99th percentile, microseconds")
    public static let wakeP99 = Metric("wake_p99_us", unit: "µs", .lowerIsBetter, .notification, decimals: 1,
        display: Display("wake p99 ms", divisor: 1000, decimals: 2), meaning: "latency of the events that woke a held WAIT (published after it was sent), 99th percentile, microseconds")
    public static let timeoutLateMax = Metric("timeout_late_max_us", unit: "µs", .lowerIsBetter, .notification, decimals: 1,
        display: Display("timeout late max ms", divisor: 1000, decimals: 2), meaning: "how long after its deadline (send time + timeout) the latest TIMEOUT arrived, microseconds")
    public static let emptyPollFraction = Metric("empty_fraction", unit: "fraction", .lowerIsBetter, .notification, decimals: 4,
        display: Display("empty polls", decimals: 3), meaning: "short polls answered with nothing new, as a fraction of all short polls")
    public static let serverRSSGrowth = Metric("server_rss_growth", unit: "bytes", .lowerIsBetter, .notification, decimals: nil,
        display: Display("RSS growth KiB", divisor: 1024, decimals: 0), meaning: "RSS at the end minus RSS with every client in place, bytes (what queues for slow clients and event logs took)")
    public static let eventsDroppedByPolicy = Metric("server_events_dropped", unit: "events", .neither, .notification, decimals: nil,
        display: Display("dropped by policy", decimals: 0), meaning: "events the slow-consumer policy dropped (the server's own counter at the end)")
    public static let notificationServerThreads = Metric("server_threads", unit: "threads", .neither, .notification, decimals: nil,
        display: Display("server threads", decimals: 0), meaning: "the server's threads at the window's end (blocking: one per client)")
}

extension Metric {
    public static let userInstructionsPerEvent = Metric("user_instructions_per_event", unit: "instructions", .lowerIsBetter, .counted, decimals: 1,
        display: Display("instructions/event", decimals: 0),
        meaning: "counted notification workloads: server user-space instructions (callgrind Ir, every thread) from the window's opening to its end, per event delivered in it")
    public static let allocationsPerEvent = Metric("allocations_per_event", unit: "calls", .lowerIsBetter, .counted, decimals: 4,
        display: Display("allocations/event", decimals: 3), meaning: "counted notification workloads: server calls into the heap allocator per delivered event")
    public static let countedSyscallsPerEvent = Metric("syscalls_per_event", unit: "calls", .lowerIsBetter, .counted, decimals: 4,
        display: Display("syscalls/event", decimals: 3), meaning: "counted notification workloads: server system calls (its own counters) per delivered event")

    /// The figures of a counted notification table, in its order.
    public static let countedNotificationTable: [Metric] = [.userInstructionsPerEvent, .allocationsPerEvent, .countedSyscallsPerEvent]

    /// The figures of the notification table (`NotificationTable.render`), in its order.
    public static let notificationTable: [Metric] = [
        .serverCPUPerEvent, .eventLatencyP50, .eventLatencyP99, .wireBytesPerEvent, .requestsPerEvent, .serverBytesPerClient,
        .broadcastP99, .wakeP99, .timeoutLateMax, .emptyPollFraction, .serverRSSGrowth, .eventsDroppedByPolicy, .notificationServerThreads,
    ]
}

extension ResultRow {
    /// The metric's value as written in the CSV.
    public subscript(metric: Metric) -> String? {
        get { values[metric.column] }
        set { values[metric.column] = newValue }
    }

    public func double(_ metric: Metric) -> Double? { double(metric.column) }

    /// Writes `value` as the registry says (its decimals; "" when not finite).
    public mutating func set(_ metric: Metric, _ value: Double) { values[metric.column] = metric.csv(value) }
}
