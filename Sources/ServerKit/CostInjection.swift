/// Extra work a server does per received chunk when asked to (tests of the regression check).
public struct CostInjection: Sendable, Equatable {
    /// Extra system calls (`getppid`, counted as "other").
    public var syscalls = 0 { didSet { refresh() } }
    /// Busy-waiting, in nanoseconds.
    public var delayNanoseconds: UInt64 = 0 { didSet { refresh() } }
    /// Heap allocations (malloc and free of 64 bytes).
    public var allocations = 0 { didSet { refresh() } }
    /// Iterations of a loop of a fixed, small number of instructions, run every 16th chunk so
    /// its fixed cost spreads thin (counted regressions of a few percent).
    public var loopIterations = 0 { didSet { refresh() } }

    /// Stored, so the uninjected path of a backend costs one load and one branch.
    public private(set) var isActive = false
    /// Whether something other than the loop runs on every chunk.
    public private(set) var everyChunk = false

    public init() {}

    private mutating func refresh() {
        everyChunk = syscalls > 0 || delayNanoseconds > 0 || allocations > 0
        isActive = everyChunk || loopIterations > 0
    }
}
