/// A framed session's flow control: reading pauses when `maxOwed` bytes of output are owed, and
/// resumes once they are down to half, so a peer that sends and never reads costs the server
/// at most the bound (plus the frame being answered). The push and poll session's; echo bounds
/// held receive buffers too and keeps its own, and rpc writes the same two checks inline: as
/// this type they cost it 9 to 12 more user-space instructions per request under callgrind
/// (`run --pattern rpc --method counted`, epoll and blocking, 1 connection: 699 → 708–711 and
/// 458 → 467–470), more than its +1% budget.
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
    @inlinable mutating func shrank(to owed: Int, readingOver: @autoclosure () -> Bool) -> SessionActions {
        guard paused && owed <= maxOwed / 2 else { return [] }
        paused = false
        return readingOver() ? [] : .resumeInput
    }
}
