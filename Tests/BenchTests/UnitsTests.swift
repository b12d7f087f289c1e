import Testing
import ServerKit
@testable import iobench

/// The quantities users type on the command line (the CLI's parsing).
@Suite struct UnitsTests {
    @Test func sizes() throws {
        #expect(try Units.parseByteCount("64") == 64)
        #expect(try Units.parseByteCount("4k") == 4096)
        #expect(try Units.parseByteCount("4KiB") == 4096)
        #expect(try Units.parseByteCount("1m") == 1 << 20)
        #expect(try Units.parseByteCount("2G") == 2 << 30)
        #expect(throws: UsageError.self) { try Units.parseByteCount("lots") }
        #expect(throws: UsageError.self) { try Units.parseByteCount("-1") }
    }

    @Test func durations() throws {
        #expect(try Units.parseDuration("500ms") == 0.5)
        #expect(try Units.parseDuration("10s") == 10)
        #expect(try Units.parseDuration("2m") == 120)
        #expect(try Units.parseDuration("3") == 3)
        #expect(try Units.parseDuration("250us") == 0.00025)
        #expect(throws: UsageError.self) { try Units.parseDuration("soon") }
    }

    @Test func cpuLists() throws {
        #expect(try Units.parseCPUList("0") == [0])
        #expect(try Units.parseCPUList("0,1") == [0, 1])
        #expect(try Units.parseCPUList("2-4") == [2, 3, 4])
        #expect(throws: UsageError.self) { try Units.parseCPUList("1-") }
    }
}
