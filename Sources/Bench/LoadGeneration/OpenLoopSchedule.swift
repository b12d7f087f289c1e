import ResultAnalysis
/// One generator thread's share of an open-loop schedule: `totalRate` messages per second
/// split evenly over `threads`, thread `index` offset by its share of one interval so the
/// threads' sends interleave. Message k is due at `start + offset + k × interval`, computed
/// from k rather than accumulated, so rounding never drifts the rate.
public struct OpenLoopSchedule: Sendable {
    /// Nanoseconds between this thread's messages.
    public let interval: Double
    public let start: UInt64
    public let offset: Double
    /// Messages this thread has sent so far.
    public private(set) var sent: UInt64 = 0

    public init(totalRate: Double, threads: Int, index: Int, start: UInt64) {
        precondition(totalRate > 0 && threads > 0 && (0..<threads).contains(index))
        interval = 1e9 * Double(threads) / totalRate
        self.start = start
        offset = interval * Double(index) / Double(threads)
    }

    /// When the next message is due (monotonic nanoseconds).
    public var nextDue: UInt64 { start + UInt64(offset + Double(sent) * interval) }

    /// The next message left; move on to the one after.
    public mutating func advance() { sent += 1 }
}
