import Backends
import Foundation

/// One row of a results CSV: one cell (backend × connections × size × depth or rate) of one
/// repetition. Values are kept as the text written, so a CSV reads back exactly.
public struct ResultRow: Sendable, Equatable {
    public var values: [String: String]

    public init(_ values: [String: String] = [:]) { self.values = values }

    public subscript(column: String) -> String? {
        get { values[column] }
        set { values[column] = newValue }
    }

    public func double(_ column: String) -> Double? { values[column].flatMap { Double($0) } }
    public func int(_ column: String) -> Int? { values[column].flatMap { Int($0) } }

    /// Every column, in file order, with its meaning (results/README.md is generated from this).
    public static let columns: [(name: String, meaning: String)] = [
        ("run_id", "identifies one invocation of the tool; rows of one run share it"),
        ("timestamp", "when the cell finished, ISO 8601 UTC"),
        ("host", "machine host name"),
        ("kernel", "kernel release (uname -r)"),
        ("cpu_model", "CPU model from /proc/cpuinfo"),
        ("cores", "online CPUs"),
        ("swift_version", "Swift compiler that built iobench"),
        ("liburing_version", "liburing version (pkg-config)"),
        ("git_commit", "iobench commit the measured server binary was built from"),
        ("git_dirty", "yes when the binary's sources (Sources/, Package.swift, Package.resolved) differed from that commit"),
        ("build_config", "release or debug: how the binary was built"),
        ("command", "the command line that produced the row"),
        ("workload", "echo or rpc (load run: the pattern served and driven) or idle (idle connections held open)"),
        ("method", "timed (wall clock and CPU time under load) or counted (the server under callgrind; instructions, allocations and system calls over a window with nothing in flight at its edges)"),
        ("backend", "\(Backends.kinds.map(\.rawValue).joined(separator: ", ")), or the name of a --variant or an --external server"),
        ("server_threads", "event loops of the server (--threads); blocking: 1 acceptor plus one thread per connection"),
        ("server_cpus", "CPUs the server was pinned to"),
        ("client_cpus", "CPUs the load generator was pinned to"),
        ("connections", "concurrent connections"),
        ("idle_beside", "idle connections held open to the server during the cell beside the active ones (--idle-beside); empty for none"),
        ("size_bytes", "bytes per message (rpc: payload bytes per request; a request adds 17 bytes of framing, a response 13)"),
        ("work_us", "rpc: microseconds of server CPU work each request asked for"),
        ("depth", "messages in flight per connection (closed loop); empty for open loop"),
        ("rate_msgs_per_s", "open loop: scheduled messages per second in total; empty for closed loop"),
        ("repetition", "repetition number, from 1"),
        ("duration_s", "length of the measured window in seconds"),
        ("warmup_s", "warm-up before the window, seconds"),
        ("messages", "messages echoed and verified within the window"),
        ("incomplete", "open loop: messages due within the window whose echo had not come back when it closed (in the latencies at window end minus scheduled time)"),
        ("msgs_per_s", "messages per second"),
        ("mb_per_s", "payload megabytes (10^6 B) echoed per second, one direction"),
        ("p50_us", "latency median, microseconds (open loop: from the scheduled send time)"),
        ("p90_us", "latency 90th percentile, microseconds"),
        ("p99_us", "latency 99th percentile, microseconds"),
        ("p999_us", "latency 99.9th percentile, microseconds"),
        ("p9999_us", "latency 99.99th percentile, microseconds"),
        ("max_us", "largest latency, microseconds"),
        ("uncorrected_p99_us", "open loop: 99th percentile from the actual send time (coordinated omission not corrected)"),
        ("send_lag_p99_us", "open loop: 99th percentile of how late messages left against their schedule"),
        ("send_lag_max_us", "open loop: largest send lag"),
        ("errors", "verification failures, lost connections and bytes that never came back after the window (a run with errors failed)"),
        ("server_cpu_us_per_msg", "server CPU time (user + system, all threads, from its CPU-time clock read at the window's edges) per message, microseconds"),
        ("server_cpu_util", "server CPU time / wall time (1.0 = one core busy)"),
        ("generator_cpu_us_per_msg", "load generator CPU time per message, microseconds"),
        ("generator_cpu_util", "generator CPU time / (wall time × generator threads)"),
        ("syscalls_per_msg", "server system calls per message (the server's own counters; timed: over the probes' window, a little wider than the timed one)"),
        ("io_uring_enter_per_msg", "server io_uring_enter calls per message"),
        ("epoll_wait_per_msg", "server epoll_wait calls per message"),
        ("ctx_switches_per_msg", "server context switches (voluntary + involuntary, all threads) per message, over the probes' window"),
        ("server_rss_peak_kb", "server peak resident memory (VmHWM), KiB"),
        ("server_threads_peak", "server threads at the end of the window"),
        ("bottleneck", "server, generator or neither: which side was saturated (>= 85% of its CPUs)"),
        ("user_instructions_per_msg", "counted: server user-space instructions per message (callgrind Ir, every thread)"),
        ("allocations_per_msg", "counted: server calls into the heap allocator (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign) per message"),
        ("valid", "yes, or why the window cannot be trusted (server CPU above its pinned CPUs by more than 2%, or a window more than 5% over its plan) after the retries"),
        ("idle_rss_bytes_per_conn", "idle workload: server RSS growth per idle connection, bytes"),
        ("idle_accept_s", "idle workload: seconds until the server had accepted every connection"),
    ]

