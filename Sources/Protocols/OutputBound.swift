/// A framed session's flow control: reading pauses when `maxOwed` bytes of output are owed, and
/// resumes once they are down to half, so a peer that sends and never reads costs the server
/// at most the bound (plus the frame being answered). One type for rpc and push/poll; echo
/// bounds held receive buffers too and keeps its own.
@usableFromInline
struct OutputBound {
    @usableFromInline let maxOwed: Int
    /// Reading is paused until enough owed output is written.
    @usableFromInline private(set) var paused = false

    @inlinable init(maxOwed: Int) { self.maxOwed = maxOwed }

    /// Output grew to `owed`: `.pauseInput` when it has just reached the bound.
    @inlinable mutating func grew(to owed: Int) -> SessionActions {
        guard !paused && owed >= maxOwed else { return [] }
        paused = true
        return .pauseInput
    }

    /// Output shrank to `owed`: unpaused at half the bound, with `.resumeInput` unless reading
    /// is over anyway.
    @inlinable mutating func shrank(to owed: Int, readingOver: Bool) -> SessionActions {
        guard paused && owed <= maxOwed / 2 else { return [] }
        paused = false
        return readingOver ? [] : .resumeInput
    }
}
