import ServerKit
/// The framed wire format of every pattern but echo (`docs/PROTOCOL.md` is the specification):
///
///     frame   = length:u32be type:u8 body[length]
///
/// `length` counts the body only, so a frame is `Frame.headerSize + length` bytes and never more
/// than the server's maximum frame size (`--max-frame`). Integers are big-endian.
public enum Frame {
    /// Length (4 bytes) and type (1 byte).
    public static let headerSize = 5
    /// The default and the bounds of `--max-frame` (whole frames, header included).
    public static let defaultMaxSize = 64 * 1024
    public static let smallestMaxSize = 64
    public static let largestMaxSize = 16 * 1024 * 1024

    /// Frame types. A client sends ``request``; the server answers ``response`` or ``error``.
    public enum Kind: UInt8, Sendable, CaseIterable {
        /// `id:u64 work_us:u32 payload`: do `work_us` of CPU work, answer with the payload.
        case request = 0x01
        /// `id:u64 payload`: the answer to the request with this id.
        case response = 0x02
        /// `code:u16 reason:utf8`: a frame the server refused (see ``FrameError``).
        case error = 0x7F

        // push (client → server, then server → client)
        /// `topic:u32`: deliver every event published to `topic` from now on.
        case subscribe = 0x10
        /// `topic:u32 publish_ns:u64 payload`: publish an event (publish_ns 0: the server stamps it).
        case publish = 0x11
        /// `topic:u32 next_seq:u64`: subscribed; the first event delivered will have `next_seq`.
        case subscribed = 0x90
        /// `topic:u32 seq:u64 subscribers:u32`: published as `seq`, to this many listeners.
        case published = 0x91
        /// `topic:u32 seq:u64 publish_ns:u64 payload`: one event.
        case event = 0x92

        // short polling
        /// `duration_ms:u32`: start a job that finishes after `duration_ms`.
        case submit = 0x20
        /// `job_id:u64`: is the job done?
        case status = 0x21
        /// `job_id:u64`: the job was started.
        case accepted = 0xA0
        /// `job_id:u64`: not done yet.
        case pending = 0xA1
        /// `job_id:u64 completed_ns:u64 result:u64`: done.
        case done = 0xA2

        // long polling
        /// `topic:u32 after_seq:u64 timeout_ms:u32`: answer with the events after `after_seq`
        /// as soon as there are any, or TIMEOUT.
        case wait = 0x30
        /// `topic:u32 count:u32` then `count` × (`seq:u64 publish_ns:u64 length:u32 payload`).
        case events = 0xB0
        /// `topic:u32 after_seq:u64`: nothing after `after_seq` before the timeout.
        case timeout = 0xB1
    }

    /// REQUEST body before the payload: id (8) and work_us (4).
    public static let requestFieldsSize = 12
    /// RESPONSE body before the payload: id (8).
    public static let responseFieldsSize = 8
    /// The most CPU work one request may ask for (`work_us`), in microseconds.
    public static let maxWorkMicroseconds: UInt32 = 1_000_000
    /// EVENT body before the payload: topic (4), seq (8), publish_ns (8).
    public static let eventFieldsSize = 20
    /// Each event record of an EVENTS body before its payload: seq (8), publish_ns (8), length (4).
    public static let eventRecordFieldsSize = 20
    /// The bytes an event's frames add to its payload at most (an EVENTS frame of one event:
    /// header, topic and count, one record's fields). A PUBLISH payload may be at most
    /// `--max-frame` minus this.
    public static let eventOverhead = headerSize + 8 + eventRecordFieldsSize
    /// The longest job (SUBMIT `duration_ms`) and long-poll timeout (WAIT `timeout_ms`): one hour.
    public static let maxDurationMilliseconds: UInt32 = 3_600_000
    /// WAIT's `after_seq` meaning "only events published from now on".
    public static let fromNow = UInt64.max

    /// Writes a frame header at `at`.
    @inlinable
    public static func writeHeader(_ at: UnsafeMutableRawPointer, kind: Kind, bodyLength: Int) {
        writeUInt32(at, UInt32(bodyLength))
        at.storeBytes(of: kind.rawValue, toByteOffset: 4, as: UInt8.self)
    }

    @inlinable
    public static func writeUInt32(_ at: UnsafeMutableRawPointer, _ value: UInt32) {
        at.storeBytes(of: value.bigEndian, as: UInt32.self)
    }

    @inlinable
    public static func writeUInt64(_ at: UnsafeMutableRawPointer, _ value: UInt64) {
        at.storeBytes(of: value.bigEndian, as: UInt64.self)
    }
}