    public static var columnNames: [String] { columns.map(\.name) }

    /// The cell this row belongs to, without backend, server threads and repetition.
    public var cellKey: String {
        let method = values["method"].flatMap { $0.isEmpty ? nil : $0 } ?? "timed"
        return [method, values["workload"], values["connections"], values["size_bytes"], values["depth"], values["rate_msgs_per_s"], values["work_us"]]
            .map { $0 ?? "" }.joined(separator: "|")
    }

    /// The server a row measured: the backend, with its loop count when it is not 1
    /// (`epoll ×2`), so runs with different `--server-threads` stay apart in one table.
    public var serverLabel: String {
        let backend = values["backend"] ?? ""
        guard let threads = values["server_threads"], !threads.isEmpty, threads != "1" else { return backend }
        return "\(backend) ×\(threads)"
    }
}

/// CSV in RFC 4180 form: a header row, fields quoted when they hold commas, quotes or newlines.
public enum CSV {
    public static func write(_ rows: [ResultRow], columns: [String] = ResultRow.columnNames) -> String {
        var text = columns.map(quote).joined(separator: ",") + "\n"
        for row in rows {
            text += columns.map { quote(row[$0] ?? "") }.joined(separator: ",") + "\n"
        }
        return text
    }

    static func quote(_ field: String) -> String {
        guard field.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return field }
        return "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Reads rows back; columns the file lacks are absent from the rows.
    public static func read(_ text: String) throws -> [ResultRow] {
        var records: [[String]] = []
        var record: [String] = []
        var field = ""
        var quoted = false
        var iterator = Array(text.unicodeScalars).makeIterator()
        var pending: Unicode.Scalar? = nil
        func next() -> Unicode.Scalar? {
            if let p = pending { pending = nil; return p }
            return iterator.next()
        }
        while let c = next() {
            if quoted {
                if c == "\"" {
                    if let following = next() {
                        if following == "\"" { field.unicodeScalars.append("\"") } else { quoted = false; pending = following }
                    } else { quoted = false }
                } else {
                    field.unicodeScalars.append(c)
                }
            } else if c == "\"" && field.isEmpty {
                quoted = true
            } else if c == "," {
                record.append(field); field = ""
            } else if c == "\n" {
                record.append(field); field = ""
                records.append(record); record = []
            } else if c != "\r" {
                field.unicodeScalars.append(c)
            }
        }
        if quoted { throw ParseError(description: "the CSV ends inside a quoted field") }
        if !field.isEmpty || !record.isEmpty { record.append(field); records.append(record) }
        guard let header = records.first else { throw ParseError(description: "the CSV is empty: no header row") }
        return try records.dropFirst().enumerated().map { index, fields in
            guard fields.count == header.count else {
                throw ParseError(description: "row \(index + 2) has \(fields.count) fields but the header has \(header.count)")
            }
            return ResultRow(Dictionary(uniqueKeysWithValues: zip(header, fields)))
        }
    }
}

/// Rows whose server CPU is physically impossible: more than the CPUs it was pinned to. Such a
/// figure is a harness bug (a CPU window that was not the message window), never noise.
public enum WindowAudit {
    /// The CPU-derived figures a bad window makes meaningless.
    public static let cpuColumns = ["server_cpu_us_per_msg", "server_cpu_util", "bottleneck"]

    /// CPUs in `server_cpus` ("0", "0 1", "0,2", "0-3").
    public static func pinnedCPUs(_ row: ResultRow) -> Int? {
        guard let text = row["server_cpus"], !text.isEmpty else { return nil }
        var count = 0
        for part in text.split(whereSeparator: { $0 == " " || $0 == "," || $0 == ";" }) {
            let bounds = part.split(separator: "-").compactMap { Int($0) }
            guard let low = bounds.first, let high = bounds.last, high >= low else { return nil }
            count += high - low + 1
        }
        return count
    }

    /// Why the row's server CPU cannot be right, or nil. `slack` 1.02 allows 2% over.
    public static func impossibleCPU(_ row: ResultRow, slack: Double = 1.0) -> String? {
        guard let util = row.double("server_cpu_util"), let cpus = pinnedCPUs(row), util > Double(cpus) * slack else { return nil }
        return "the server used \(fixed(util, 3)) CPUs but was pinned to \(cpus)"
    }

    /// Blanks the CPU-derived figures of an impossible row and says why in `valid`.
    public static func withdraw(_ row: inout ResultRow, because reason: String) {
        for column in cpuColumns { row[column] = "" }
        row["valid"] = "withdrawn by iobench audit: \(reason)"
    }
}
