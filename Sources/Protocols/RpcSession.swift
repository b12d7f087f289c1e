#if canImport(Glibc)
import Glibc
#endif
import ServerKit

/// Framed request/response (`docs/PROTOCOL.md`): the server parses each REQUEST, spends its
/// `work_us` of CPU on it, and answers with a RESPONSE carrying the same id and payload, in
/// the order the requests came. A refused frame is answered with an ERROR frame in its place;
/// after a fatal one (a length over the maximum, a frame cut short by end of input) the
/// session writes what it owes and closes, discarding whatever else arrives.
///
/// Memory: the response is assembled in the outbound queue as the request's payload arrives,
/// so nothing is allocated by a declared length, only by bytes that actually came (at most one
/// frame ahead of the flow-control bound).
public struct RpcSession: ConnectionSession, ~Copyable {
    @usableFromInline var decoder: FrameDecoder
    @usableFromInline var outbound = ByteQueue()
    @usableFromInline var currentWork: UInt32 = 0
    @usableFromInline let counters: SystemCalls
    @usableFromInline let maxOwed: Int
    @usableFromInline let performsWork: Bool
    /// Reading is paused until enough owed output is written.
    public private(set) var inputPaused = false
    public private(set) var inputEnded = false
    /// A fatal frame error: write what is owed, then close.
    public private(set) var failed = false

    public init(context: SessionContext) {
        decoder = FrameDecoder(maxFrameSize: context.maxFrameSize)
        counters = context.counters
        maxOwed = context.maxOwed
        performsWork = context.performsWork
    }

    public var wantsInput: Bool { !inputEnded && !inputPaused }
    /// Response bytes not yet written (a response being assembled included).
    public var owed: Int { outbound.count }
    public var hasOutbound: Bool { outbound.committedCount > 0 }

    public mutating func received(_ bytes: UnsafeRawBufferPointer) -> SessionActions {
        precondition(bytes.count > 0, "a read of zero bytes is end of input: call inputDidEnd()")
        if failed { return [] }  // the stream is no longer trusted: discard
        let committedBefore = outbound.committedCount
        var offset = 0
        while offset < bytes.count {
            if decoder.atBoundary, let size = answerWholeRequest(bytes, at: offset) {
                offset += size
                continue
            }
            let (used, event) = decoder.next(bytes, from: offset)
            guard let event else {
                offset += used
                if used == 0 { break }
                continue
            }
            switch event {
            case .requestStarted(let id, let work, let payloadLength):
                counters.count(.requests)
                currentWork = work
                let header = outbound.reserve(Frame.headerSize + Frame.responseFieldsSize)
                Frame.writeHeader(header, kind: .response, bodyLength: Frame.responseFieldsSize + payloadLength)
                Frame.writeUInt64(header + Frame.headerSize, id)
                outbound.extend(by: Frame.headerSize + Frame.responseFieldsSize)
                if payloadLength == 0 { finishRequest() }
            case .payload(let range):
                outbound.append(UnsafeRawBufferPointer(rebasing: bytes[range]))
                if !decoder.inPayload { finishRequest() }
            case .refused(let error):
                refuse(error)
            }
            offset += used
            if failed { break }
        }
        var actions: SessionActions = outbound.committedCount > committedBefore ? .send : []
        if !inputPaused && outbound.count >= maxOwed {
            inputPaused = true
            actions.insert(.pauseInput)
        }
        return actions
    }

    public mutating func pinOutboundForWrite() -> UnsafeRawBufferPointer { outbound.pinForWrite() }

    public mutating func unpinOutbound() { outbound.consume(0) }

    public mutating func sent(_ count: Int) -> SessionActions {
        outbound.consume(count)
        var actions: SessionActions = []
        if outbound.committedCount > 0 {
            actions.insert(.send)
        } else if failed || (inputEnded && outbound.isEmpty) {
            actions.insert(.close)
        }
        if inputPaused && outbound.count <= maxOwed / 2 {
            inputPaused = false
            if !inputEnded && !failed { actions.insert(.resumeInput) }
        }
        return actions
    }

    public mutating func inputDidEnd() -> SessionActions {
        inputEnded = true
        if !failed, let error = decoder.inputEnded() {
            outbound.dropUncommitted()  // a response to a request that never finished arriving
            refuse(error)
        }
        if outbound.committedCount > 0 { return .send }
        return .close
    }

    /// The usual case, without the decoder's state machine: a valid REQUEST lies whole in the
    /// chunk at `offset`. Answers it and returns its size; nil when it is not whole or not
    /// valid (the decoder then takes it byte by byte and refuses what it must).
    @inline(__always)
    mutating func answerWholeRequest(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Int? {
        let fixed = Frame.headerSize + Frame.requestFieldsSize
        guard bytes.count - offset >= fixed, bytes[offset + 4] == Frame.Kind.request.rawValue else { return nil }
        let length = Int(UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
        let size = Frame.headerSize + length
        guard length >= Frame.requestFieldsSize, size <= decoder.maxFrameSize, size <= bytes.count - offset else { return nil }
        let work = UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 13, as: UInt32.self))
        guard work <= Frame.maxWorkMicroseconds else { return nil }
        counters.count(.requests)
        let payload = length - Frame.requestFieldsSize
        let responseHeader = Frame.headerSize + Frame.responseFieldsSize
        let at = outbound.reserve(responseHeader + payload)
        Frame.writeHeader(at, kind: .response, bodyLength: Frame.responseFieldsSize + payload)
        // The id goes back as it came, byte for byte.
        (at + Frame.headerSize).copyMemory(from: bytes.baseAddress! + offset + Frame.headerSize, byteCount: 8)
        if payload > 0 { (at + responseHeader).copyMemory(from: bytes.baseAddress! + offset + fixed, byteCount: payload) }
        outbound.extend(by: responseHeader + payload)
        currentWork = work
        finishRequest()
        return size
    }

    /// The request's bytes are all here: do its work, then let its response be written.
    @usableFromInline
    mutating func finishRequest() {
        if currentWork > 0 && performsWork { CPUWork.spin(microseconds: currentWork) }
        outbound.commit()
        counters.count(.responses)
    }

    /// Appends an ERROR frame in this frame's place and counts it.
    @usableFromInline
    mutating func refuse(_ error: FrameError) {
        counters.count(error.counter)
        let reason = error.name.utf8
        let bodyLength = 2 + reason.count
        let at = outbound.reserve(Frame.headerSize + bodyLength)
        Frame.writeHeader(at, kind: .error, bodyLength: bodyLength)
        at.storeBytes(of: error.rawValue.bigEndian, toByteOffset: Frame.headerSize, as: UInt16.self)
        var i = Frame.headerSize + 2
        for byte in reason {
            at.storeBytes(of: byte, toByteOffset: i, as: UInt8.self)
            i += 1
        }
        outbound.extend(by: Frame.headerSize + bodyLength)
        outbound.commit()
        if error.isFatal { failed = true }
    }
}