/// Why a frame was refused: the code of its ERROR frame and the key of its counter in `stats`.
/// Fatal errors leave a stream that can no longer be trusted: the server answers with the
/// ERROR frame and closes. The others skip just the one frame.
public enum FrameError: UInt16, CaseIterable, Sendable, CustomStringConvertible {
    /// The declared length makes a frame bigger than `--max-frame`. Fatal: the server will not
    /// read (or allocate for) the declared bytes.
    case tooLarge = 1
    /// A type the server does not accept from a client. The frame is skipped.
    case unknownType = 2
    /// The body is shorter than its type needs (a zero-length REQUEST, for one). Skipped.
    case tooShort = 3
    /// The peer closed its sending side in the middle of a frame. Fatal.
    case truncated = 4
    /// A request asked for more than ``Frame/maxWorkMicroseconds`` of work. Skipped.
    case workTooLarge = 5
    /// STATUS for a job id the server does not know (never issued, or expired). Skipped.
    case unknownJob = 6
    /// WAIT while this connection already has one held. Skipped (the held one stays).
    case waitPending = 7
    /// SUBSCRIBE on a connection that is already subscribed. Skipped.
    case alreadySubscribed = 8
    /// A duration or timeout beyond ``Frame/maxDurationMilliseconds``, or a job beyond the
    /// server's job table. Skipped.
    case outOfRange = 9

    public var isFatal: Bool { self == .tooLarge || self == .truncated }

    /// The refusals of the rpc pattern (the others concern push and poll frames).
    public static let rpcCases: [FrameError] = [.tooLarge, .unknownType, .tooShort, .truncated, .workTooLarge]

    /// The key in `stats` (under `malformed_frames`) and the reason an ERROR frame carries.
    public var name: String {
        switch self {
        case .tooLarge: "too_large"
        case .unknownType: "unknown_type"
        case .tooShort: "too_short"
        case .truncated: "truncated"
        case .workTooLarge: "work_too_large"
        case .unknownJob: "unknown_job"
        case .waitPending: "wait_pending"
        case .alreadySubscribed: "already_subscribed"
        case .outOfRange: "out_of_range"
        }
    }

    public var description: String { name }

    /// The counter this error is counted under.
    public var counter: EventCounter {
        switch self {
        case .tooLarge: .malformedTooLarge
        case .unknownType: .malformedUnknownType
        case .tooShort: .malformedTooShort
        case .truncated: .malformedTruncated
        case .workTooLarge: .malformedWorkTooLarge
        case .unknownJob: .malformedUnknownJob
        case .waitPending: .malformedWaitPending
        case .alreadySubscribed: .malformedAlreadySubscribed
        case .outOfRange: .malformedOutOfRange
        }
    }
}

/// Splits a byte stream into frames without allocating: it keeps only the header and the
/// request's fixed fields (at most 17 bytes, in integers), hands out payload bytes as slices
/// of the input, and checks every declared length against the maximum before any byte of the
/// body is read. Pure: the rpc session and the fuzz target drive it the same way.
public struct FrameDecoder: Sendable, Equatable {
    public enum Event: Equatable, Sendable {
        /// A REQUEST's fixed fields arrived; `payloadLength` payload bytes follow.
        case requestStarted(id: UInt64, workMicroseconds: UInt32, payloadLength: Int)
        /// The next bytes of the current request's payload: `bytes[range]` of the input.
        case payload(Range<Int>)
        /// A refused frame. After a fatal one the decoder ignores all further input.
        case refused(FrameError)
    }

    @usableFromInline enum State: Equatable, Sendable {
        case header
        case requestFields
        case payload
        case skipping
        case failed
    }

    @usableFromInline var state = State.header
    /// Bytes of the header or fields collected so far, and their value.
    @usableFromInline var collected = 0
    @usableFromInline var accumulator: UInt64 = 0
    @usableFromInline var accumulator2: UInt64 = 0
    @usableFromInline var bodyLength = 0
    /// Body (or payload) bytes still to come.
    @usableFromInline var remaining = 0
    /// While skipping a refused frame's body: why it is refused (reported once it has all
    /// arrived, so a frame cut short by end of input is `truncated` and nothing else).
    @usableFromInline var skipped: FrameError = .unknownType
    public let maxFrameSize: Int

    public init(maxFrameSize: Int) {
        precondition(maxFrameSize >= Frame.smallestMaxSize, "a maximum frame size below \(Frame.smallestMaxSize) bytes")
        self.maxFrameSize = maxFrameSize
    }

