import ArgumentParser
import Bench
import EchoCore
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
    var defaultValueDescription: String { seconds < 1 ? "\(Int(seconds * 1000))ms" : "\(seconds)s" }
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
}

struct CPUList: ExpressibleByArgument {
    let cpus: [Int]
    init?(argument: String) {
        guard let cpus = try? Units.parseCPUList(argument) else { return nil }
        self.cpus = cpus
    }
    init(_ cpus: [Int]) { self.cpus = cpus }
    var text: String { cpus.map(String.init).joined(separator: ",") }
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
