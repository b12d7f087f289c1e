import FoundationEssentials
import ServerKit
import Protocols

/// The stats line: what `iobench serve` answers to `stats` on stdin (and prints once more, with
/// the `final` fields, when it stops), one JSON object per line. One `Codable` type, written by
/// the server and read by the harness, so the wire format has one definition. Keys are
/// snake_case and sorted; fields a backend cannot provide are `null` (a peer runtime's system
/// calls), never guessed.
public struct StatsLine: Codable, Sendable, Equatable {
    public var backend: String
    public var pattern: String
    /// Threads serving: event loops, or for blocking the acceptor plus one per connection.
    public var threads: Int
    public var connectionsAccepted: Int
    public var connectionsOpen: Int
    public var connectionsRefused: Int
    public var connectionsReset: Int
    public var acceptErrors: Int
    public var bytesIn: Int
    public var bytesOut: Int
    /// Framed patterns: REQUEST frames whose fields were read, and RESPONSE frames produced.
    public var requests: Int
    public var responses: Int
    /// Refused frames by reason (``FrameError/name``).
    public var malformedFrames: [String: Int]
    /// push and poll: the counters of ``NotificationCounter`` by name, and the gauges
    /// `subscribers` and `held_waits` (zero for the other patterns). Optional only so lines
    /// of servers built before it existed still parse (`check --against` runs older builds).
    public var notifications: [String: Int]?
    /// System calls by kind (``SyscallKind/name``); null when the backend cannot count them.
    public var syscalls: [String: Int]?
    public var syscallsTotal: Int?
    /// What the backend's loops set up, in its own words (io_uring: its ring's setup flags), or null.
    public var setup: String?
    /// Why the server cannot be trusted any more (a loop whose wait failed), or null.
    public var failure: String?
    /// Counters this backend cannot provide.
    public var unavailable: [String]
    /// Only in the line printed at stop: true, how long stopping took, and what the server
    /// left behind (descriptors it opened and did not close, threads it started that still run).
    public var final: Bool?
    public var stopMilliseconds: Double?
    public var leakedFileDescriptors: Int?
    public var leakedThreads: Int?

    enum CodingKeys: String, CodingKey {
        case backend, pattern, threads
        case connectionsAccepted = "connections_accepted"
        case connectionsOpen = "connections_open"
        case connectionsRefused = "connections_refused"
        case connectionsReset = "connections_reset"
        case acceptErrors = "accept_errors"
        case bytesIn = "bytes_in"
        case bytesOut = "bytes_out"
        case requests, responses
        case malformedFrames = "malformed_frames"
        case notifications
        case syscalls
        case syscallsTotal = "syscalls_total"
        case setup
        case failure
        case unavailable
        case final
        case stopMilliseconds = "stop_ms"
        case leakedFileDescriptors = "leaked_fds"
        case leakedThreads = "leaked_threads"
    }