    /// Whether the stream stopped at a frame boundary (end of input here is clean).
    public var atBoundary: Bool { state == .header && collected == 0 }
    public var hasFailed: Bool { state == .failed }

    /// Decodes from `bytes[offset...]`: returns how many bytes it used and the event they
    /// completed, if any. Call again from `offset + used` until it uses nothing.
    @inlinable
    public mutating func next(_ bytes: UnsafeRawBufferPointer, from offset: Int) -> (used: Int, event: Event?) {
        let available = bytes.count - offset
        guard available > 0 else { return (0, nil) }
        switch state {
        case .header:
            if collected == 0 && available >= Frame.headerSize {
                // The whole header is here (the usual case): read it at once.
                let length = UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                let type = bytes[offset + 4]
                accumulator = UInt64(length) << 8 | UInt64(type)
                collected = Frame.headerSize
                return headerComplete(used: Frame.headerSize)
            }
            var i = offset
            let end = min(bytes.count, offset + Frame.headerSize - collected)
            while i < end {
                accumulator = accumulator << 8 | UInt64(bytes[i])
                i += 1
            }
            collected += i - offset
            guard collected == Frame.headerSize else { return (i - offset, nil) }
            return headerComplete(used: i - offset)
        case .requestFields:
            if collected == 0 && available >= Frame.requestFieldsSize {
                accumulator = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
                accumulator2 = UInt64(UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)))
                collected = Frame.requestFieldsSize
                return fieldsComplete(used: Frame.requestFieldsSize)
            }
            var i = offset
            let end = min(bytes.count, offset + Frame.requestFieldsSize - collected)
            while i < end {
                if collected + (i - offset) < 8 {
                    accumulator = accumulator << 8 | UInt64(bytes[i])
                } else {
                    accumulator2 = accumulator2 << 8 | UInt64(bytes[i])
                }
                i += 1
            }
            collected += i - offset
            guard collected == Frame.requestFieldsSize else { return (i - offset, nil) }
            return fieldsComplete(used: i - offset)
        case .payload:
            let n = min(available, remaining)
            remaining -= n
            if remaining == 0 { state = .header }
            return (n, .payload(offset..<(offset + n)))
        case .skipping:
            let n = min(available, remaining)
            remaining -= n
            guard remaining == 0 else { return (n, nil) }
            state = .header
            return (n, .refused(skipped))
        case .failed:
            return (available, nil)
        }
    }

    /// The 5 header bytes are in `accumulator`: check the declared length and the type.
    @inlinable
    mutating func headerComplete(used: Int) -> (used: Int, event: Event?) {
        let length = Int(accumulator >> 8)  // 32 bits of length, then the type byte
        let type = UInt8(truncatingIfNeeded: accumulator)
        collected = 0
        accumulator = 0
        if length > maxFrameSize - Frame.headerSize {
            state = .failed
            return (used, .refused(.tooLarge))
        }
        bodyLength = length
        remaining = length
        if type == Frame.Kind.request.rawValue {
            if length < Frame.requestFieldsSize { return skip(used, .tooShort) }
            state = .requestFields
            return (used, nil)
        }
        return skip(used, .unknownType)
    }

    /// The request's id and work are in the accumulators: start the request (or refuse it).
    @inlinable
    mutating func fieldsComplete(used: Int) -> (used: Int, event: Event?) {
        let id = accumulator
        let work = UInt32(truncatingIfNeeded: accumulator2)
        collected = 0
        accumulator = 0
        accumulator2 = 0
        remaining = bodyLength - Frame.requestFieldsSize
        if work > Frame.maxWorkMicroseconds { return skip(used, .workTooLarge) }
        state = remaining == 0 ? .header : .payload
        return (used, .requestStarted(id: id, workMicroseconds: work, payloadLength: remaining))
    }

    /// Refuses the current frame once the `remaining` bytes of its body have arrived (at once
    /// when there are none).
    @usableFromInline
    mutating func skip(_ used: Int, _ error: FrameError) -> (used: Int, event: Event?) {
        if remaining == 0 {
            state = .header
            return (used, .refused(error))
        }
        skipped = error
        state = .skipping
        return (used, nil)
    }

    /// Whether a request is in progress (fields read, payload still coming): after a
    /// ``Event/requestStarted(id:workMicroseconds:payloadLength:)`` or ``Event/payload(_:)``
    /// event, false means that request is complete.
    @inlinable public var inPayload: Bool { state == .payload }

    /// The input ended. Returns the error when it ended inside a frame.
    public mutating func inputEnded() -> FrameError? {
        guard state != .failed else { return nil }
        if atBoundary { return nil }
        state = .failed
        return .truncated
    }
}
