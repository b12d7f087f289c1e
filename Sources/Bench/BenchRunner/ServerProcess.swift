import ResultReporting
import LoadGeneration
import ResultAnalysis
import ServerKit
import Protocols
import BackendKit
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A server run as a child process (`iobench serve …` or anything that prints the same
/// listening line), talked to over its stdin/stdout control channel. The harness never
/// measures a server inside its own process.
public final class ServerProcess {
    public enum Failure: Error, CustomStringConvertible {
        case didNotStart(String)
        case noAnswer(String)

        public var description: String {
            switch self {
            case .didNotStart(let why): why
            case .noAnswer(let why): why
            }
        }
    }

    public let process: Process
    public let pid: Int32
    /// The address from the listening line.
    public let address: SocketAddress
    /// The whole listening line, for example `listening on 127.0.0.1:7000 backend=epoll threads=1 pid=42`.
    public let listeningLine: String
    private let input: FileHandle
    private let output: LineReader
    private let errorOutput: Pipe

    /// Starts `executable arguments…` and waits (bounded) for its listening line.
    public init(executable: String, arguments: [String], startupTimeout: Double = 10) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let stdinPipe = Pipe(), stdoutPipe = Pipe()
        errorOutput = Pipe()
        process.standardInput = stdinPipe
        process.standardOutput = stdoutPipe
        process.standardError = errorOutput
        try process.run()
        pid = process.processIdentifier
        input = stdinPipe.fileHandleForWriting
        output = LineReader(fd: stdoutPipe.fileHandleForReading.fileDescriptor)
        var line: String?
        var problem: String?
        if let first = output.readLine(timeout: startupTimeout) {
            line = first
        } else {
            problem = "no listening line within \(startupTimeout) s"
        }
        guard let line, line.hasPrefix("listening on "),
              let addressText = line.split(separator: " ").dropFirst(2).first,
              let address = try? SocketAddress(parsing: String(addressText)) else {
            // Bounded: a server under valgrind may ignore SIGTERM.
            if process.isRunning { process.terminate() }
            let deadline = ProcessResources.monotonicNanoseconds() + 5_000_000_000
            while process.isRunning && ProcessResources.monotonicNanoseconds() < deadline { usleep(2000) }
            if process.isRunning { kill(pid, SIGKILL) }
            process.waitUntilExit()
            let stderrText = String(decoding: errorOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw Failure.didNotStart("\(executable) \(arguments.joined(separator: " ")) did not start: \(problem ?? line ?? "") \(stderrText)".trimmingCharacters(in: .whitespacesAndNewlines))
        }
        self.listeningLine = line
        self.address = address
    }

    /// Asks for counters (`stats`) and returns the server's stats line.
    public func stats(timeout: Double = 5) throws -> StatsLine {
        try send("stats")
        guard let line = output.readLine(timeout: timeout) else {
            throw Failure.noAnswer("the server (pid \(pid)) did not answer 'stats' within \(timeout) s")
        }
        guard let stats = StatsLine(json: line) else {
            throw Failure.noAnswer("the server (pid \(pid)) answered 'stats' with something else: \(line)")
        }
        return stats
    }

    public func send(_ command: String) throws {
        try input.write(contentsOf: Data((command + "\n").utf8))
    }

    /// What stopping produced.
    public struct Stopped {
        public let finalStats: StatsLine?
        public let exitStatus: Int32
        public let seconds: Double
        public let standardError: String
    }

    /// Stops the server with `signal` (default SIGTERM) and waits, bounded, for it to exit;
    /// kills it if it does not.
    @discardableResult
    public func stop(signal: Int32 = SIGTERM, timeout: Double = 10) -> Stopped {
        let started = ProcessResources.monotonicNanoseconds()
        if process.isRunning { kill(pid, signal) }
        var final: StatsLine?
        while let line = output.readLine(timeout: timeout) {
            if let stats = StatsLine(json: line), stats.final == true { final = stats; break }
        }
        let deadline = started + UInt64(timeout * 1e9)
        while process.isRunning && ProcessResources.monotonicNanoseconds() < deadline { usleep(1000) }
        let seconds = Double(ProcessResources.monotonicNanoseconds() - started) / 1e9
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
        let stderrText = String(decoding: errorOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return Stopped(finalStats: final, exitStatus: process.terminationStatus, seconds: seconds, standardError: stderrText)
    }

    /// Stops a server running under valgrind, which may not act on SIGTERM: `quit` on its
    /// control channel, then SIGKILL if it has not exited within `timeout` seconds.
    @discardableResult
    public func stopUnderValgrind(timeout: Double = 10) -> Stopped {
        try? send("quit")  // a server that has already gone cannot be asked; the kill below still runs
        let deadline = ProcessResources.monotonicNanoseconds() + UInt64(timeout * 1e9)
        while process.isRunning && ProcessResources.monotonicNanoseconds() < deadline { usleep(2000) }
        return stop(signal: SIGKILL, timeout: 2)
    }

    deinit {
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// A parsed one-line JSON object (not Sendable: its values are `Any`; parse it where it is read).
public struct JSONObject {
    public let dictionary: [String: Any]

    public init?(line: String) {
        guard let data = line.data(using: .utf8),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        dictionary = object
    }

    init(_ dictionary: [String: Any]) { self.dictionary = dictionary }

    public subscript(key: String) -> Any? { dictionary[key] }

    public func int(_ key: String) -> Int? { (dictionary[key] as? NSNumber)?.intValue }
    public func double(_ key: String) -> Double? { (dictionary[key] as? NSNumber)?.doubleValue }
    public func string(_ key: String) -> String? { dictionary[key] as? String }
    public func object(_ key: String) -> JSONObject? { (dictionary[key] as? [String: Any]).map(JSONObject.init) }
}

/// Reads lines from a descriptor with a timeout per line.
final class LineReader {
    private let fd: Int32
    private var buffer: [UInt8] = []

    init(fd: Int32) { self.fd = fd }

    func readLine(timeout: Double) -> String? {
        let deadline = ProcessResources.monotonicNanoseconds() + UInt64(timeout * 1e9)
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            let now = ProcessResources.monotonicNanoseconds()
            guard now < deadline else { return nil }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, Int32((deadline - now) / 1_000_000) + 1)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { return nil }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return nil }
            buffer.append(contentsOf: chunk[..<n])
        }
    }
}

extension ServerProcess.Failure: HarnessError {}
