@testable import ServerKit
@testable import Protocols
import BackendKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct AddressTests {
    @Test func parsesIPv4AndIPv6() throws {
        let v4 = try SocketAddress(parsing: "127.0.0.1:7000")
        #expect(v4.family == .ipv4 && v4.port == 7000 && v4.description == "127.0.0.1:7000")
        let v6 = try SocketAddress(parsing: "[::1]:8080")
        #expect(v6.family == .ipv6 && v6.port == 8080 && v6.description == "[::1]:8080")
        let local = try SocketAddress(host: "localhost", port: 0)
        #expect(local.hostText == "127.0.0.1")
    }

    @Test(arguments: [
        ("127.0.0.1", "has no port"),
        ("127.0.0.1:http", "is not a number"),
        ("127.0.0.1:70000", "out of range"),
        ("example:80", "is not an IPv4 or IPv6 address"),
        ("::1:80", "put IPv6 addresses in brackets"),
        ("[::1:80", "unclosed"),
        (":80", "host is empty"),
    ])
    func rejectsBadAddressesWithAReason(text: String, reason: String) {
        #expect {
            _ = try SocketAddress(parsing: text)
        } throws: { error in
            "\(error)".contains(reason)
        }
    }

    @Test func listenerReportsPortInUseAsASentence() throws {
        let (listeners, bound) = try Socket.listenOnEachLoop(try SocketAddress(host: "127.0.0.1", port: 0), count: 2, nonBlocking: true)
        #expect(listeners.count == 2 && bound.port != 0)
        #expect {
            _ = try Socket.listen(on: bound, reusePort: false, nonBlocking: true)
        } throws: { error in
            "\(error)".contains("already in use")
        }
    }
}

@Suite struct OwnedDescriptorTests {
    static func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) != -1 }

    /// Makes two listeners, takes the first, and lets both owners go at different times: the
    /// kernel's descriptor table says when each was closed.
    @Test func eachDescriptorIsClosedWhenItsOwnerLetsGoAndNotBefore() throws {
        var numbers: (Int32, Int32) = (-1, -1)
        do {
            let (listeners, _) = try Socket.listenOnEachLoop(try SocketAddress(host: "127.0.0.1", port: 0), count: 2, nonBlocking: true)
            numbers = (listeners.peek(0) ?? -1, listeners.peek(1) ?? -1)
            #expect(Self.isOpen(numbers.0) && Self.isOpen(numbers.1))
            do {
                guard let first = listeners.take(0) else { Issue.record("the first listener could not be taken"); return }
                #expect(listeners.peek(0) == nil, "a taken descriptor is no longer the handoff's")
                #expect(first.raw == numbers.0 && Self.isOpen(numbers.0))
                _ = consume first
            }
            #expect(!Self.isOpen(numbers.0), "the taken listener closes with its new owner")
            #expect(Self.isOpen(numbers.1), "the one nobody took stays open while the handoff lives")
        }
        #expect(!Self.isOpen(numbers.1), "the handoff closes what nobody took")
        // One released is the caller's: nothing closes it behind its back.
        let raw = try Socket.listen(on: try SocketAddress(host: "127.0.0.1", port: 0), reusePort: false, nonBlocking: true).release()
        #expect(Self.isOpen(raw))
        close(raw)
    }
}

@Suite struct ErrnoTests {
    @Test func negatedResultsMapToErrno() {
        #expect(Errno(negatedResult: -ECONNRESET) == .connectionReset)
        #expect(Errno(negatedResult: -ENOBUFS).name == "ENOBUFS")
        #expect(Errno.tooManyOpenFiles.isDescriptorExhaustion)
        #expect(Errno.badFileDescriptor.indicatesBug)
        #expect(!Errno.connectionReset.indicatesBug)
        #expect("\(SystemError("recv", .connectionReset))".contains("recv: Connection reset by peer (ECONNRESET)"))
    }

    @Test func wouldBlockIsAValueAndOtherErrorsThrowNamingTheCall() throws {
        let counters = ThreadCounters()
        let sys = SystemCalls(counters: counters)
        var pair: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &pair) == 0)
        defer { close(pair[0]); close(pair[1]) }
        var byte: UInt8 = 0
        #expect(try sys.recv(pair[0], into: &byte, count: 1) == .wouldBlock)
        #expect(try sys.send(pair[1], from: [7], count: 1) == .bytes(1))
        #expect(try sys.recv(pair[0], into: &byte, count: 1) == .bytes(1) && byte == 7)
        #expect(counters.value(.recv) == 2 && counters.value(.send) == 1)
        close(pair[1])
        shutdown(pair[0], Int32(SHUT_RDWR))
        #expect(throws: SystemError.self) {
            _ = try sys.send(pair[0], from: [1], count: 1)
        }
    }

    @Test func countersSumAcrossThreadsAndSurviveRetirement() {
        let registry = CounterRegistry()
        let a = registry.makeCounters(), b = registry.makeCounters()
        SystemCalls(counters: a).count(.send, 3)
        SystemCalls(counters: b).count(.send, 4)
        b.add(.bytesIn, 10)
        registry.retire(b)
        let totals = registry.totals()
        #expect(totals[.send] == 7 && totals[.bytesIn] == 10)
    }
}

@Suite struct ConnectionTableTests {
    @Test func slotsAreReusedWithNewGenerations() {
        var table = ConnectionTable<Int>(initialCapacity: 2)
        let a = table.insert(1)
        let genA = table.generation(a)
        var live = table.isLive(a, generation: genA)
        #expect(live)
        table.remove(a)
        live = table.isLive(a, generation: genA)
        #expect(!live)
        let b = table.insert(2)
        #expect(b == a)
        live = table.isLive(b, generation: table.generation(b))
        #expect(live)
        live = table.isLive(b, generation: genA)
        #expect(!live)
        for i in 0..<100 { _ = table.insert(i) }  // grows past the initial capacity
        let count = table.count, liveCount = table.liveIndices().count, value = table.slots[b]
        #expect(count == 101)
        #expect(liveCount == 101)
        #expect(value == 2)
    }
}

@Suite struct StatsLineTests {
    @Test func theServersLineIsWhatTheHarnessReads() throws {
        var totals = CounterTotals()
        totals.events[.accepted] = 3
        totals.events[.closed] = 1
        totals.events[.malformedTooLarge] = 2
        totals.syscalls[.recv] = 7
        var stats = ServerStats(backend: BackendKind("epoll"), threads: 2, counters: totals)
        stats.pattern = .rpc
        let line = stats.line
        let parsed = try #require(StatsLine(json: line.json))
        #expect(parsed == line)
        #expect(parsed.connectionsOpen == 2)
        #expect(parsed.malformedFrames["too_large"] == 2)
        #expect(parsed.syscalls?["recv"] == 7)
        #expect(parsed.syscallsTotal == 7)
        #expect(parsed.final == nil && !line.json.contains("final"))
    }

    @Test func countersAPeerCannotProvideAreNullNotZero() throws {
        var stats = ServerStats(backend: BackendKind("nio"), threads: 1, counters: CounterTotals())
        stats.unavailable = ["syscalls"]
        let json = stats.line.json
        #expect(json.contains("\"syscalls\":null") && json.contains("\"syscalls_total\":null"))
        #expect(StatsLine(json: json)?.syscalls == nil)
        #expect(StatsLine(json: "{\"error\":\"unknown command\"}") == nil)
    }
}
