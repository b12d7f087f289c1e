import ServerKit

/// Parsing of the quantities users type: sizes (`64`, `4k`, `1m`) and durations (`500ms`, `10s`).
public enum Units {
    /// Bytes: a whole number with an optional binary suffix k, m or g (case-insensitive, optional
    /// trailing `b` or `ib`: `4k`, `4KiB`, `1M`).
    public static func parseByteCount(_ text: String) throws(UsageError) -> Int {
        var body = text.lowercased().trimmingSpaces()
        for suffix in ["ib", "b"] where body.hasSuffix(suffix) && body.count > suffix.count {
            let stripped = String(body.dropLast(suffix.count))
            if stripped.last.map({ "kmg".contains($0) }) == true || suffix == "b" { body = stripped; break }
        }
        var multiplier = 1
        switch body.last {
        case "k": multiplier = 1 << 10
        case "m": multiplier = 1 << 20
        case "g": multiplier = 1 << 30
        default: break
        }
        if multiplier != 1 { body.removeLast() }
        guard let value = Int(body), value >= 0 else {
            throw UsageError("size '\(text)' is not a size: use a whole number of bytes with an optional k, m or g suffix, for example 64, 4k or 1m")
        }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        guard !overflow else { throw UsageError("size '\(text)' is too large") }
        return product
    }

    /// Seconds: a number with a unit `ns`, `us`, `ms`, `s`, `m` or `h`; a bare number is seconds.
    public static func parseDuration(_ text: String) throws(UsageError) -> Double {
        let body = text.lowercased().trimmingSpaces()
        let units: [(String, Double)] = [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where body.hasSuffix(suffix) {
            if let value = Double(body.dropLast(suffix.count)), value >= 0, value.isFinite { return value * scale }
            break
        }
        if let value = Double(body), value >= 0, value.isFinite { return value }
        throw UsageError("duration '\(text)' is not a duration: use a number with a unit, for example 500ms, 10s or 2m")
    }

    /// A comma-separated list of CPU numbers or ranges: `0`, `0,1`, `2-3`.
    public static func parseCPUList(_ text: String) throws(UsageError) -> [Int] {
        var cpus: [Int] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            if bounds.count == 1, let cpu = Int(bounds[0]), cpu >= 0 {
                cpus.append(cpu)
            } else if bounds.count == 2, let low = Int(bounds[0]), let high = Int(bounds[1]), low >= 0, low <= high {
                cpus.append(contentsOf: low...high)
            } else {
                throw UsageError("CPU list '\(text)' is not valid: use numbers and ranges such as 0, 0,1 or 2-3")
            }
        }
        return cpus
    }
}

extension String {
    func trimmingSpaces() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
