import ServerKit
import Protocols
/// Drives an ``RpcSession`` the way a backend does, from one arbitrary input, and checks what
/// the specification promises. The fuzz target (`Fuzz/`) runs it on every input libFuzzer
/// makes; the test suite runs it on the committed corpus, so a crash once found stays fixed.
///
/// Input layout: byte 0 picks the read chunk size, byte 1 the write limit per write (0: the
/// peer reads nothing until the input ends), byte 2 bit 0 whether the input ends with a
/// half-close; the rest is the byte stream the client sends.
///
/// Checked: every answer is a well-formed RESPONSE or ERROR frame no bigger than the maximum;
/// answers come in request order with the request's id and payload (compared with an
/// independent, allocation-happy decoding of the same stream); output owed stays within the
/// flow-control bound plus one frame and one read; after a fatal error nothing else is
/// answered; the session closes after a half-close once everything is written.
public enum RpcSessionExercise {
    public static let maxFrame = 256
    public static let maxOwed = 1024

    /// Runs one input; returns a description of the first broken promise, or nil.
    public static func run(_ input: UnsafeRawBufferPointer) -> String? {
        guard input.count >= 3 else { return nil }
        let chunk = Int(input[0] % 64) + 1
        let writeLimit = Int(input[1] % 48)
        let halfClose = input[2] & 1 == 1
        let stream = UnsafeRawBufferPointer(rebasing: input[3...])
        let counters = ThreadCounters()
        var context = SessionContext(maxOwed: maxOwed, maxFrameSize: maxFrame, counters: SystemCalls(counters: counters))
        context.performsWork = false
        var session = RpcSession(context: context)
        var written: [UInt8] = []
        var closed = false
        var paused = false
        var offset = 0

        func write(_ session: inout RpcSession, limit: Int) -> String? {
            while session.hasOutbound && !closed {
                let bytes = session.pinOutboundForWrite()
                let n = min(bytes.count, limit)
                written.append(contentsOf: bytes[..<n])
                let actions = session.sent(n)
                if actions.contains(.pauseInput) { paused = true }
                if actions.contains(.resumeInput) { paused = false }
                if actions.contains(.close) { closed = true }
                if actions.contains(.echoReceived) { return "sent() asked to echo" }
                if n == 0 { break }
            }
            return nil
        }

        while offset < stream.count && !closed {
            if paused {
                // The peer must read before more input is taken.
                if let problem = write(&session, limit: max(writeLimit, 1)) { return problem }
                continue
            }
            let n = min(chunk, stream.count - offset)
            let actions = session.received(UnsafeRawBufferPointer(rebasing: stream[offset..<(offset + n)]))
            offset += n
            if actions.contains(.echoReceived) { return "rpc asked to echo received bytes" }
            if actions.contains(.pauseInput) { paused = true }
            if actions.contains(.close) { closed = true }
            if session.owed > maxOwed + maxFrame + chunk + 64 {
                return "owes \(session.owed) bytes, over the bound \(maxOwed) plus a frame and a read"
            }
            if writeLimit > 0, let problem = write(&session, limit: writeLimit) { return problem }
        }
        if halfClose && !closed {
            let actions = session.inputDidEnd()
            if actions.contains(.close) { closed = true }
        }
        if let problem = write(&session, limit: Int.max) { return problem }
        if halfClose && !closed { return "no close after a half-close with everything written" }
        return check(answers: written, to: UnsafeRawBufferPointer(rebasing: stream[..<offset]), ended: halfClose)
    }

    /// Decodes the client's stream the simple way and compares the server's answers with it.
    public static func check(answers: [UInt8], to stream: UnsafeRawBufferPointer, ended: Bool) -> String? {
        var expected: [[UInt8]] = []  // each answer frame, in order
        var i = 0
        var fatal = false
        func be(_ bytes: UnsafeRawBufferPointer, _ at: Int, _ count: Int) -> UInt64 {
            (0..<count).reduce(UInt64(0)) { $0 << 8 | UInt64(bytes[at + $1]) }
        }
        func error(_ code: UInt16, _ name: String) -> [UInt8] {
            let body = [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(name.utf8)
            return frame(0x7F, body)
        }
        func frame(_ type: UInt8, _ body: [UInt8]) -> [UInt8] {
            let n = UInt32(body.count)
            return [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type] + body
        }
        while !fatal {
            if stream.count - i < 5 {
                if ended && i < stream.count { expected.append(error(4, "truncated")) }
                break
            }
            let length = Int(be(stream, i, 4)), type = stream[i + 4]
            if length > maxFrame - 5 { expected.append(error(1, "too_large")); fatal = true; break }
            if stream.count - i - 5 < length {
                if ended { expected.append(error(4, "truncated")) }
                break
            }
            let body = i + 5
            i = body + length
            guard type == 0x01 else { expected.append(error(2, "unknown_type")); continue }
            guard length >= 12 else { expected.append(error(3, "too_short")); continue }
            if be(stream, body + 8, 4) > UInt64(Frame.maxWorkMicroseconds) { expected.append(error(5, "work_too_large")); continue }
            expected.append(frame(0x02, Array(stream[body..<(body + 8)]) + Array(stream[(body + 12)..<(body + length)])))
        }
        let flat = expected.flatMap { $0 }
        guard answers == flat else {
            let at = zip(answers, flat).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(answers.count, flat.count)
            return "answers differ from the specification at byte \(at): \(answers.count) bytes written, \(flat.count) expected"
        }
        return nil
    }
}
