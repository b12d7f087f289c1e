/// How a cell is measured.
public enum MeasurementMethod: String, Sendable, CaseIterable {
    /// Wall-clock and CPU time under full load: what the machine does today.
    case timed
    /// The server runs under callgrind; its instructions, allocator calls and system calls are
    /// counted over a window that opens and closes with nothing in flight. Independent of the
    /// machine's speed.
    case counted
}
