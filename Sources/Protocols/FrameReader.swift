import ServerKit
/// Splits a byte stream into whole frames for the patterns whose frames are small commands
/// (push, poll). A frame that lies whole in the bytes just received is handed out in place;
/// only a frame split across reads is copied, into a buffer allocated for it and freed as soon
/// as the frame is complete, so an idle connection holds no input memory. A declared length is
/// checked against the maximum before any body byte is kept. Pure: sessions and the fuzz
/// target drive it alike.
public struct FrameReader: ~Copyable {
    public enum Next {
        /// A whole frame: its type byte and body, valid until the next call.
        case frame(kind: UInt8, body: UnsafeRawBufferPointer)
        /// Everything given was used; the next frame is not complete yet.
        case needMore
        /// The declared length is over the maximum: the stream can no longer be read.
        case tooLarge
    }

    @usableFromInline var partial = ByteQueue()
    /// The frame last handed out came from `partial`: drop it at the next call.
    @usableFromInline var handedOutPartial = false
    public private(set) var failed = false
    public let maxFrameSize: Int

    public init(maxFrameSize: Int) {
        precondition(maxFrameSize >= Frame.smallestMaxSize, "a maximum frame size below \(Frame.smallestMaxSize) bytes")
        self.maxFrameSize = maxFrameSize
    }

    /// Whether input stopped at a frame boundary.
    public var atBoundary: Bool { partial.isEmpty || handedOutPartial }

    /// The next frame from `bytes[offset...]`, advancing `offset` past what it used.
    public mutating func next(_ bytes: UnsafeRawBufferPointer, _ offset: inout Int) -> Next {
        if handedOutPartial {
            handedOutPartial = false
            partial.release()
        }
        if failed {
            offset = bytes.count
            return .needMore
        }
        let available = bytes.count - offset
        if partial.isEmpty {
            guard available >= Frame.headerSize else {
                keep(bytes, &offset, available)
                return .needMore
            }
            let length = Int(UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            guard length <= maxFrameSize - Frame.headerSize else {
                failed = true
                offset = bytes.count
                return .tooLarge
            }
            let size = Frame.headerSize + length
            guard available >= size else {
                keep(bytes, &offset, available)
                return .needMore
            }
            let kind = bytes[offset + 4]
            let body = UnsafeRawBufferPointer(rebasing: bytes[(offset + Frame.headerSize)..<(offset + size)])
            offset += size
            return .frame(kind: kind, body: body)
        }
        // A frame begun in an earlier read: first its header, then its body.
        var held = partial.count
        if held < Frame.headerSize {
            let n = min(Frame.headerSize - held, available)
            keep(bytes, &offset, n)
            held += n
            guard held == Frame.headerSize else { return .needMore }
        }
        let header = partial.committed
        let length = Int(UInt32(bigEndian: header.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
        guard length <= maxFrameSize - Frame.headerSize else {
            failed = true
            partial.release()
            offset = bytes.count
            return .tooLarge
        }
        let size = Frame.headerSize + length
        let n = min(size - held, bytes.count - offset)
        keep(bytes, &offset, n)
        guard partial.count == size else { return .needMore }
        handedOutPartial = true
        let frame = partial.committed
        return .frame(kind: frame[4], body: UnsafeRawBufferPointer(rebasing: frame[Frame.headerSize...]))
    }

    /// The input ended: true when it ended inside a frame (truncated).
    public mutating func inputEnded() -> Bool {
        defer {
            failed = true
            if !partial.isEmpty { handedOutPartial = false; partial.release() }
        }
        return !failed && !atBoundary
    }

    private mutating func keep(_ bytes: UnsafeRawBufferPointer, _ offset: inout Int, _ count: Int) {
        guard count > 0 else { return }
        partial.append(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)]))
        partial.commit()
        offset += count
    }
}

/// Writing frames into an outbound queue: reserve, fill, extend (no allocation once the queue
/// has room).
extension ByteQueue {
    /// Appends a frame of `kind` whose body is `fields` bytes written by `fill`, then `payload`.
    @inlinable
    public mutating func appendFrame(_ kind: Frame.Kind, fields: Int, payload: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                                     _ fill: (UnsafeMutableRawPointer) -> Void) {
        let size = Frame.headerSize + fields + payload.count
        let at = reserve(size)
        Frame.writeHeader(at, kind: kind, bodyLength: fields + payload.count)
        fill(at + Frame.headerSize)
        if payload.count > 0 { (at + Frame.headerSize + fields).copyMemory(from: payload.baseAddress!, byteCount: payload.count) }
        extend(by: size)
    }

    /// Appends an ERROR frame for `error` (code and reason).
    public mutating func appendError(_ error: FrameError) {
        let reason = error.name.utf8
        appendFrame(.error, fields: 2 + reason.count) { at in
            at.storeBytes(of: error.rawValue.bigEndian, as: UInt16.self)
            var i = 2
            for byte in reason {
                at.storeBytes(of: byte, toByteOffset: i, as: UInt8.self)
                i += 1
            }
        }
    }
}

extension UnsafeRawBufferPointer {
    /// A big-endian integer at `offset` (the caller checked the length).
    @inlinable public func bigEndian<T: FixedWidthInteger>(at offset: Int, as: T.Type) -> T {
        T(bigEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
