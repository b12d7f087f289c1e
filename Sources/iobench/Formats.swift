import ArgumentParser
import BenchRunner
import LoadGeneration
import ResultAnalysis
import ResultReporting
import ServerKit
import Protocols
import BackendKit
#if canImport(Glibc)
import Glibc
#endif

/// How a command prints its results.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, csv, json
}

/// Parses a size with units (`64`, `4k`, `1m`) for ArgumentParser.
struct ByteSize: ExpressibleByArgument {
    let bytes: Int
    init?(argument: String) {
        guard let value = try? Units.parseByteCount(argument) else { return nil }
        bytes = value
    }
    init(_ bytes: Int) { self.bytes = bytes }
    var defaultValueDescription: String { "\(bytes)" }
}

/// Parses a duration with units (`500ms`, `10s`) for ArgumentParser.
struct Duration: ExpressibleByArgument {
    let seconds: Double
    init?(argument: String) {
        guard let value = try? Units.parseDuration(argument) else { return nil }
        seconds = value
    }
    init(_ seconds: Double) { self.seconds = seconds }
    var defaultValueDescription: String { seconds < 1 ? "\(Int((seconds * 1000).rounded()))ms" : String(format: "%gs", seconds) }
}

/// A comma-separated list parsed element by element (`1,16,128` or `64,4k`).
struct ListOf<Element: ExpressibleByArgument>: ExpressibleByArgument {
    let values: [Element]
    init?(argument: String) {
        var values: [Element] = []
        for part in argument.split(separator: ",") {
            guard let value = Element(argument: String(part)) else { return nil }
            values.append(value)
        }
        guard !values.isEmpty else { return nil }
        self.values = values
    }
    init(_ values: [Element]) { self.values = values }

    /// As it is typed: the values, comma-separated (what `--help` shows as the default).
    var defaultValueDescription: String { values.map { "\($0)" }.joined(separator: ",") }
}

struct CPUList: ExpressibleByArgument {
    let cpus: [Int]
    init?(argument: String) {
        guard let cpus = try? Units.parseCPUList(argument) else { return nil }
        self.cpus = cpus
    }
    init(_ cpus: [Int]) { self.cpus = cpus }
    var text: String { cpus.map(String.init).joined(separator: ",") }
    var defaultValueDescription: String { text }
}

/// A progress line on stderr, redrawn in place; silent when stderr is not a terminal or --quiet.
final class ProgressLine {
    private let enabled: Bool
    private var width = 0

    init(quiet: Bool) { enabled = !quiet && isatty(2) == 1 }

    func show(_ text: String) {
        guard enabled else { return }
        let padded = text.count < width ? text + String(repeating: " ", count: width - text.count) : text
        width = text.count
        reportErrorRaw("\r" + padded)
    }

    func clear() {
        guard enabled, width > 0 else { return }
        reportErrorRaw("\r" + String(repeating: " ", count: width) + "\r")
        width = 0
    }

    private func reportErrorRaw(_ text: String) {
        var copy = text
        copy.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
    }
}

/// `iobench run`'s progress. On a terminal: a bar redrawn in place with the cell (which
/// includes its repetition), its live figures and an estimate of the time left. Redirected: one
/// plain line per cell, so a CI log shows where a run is. Nothing with --quiet.
final class RunProgress {
    enum Mode: Equatable { case bar, lines, silent }
    let mode: Mode
    private let line: ProgressLine
    private let planned: Double
    private let started = ContinuousClock.now
    private var cellStart = ContinuousClock.now
    private var index = 0, total = 0
    private var description = ""

    /// - Parameter plannedSecondsPerCell: what a cell should take, for the estimate before the
    ///   first one has finished (starting a server adds about half a second).
    init(quiet: Bool, plannedSecondsPerCell: Double, terminal: Bool = isatty(2) == 1) {
        mode = quiet ? .silent : terminal ? .bar : .lines
        line = ProgressLine(quiet: mode != .bar)
        planned = plannedSecondsPerCell + 0.5
    }

    static func seconds(_ d: Swift.Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// Seconds left: the mean time of the finished cells (or the plan) for each one to go,
    /// less the time already spent in the current one.
    static func remaining(elapsed: Double, finished: Int, total: Int, planned: Double, intoCurrent: Double) -> Double {
        let perCell = finished > 0 ? elapsed / Double(finished) : planned
        return max(0, perCell * Double(total - finished) - intoCurrent)
    }

    /// `42s`, `3m05s`, `1h02m`.
    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s)s" }
        if s < 3600 { return String(format: "%dm%02ds", s / 60, s % 60) }
        return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60)
    }

    static func bar(_ fraction: Double, width: Int = 20) -> String {
        let filled = max(0, min(width, Int((fraction * Double(width)).rounded(.down))))
        return "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "]"
    }

    private var eta: String {
        let now = ContinuousClock.now
        let left = RunProgress.remaining(elapsed: RunProgress.seconds(cellStart - started), finished: index - 1, total: total,
                                         planned: planned, intoCurrent: RunProgress.seconds(now - cellStart))
        return "ETA " + RunProgress.clock(left)
    }

    func cellStarted(_ index: Int, _ total: Int, _ description: String) {
        self.index = index
        self.total = total
        self.description = description
        cellStart = ContinuousClock.now
        switch mode {
        case .silent: return
        case .lines: printError("iobench: [\(index)/\(total)] \(description) (\(eta))")
        case .bar: redraw(nil)
        }
    }

    /// A live figure of the current cell (the window's progress, messages per second).
    func status(_ text: String) {
        guard mode == .bar else { return }
        // The runners' lines start with the cell ("[3/48] epoll …: 0.4/1.5 s, 98k msgs/s"): keep what follows.
        let detail = text.range(of: ": ").map { String(text[$0.upperBound...]) }
        redraw(detail)
    }

    private func redraw(_ detail: String?) {
        guard total > 0 else { return }
        var text = "\(RunProgress.bar(Double(index - 1) / Double(total))) \(index)/\(total) \(description)"
        if let detail { text += " · " + detail }
        text += " · " + eta
        line.show(ProgressLine.fit(text))
    }

    func finish() {
        line.clear()
        if mode == .lines, total > 0 {
            printError("iobench: \(total) cells in \(RunProgress.clock(RunProgress.seconds(ContinuousClock.now - started)))")
        }
    }
}

extension ProgressLine {
    /// Cut to the terminal's width, so a redraw never wraps onto a second line.
    static func fit(_ text: String) -> String {
        var size = winsize()
        let columns = ioctl(2, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0 ? Int(size.ws_col) : 120
        return text.count < columns ? text : String(text.prefix(columns - 2)) + "…"
    }
}
