import Foundation

/// The notification comparison's workloads, by the names `run --pattern` and the CSV's `workload`
/// column use, and the labels tables and charts give them: each a way of telling clients about events.
public enum NotificationWorkload: Sendable, Equatable, CustomStringConvertible {
    case push
    /// push with 1% of the subscribers (at least one) never reading.
    case pushStalled
    case longPoll
    /// Every client on a topic of its own, each topic an independent Poisson stream, the
    /// streams together `wakeRate` events per second: how fast one held request among all
    /// the others is woken.
    case longPollWake
    /// Every client holds a WAIT and no event comes: they all time out together (one
    /// round: the clients do not ask again).
    case longPollTimeouts
    case shortPoll(interval: Double)

    public var description: String {
        switch self {
        case .push: "push"
        case .pushStalled: "push, 1% stalled"
        case .longPoll: "long-poll"
        case .longPollWake: "long-poll wake"
        case .longPollTimeouts: "long-poll timeouts"
        case .shortPoll(let t): "short-poll \(NotificationWorkload.milliseconds(t))"
        }
    }

    /// Its name: the word `run --pattern` takes and the CSV's `workload` column (a
    /// short-poll cell's interval is its `poll_interval_ms`).
    public var workload: String {
        switch self {
        case .push: "push"
        case .pushStalled: "push-stalled"
        case .longPoll: "long-poll"
        case .longPollWake: "long-poll-wake"
        case .longPollTimeouts: "long-poll-timeouts"
        case .shortPoll: "short-poll"
        }
    }

    /// Every cell's workload name.
    public static let workloadNames = ["push", "push-stalled", "long-poll", "long-poll-wake", "long-poll-timeouts", "short-poll"]

    /// The cell a row of the comparison measured, from its `workload` (and `poll_interval_ms`).
    public init?(row: ResultRow) {
        switch row["workload"] {
        case "push": self = .push
        case "push-stalled": self = .pushStalled
        case "long-poll": self = .longPoll
        case "long-poll-wake": self = .longPollWake
        case "long-poll-timeouts": self = .longPollTimeouts
        case "short-poll":
            guard let ms = row.double("poll_interval_ms") else { return nil }
            self = .shortPoll(interval: ms / 1000)
        default: return nil
        }
    }

    /// Whether a row is one of the notification comparison's (else echo, rpc or idle).
    public static func isNotification(_ row: ResultRow) -> Bool { row["workload"].map(workloadNames.contains) ?? false }

    /// The label of a row's cell in tables and charts ("short-poll 100ms", "push, 1% stalled").
    public static func label(_ row: ResultRow) -> String { NotificationWorkload(row: row)?.description ?? row["workload"] ?? "" }

    /// The server's `--pattern`.
    public var servePattern: String {
        switch self {
        case .push, .pushStalled: "push"
        default: "poll"
        }
    }

    package static func milliseconds(_ seconds: Double) -> String {
        seconds >= 1 ? String(format: "%gs", seconds) : String(format: "%gms", seconds * 1000)
    }
}
