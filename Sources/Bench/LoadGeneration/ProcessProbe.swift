import ResultAnalysis
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads a process's resource use from `/proc/<pid>`: what the server spends, measured from
/// outside the server.
public struct ProcessProbe: Sendable {
    public let pid: Int32

    public init(pid: Int32) { self.pid = pid }

    public struct Sample: Sendable {
        /// User plus system CPU time, in seconds.
        public var cpuSeconds: Double
        /// Voluntary plus involuntary context switches per live thread (by thread id).
        public var contextSwitchesByThread: [Int: UInt64]
        public var residentBytes: Int
        public var peakResidentBytes: Int
        public var threads: Int
    }

    /// Context switches between two samples: threads alive at the end count from their value
    /// at the start (or from zero if they started since); threads that ended are not seen.
    public static func contextSwitches(from start: Sample, to end: Sample) -> UInt64 {
        end.contextSwitchesByThread.reduce(0) { total, entry in
            let before = start.contextSwitchesByThread[entry.key] ?? 0
            return total + (entry.value >= before ? entry.value - before : 0)
        }
    }

    /// The process's CPU time (user + system, every thread, ended ones included) in
    /// nanoseconds, from its CPU-time clock: one system call, exact, no clock-tick rounding, so
    /// it can be read at the very instants a measured window opens and closes. Nil when the
    /// process is gone.
    public func cpuNanoseconds() -> UInt64? {
        var clock = clockid_t()
        guard clock_getcpuclockid(pid, &clock) == 0 else { return nil }
        var now = timespec()
        guard clock_gettime(clock, &now) == 0 else { return nil }
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    public func sample() -> Sample? {
        guard let stat = Self.read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // Fields after the command: state is field 3, so utime (14) and stime (15) sit at 11 and 12.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        var sample = Sample(cpuSeconds: (user + system) / ticks, contextSwitchesByThread: [:], residentBytes: 0, peakResidentBytes: 0, threads: 0)
        if let status = Self.read("/proc/\(pid)/status") {
            sample.residentBytes = Self.field(status, "VmRSS:") * 1024
            sample.peakResidentBytes = Self.field(status, "VmHWM:") * 1024
            sample.threads = Self.field(status, "Threads:")
        }
        if let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") {
            for task in tasks {
                guard let tid = Int(task), let status = Self.read("/proc/\(pid)/task/\(task)/status") else { continue }
                sample.contextSwitchesByThread[tid] = UInt64(Self.field(status, "voluntary_ctxt_switches:") + Self.field(status, "nonvoluntary_ctxt_switches:"))
            }
        }
        return sample
    }

    package static func read(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    static func field(_ text: String, _ name: String) -> Int {
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            // "VmRSS:\t   1234 kB": the value is the first run of non-blank characters.
            return Int(line.dropFirst(name.count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "") ?? 0
        }
        return 0
    }
}
