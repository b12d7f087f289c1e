import Foundation

/// A figure with a confidence interval, and the confidence the interval really has.
public struct Estimate: Sendable, Equatable {
    public var value: Double
    public var low: Double
    public var high: Double
    /// The interval's coverage, 0.95 when the sample is large enough for it.
    public var confidence: Double
    public var count: Int

    /// "1.07 [1.02, 1.12]", with the coverage named when it is not 95%.
    public func formatted(_ decimals: Int = 2) -> String {
        let f = { (x: Double) in String(format: "%.\(decimals)f", x) }
        guard count > 1 else { return f(value) }
        let label = confidence >= 0.949 ? "" : " \(Int((confidence * 100).rounded(.down)))%"
        return "\(f(value)) [\(f(low)), \(f(high))]\(label)"
    }
}

/// Small-sample statistics for repetitions: medians with distribution-free intervals, and
/// paired ratios with t-intervals on their logarithms.
public enum Statistics {
    public static func median(_ values: [Double]) -> Double? {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return nil }
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }

    /// The median with a distribution-free interval from order statistics: the widest
    /// symmetric pair (k-th smallest, k-th largest) whose binomial coverage is at least 95%.
    /// Below six values no pair reaches 95%: the interval is min–max, with its real coverage
    /// (1 − 2^(1−n): 75% for 3 values, 94% for 5).
    public static func medianInterval(_ values: [Double]) -> Estimate? {
        let sorted = values.sorted()
        guard let m = median(sorted) else { return nil }
        let n = sorted.count
        guard n > 1 else { return Estimate(value: m, low: m, high: m, confidence: 0, count: n) }
        // Coverage of [x(k), x(n+1-k)] is 1 − 2·P(Binomial(n, ½) < k).
        var best = (k: 1, coverage: coverage(n: n, k: 1))
        var k = 2
        while k <= n / 2 {
            let c = coverage(n: n, k: k)
            if c < 0.95 { break }
            best = (k, c)
            k += 1
        }
        return Estimate(value: m, low: sorted[best.k - 1], high: sorted[n - best.k], confidence: best.coverage, count: n)
    }

    package static func coverage(n: Int, k: Int) -> Double {
        var below = 0.0
        for i in 0..<k { below += binomial(n, i) }
        return 1 - 2 * below / pow(2, Double(n))
    }

    package static func binomial(_ n: Int, _ k: Int) -> Double {
        var result = 1.0
        for i in 0..<k { result = result * Double(n - i) / Double(i + 1) }
        return result
    }

    /// The geometric mean of positive ratios with a 95% t-interval on their logarithms: the
    /// interval for "how many times larger", which is what a paired A/B comparison asks.
    public static func ratioInterval(_ ratios: [Double]) -> Estimate? {
        let logs = ratios.filter { $0 > 0 && $0.isFinite }.map { Foundation.log($0) }
        let n = logs.count
        guard n > 0 else { return nil }
        let mean = logs.reduce(0, +) / Double(n)
        guard n > 1 else { return Estimate(value: exp(mean), low: exp(mean), high: exp(mean), confidence: 0, count: 1) }
        let variance = logs.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n - 1)
        let half = tQuantile975(degreesOfFreedom: n - 1) * (variance / Double(n)).squareRoot()
        return Estimate(value: exp(mean), low: exp(mean - half), high: exp(mean + half), confidence: 0.95, count: n)
    }

    /// The 97.5th percentile of Student's t (two-sided 95%).
    package static func tQuantile975(degreesOfFreedom df: Int) -> Double {
        let table: [Double] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                               2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                               2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
        if df >= 1 && df <= table.count { return table[df - 1] }
        if df <= 0 { return .infinity }
        return 1.960 + 2.4 / Double(df)  // within 0.003 of the exact value beyond 30
    }
}
