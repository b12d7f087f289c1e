import Backends
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A column of a result CSV: a dimension of the cell or a metric.
public struct Column: Sendable {
    public let name: String
    public let meaning: String
    public let metric: Metric?

    public static func dimension(_ name: String, _ meaning: String) -> Column { Column(name: name, meaning: meaning, metric: nil) }
    public static func metric(_ metric: Metric) -> Column { Column(name: metric.column, meaning: metric.meaning, metric: metric) }
}

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

    /// The columns of the echo and rpc CSV, in order: what a row describes (its cell, the
    /// machine and build) and the metrics of the registry (`Metric`), which carry their unit,
    /// polarity and meaning.
    public static let schema: [Column] = [
        .dimension("run_id", "identifies one invocation of the tool; rows of one run share it"),
        .dimension("timestamp", "when the cell finished, ISO 8601 UTC"),
        .dimension("host", "machine host name"),
        .dimension("kernel", "kernel release (uname -r)"),
        .dimension("cpu_model", "CPU model from /proc/cpuinfo"),
        .dimension("cores", "online CPUs"),
        .dimension("swift_version", "Swift compiler that built iobench"),
        .dimension("liburing_version", "liburing version (pkg-config)"),
        .dimension("git_commit", "iobench commit the measured server binary was built from"),
        .dimension("git_dirty", "yes when the binary's sources (Sources/, Package.swift, Package.resolved) differed from that commit"),
        .dimension("build_config", "release or debug: how the binary was built"),
        .dimension("command", "the command line that produced the row"),
        .dimension("workload", "echo or rpc (load run: the pattern served and driven) or idle (idle connections held open)"),
        .dimension("method", "timed (wall clock and CPU time under load) or counted (the server under callgrind; instructions, allocations and system calls over a window with nothing in flight at its edges)"),
        .dimension("backend", "\(Backends.kinds.map(\.rawValue).joined(separator: ", ")), or the name of a --variant or an --external server"),
        .dimension("server_threads", "event loops of the server (--threads); blocking: 1 acceptor plus one thread per connection"),
        .dimension("server_cpus", "CPUs the server was pinned to"),
        .dimension("client_cpus", "CPUs the load generator was pinned to"),
        .dimension("connections", "concurrent connections"),
        .dimension("idle_beside", "idle connections held open to the server during the cell beside the active ones (--idle-beside); empty for none"),
        .dimension("size_bytes", "bytes per message (rpc: payload bytes per request; a request adds 17 bytes of framing, a response 13)"),
        .dimension("work_us", "rpc: microseconds of server CPU work each request asked for"),
        .dimension("depth", "messages in flight per connection (closed loop); empty for open loop"),
        .dimension("rate_msgs_per_s", "open loop: scheduled messages per second in total; empty for closed loop"),
        .dimension("repetition", "repetition number, from 1"),
        .dimension("duration_s", "length of the measured window in seconds"),
        .dimension("warmup_s", "warm-up before the window, seconds"),
        .dimension("messages", "messages echoed and verified within the window"),
        .dimension("incomplete", "open loop: messages due within the window whose echo had not come back when it closed (in the latencies at window end minus scheduled time)"),
        .metric(.messagesPerSecond),
        .metric(.megabytesPerSecond),
        .metric(.latencyP50),
        .metric(.latencyP90),
        .metric(.latencyP99),
        .metric(.latencyP999),
        .metric(.latencyP9999),
        .metric(.latencyMax),
        .metric(.uncorrectedP99),
        .metric(.sendLagP99),
        .metric(.sendLagMax),
        .metric(.errors),
        .metric(.serverCPUPerMessage),
        .metric(.serverCPUUtilisation),
        .metric(.generatorCPUPerMessage),
        .metric(.generatorCPUUtilisation),
        .metric(.syscallsPerMessage),
        .metric(.ioUringEnterPerMessage),
        .metric(.epollWaitPerMessage),
        .metric(.contextSwitchesPerMessage),
        .metric(.serverPeakRSS),
        .metric(.serverThreadsPeak),
        .dimension("bottleneck", "server, generator or neither: which side was saturated (>= 85% of its CPUs)"),
        .metric(.userInstructionsPerMessage),
        .metric(.allocationsPerMessage),
        .dimension("valid", "yes, or why the window cannot be trusted (server CPU above its pinned CPUs by more than 2%, or a window more than 5% over its plan) after the retries"),
        .metric(.idleBytesPerConnection),
        .metric(.idleAcceptSeconds),
    ]

    public static var columns: [(name: String, meaning: String)] { schema.map { ($0.name, $0.meaning) } }


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
        var text = header(columns)
        for row in rows { text += line(row, columns: columns) }
        return text
    }

    /// The header line.
    public static func header(_ columns: [String]) -> String { columns.map(quote).joined(separator: ",") + "\n" }

    /// One row's line, its fields in `columns`' order.
    public static func line(_ row: ResultRow, columns: [String]) -> String {
        columns.map { quote(row[$0] ?? "") }.joined(separator: ",") + "\n"
    }

    package static func quote(_ field: String) -> String {
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

/// A results file written row by row: the header when it is opened, then each row as it is
/// measured, so that the file is a valid CSV after every row (a run stopped half-way keeps
/// what it measured). Opening it makes its folder and fails, in one sentence, before anything
/// is measured.
public final class CSVAppender {
    public let path: String
    public let columns: [String]
    private let handle: FileHandle
    public private(set) var rowsWritten = 0

    public struct Unwritable: Error, CustomStringConvertible {
        public let description: String
    }

    public init(path: String, columns: [String]) throws(Unwritable) {
        self.path = path
        self.columns = columns
        let url = URL(fileURLWithPath: path)
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        } catch {
            throw Unwritable(description: "cannot make the folder \(url.deletingLastPathComponent().path) for \(path): \(Self.reason(error))")
        }
        guard FileManager.default.createFile(atPath: path, contents: Data(CSV.header(columns).utf8)),
              let handle = FileHandle(forWritingAtPath: path) else {
            throw Unwritable(description: "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        handle.seekToEndOfFile()
        self.handle = handle
    }

    /// Appends one row (and flushes it to the file).
    public func append(_ row: ResultRow) throws(Unwritable) {
        do {
            try handle.write(contentsOf: Data(CSV.line(row, columns: columns).utf8))
            try handle.synchronize()
        } catch {
            throw Unwritable(description: "cannot write \(path): \(Self.reason(error))")
        }
        rowsWritten += 1
    }

    deinit { try? handle.close() }

    /// The underlying reason, without Foundation's error domain and user info.
    public static func reason(_ error: any Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
        return ns.localizedDescription
    }
}

extension CSVAppender.Unwritable: HarnessError {}