    /// Writes every counter field, with an explicit `null` for what is unavailable; the final
    /// fields only when present.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(backend, forKey: .backend)
        try c.encode(pattern, forKey: .pattern)
        try c.encode(threads, forKey: .threads)
        try c.encode(connectionsAccepted, forKey: .connectionsAccepted)
        try c.encode(connectionsOpen, forKey: .connectionsOpen)
        try c.encode(connectionsRefused, forKey: .connectionsRefused)
        try c.encode(connectionsReset, forKey: .connectionsReset)
        try c.encode(acceptErrors, forKey: .acceptErrors)
        try c.encode(bytesIn, forKey: .bytesIn)
        try c.encode(bytesOut, forKey: .bytesOut)
        try c.encode(requests, forKey: .requests)
        try c.encode(responses, forKey: .responses)
        try c.encode(malformedFrames, forKey: .malformedFrames)
        try c.encode(notifications, forKey: .notifications)
        try c.encode(syscalls, forKey: .syscalls)
        try c.encode(syscallsTotal, forKey: .syscallsTotal)
        try c.encode(setup, forKey: .setup)
        try c.encode(failure, forKey: .failure)
        try c.encode(unavailable, forKey: .unavailable)
        try c.encodeIfPresent(final, forKey: .final)
        try c.encodeIfPresent(stopMilliseconds, forKey: .stopMilliseconds)
        try c.encodeIfPresent(leakedFileDescriptors, forKey: .leakedFileDescriptors)
        try c.encodeIfPresent(leakedThreads, forKey: .leakedThreads)
    }

    /// One line of JSON (no newline).
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Encoding plain integers, strings and dictionaries of them cannot fail.
        let data = (try? encoder.encode(self)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// Parses one line; nil when it is not a stats line (for example an error answer).
    public init?(json line: String) {
        guard let decoded = try? JSONDecoder().decode(StatsLine.self, from: Data(line.utf8)) else { return nil }
        self = decoded
    }

    /// A stats line from a server's counters.
    public init(_ stats: ServerStats) {
        let c = stats.counters
        backend = stats.backend.rawValue
        pattern = stats.pattern.rawValue
        threads = stats.threads
        connectionsAccepted = Int(c[.accepted])
        connectionsOpen = Int(stats.open)
        connectionsRefused = Int(c[.refused])
        connectionsReset = Int(c[.resets])
        acceptErrors = Int(c[.acceptErrors])
        bytesIn = Int(c[.bytesIn])
        bytesOut = Int(c[.bytesOut])
        requests = Int(c[.requests])
        responses = Int(c[.responses])
        malformedFrames = Dictionary(uniqueKeysWithValues: FrameError.allCases.map { ($0.name, Int(c[$0.counter])) })
        var notifications = Dictionary(uniqueKeysWithValues: NotificationCounter.allCases.map { ($0.rawValue, Int(c[$0.counter])) })
        notifications["subscribers"] = stats.subscribers
        notifications["held_waits"] = stats.heldWaits
        self.notifications = notifications
        if stats.unavailable.contains("syscalls") {
            syscalls = nil
            syscallsTotal = nil
        } else {
            syscalls = Dictionary(uniqueKeysWithValues: SyscallKind.allCases.map { ($0.name, Int(c[$0])) })
            syscallsTotal = Int(c.totalSyscalls)
        }
        setup = stats.setup
        failure = stats.failure
        unavailable = stats.unavailable
    }
}

/// The notification patterns' counters in the stats line, by their key there.
public enum NotificationCounter: String, CaseIterable, Sendable {
    case eventsPublished = "events_published"
    case eventsDelivered = "events_delivered"
    case eventsDropped = "events_dropped"
    case slowDisconnects = "slow_disconnects"
    case jobsSubmitted = "jobs_submitted"
    case statusPolls = "status_polls"
    case statusPending = "status_pending"
    case waits
    case waitsHeld = "waits_held"
    case waitsAnswered = "waits_answered"
    case eventsAnswered = "events_answered"
    case waitsTimedOut = "waits_timed_out"
    case timeoutsLate = "timeouts_late"

    public var counter: EventCounter {
        switch self {
        case .eventsPublished: .eventsPublished
        case .eventsDelivered: .eventsDelivered
        case .eventsDropped: .eventsDropped
        case .slowDisconnects: .slowDisconnects
        case .jobsSubmitted: .jobsSubmitted
        case .statusPolls: .statusPolls
        case .statusPending: .statusPending
        case .waits: .waits
        case .waitsHeld: .waitsHeld
        case .waitsAnswered: .waitsAnswered
        case .eventsAnswered: .eventsAnswered
        case .waitsTimedOut: .waitsTimedOut
        case .timeoutsLate: .timeoutsLate
        }
    }
}

extension StatsLine {
    /// A notification counter or gauge (`subscribers`, `held_waits`) by its key; 0 when absent.
    public func notification(_ key: String) -> Int { notifications?[key] ?? 0 }
    public func notification(_ counter: NotificationCounter) -> Int { notifications?[counter.rawValue] ?? 0 }
}
