import NIOPeer
import IoUring
import Epoll
import Blocking
import Backends
import BenchRunner
import LoadGeneration
import ResultAnalysis
import ResultReporting
import ServerKit
import Protocols
import BackendKit
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The CLI's promises about bad input: one sentence naming the problem, exit code 64.
@Suite struct ServeCommandTests {
    @Test(arguments: [
        (["serve", "--backend", "epoll", "--port", "70000"], "port 70000 is out of range"),
        (["serve", "--backend", "kqueue"], "kqueue"),
        (["serve", "--backend", "epoll", "--threads", "0"], "--threads 0 is out of range"),
        (["serve", "--backend", "epoll", "--host", "example.com"], "is not an IPv4 or IPv6 address"),
        (["serve", "--backend", "blocking", "--cpus", "0,x"], "CPU list '0,x' is not valid"),
        (["serve", "--backend", "io_uring", "--ring-buffers", "1000"], "must be a power of two"),
        (["serve", "--backend", "epoll", "--stack-size", "big"], "size 'big' is not a size"),
        (["serve", "--backend", "epoll", "--bogus"], "--bogus"),
        (["serve", "--backend", "epoll", "--batch-wait", "50us"], "--batch-wait applies to the io_uring backend only, not epoll"),
        (["serve", "--backend", "io_uring", "--batch-wait", "1s"], "--batch-wait 1s is out of range"),
    ])
    func badValuesExitWithUsageError(arguments: [String], message: String) throws {
        let result = try runCLI(arguments)
        #expect(result.status == 64, "\(arguments): exit \(result.status), stderr: \(result.stderr)")
        #expect(result.stderr.contains(message), "\(arguments): stderr was \(result.stderr)")
    }

    @Test(arguments: Backends.kinds)
    func portInUseIsAUsageErrorNamingThePort(kind: BackendKind) throws {
        let server = try startServer(.epoll)
        defer { server.stop() }
        // With one loop (plain bind) and with two (SO_REUSEPORT must not share another's port).
        for threads in ["1", "2"] {
            let result = try runCLI(["serve", "--backend", kind.rawValue, "--port", "\(server.address.port)", "--threads", threads])
            #expect(result.status == 64)
            #expect(result.stderr.contains("port \(server.address.port) on 127.0.0.1 is already in use"), "stderr: \(result.stderr)")
        }
    }

    @Test func helpExplainsEachOption() throws {
        let result = try runCLI(["serve", "--help"])
        #expect(result.status == 0)
        for option in ["--backend", "--host", "--port", "--threads", "--cpus", "--max-connections"] {
            #expect(result.stdout.contains(option), "--help does not mention \(option)")
        }
    }

    @Test func aDescriptorLeftOpenIsCountedAndNamed() throws {
        // The leak check's detector, with the fault it must catch: one descriptor opened after
        // start and never closed. stdin is empty, so --quit-on-eof stops the server at once.
        let leaking = try runCLI(["serve", "--backend", "epoll", "--port", "0", "--quit-on-eof", "--inject-descriptor-leak=true"])
        #expect(leaking.status == 0, "\(leaking.stderr)")
        let final = try #require(leaking.stdout.split(separator: "\n").last.flatMap { StatsLine(json: String($0)) })
        #expect(final.leakedFileDescriptors == 1)
        #expect(leaking.stderr.contains("left open after stopping: fd ") && leaking.stderr.contains("→ /dev/null"), "\(leaking.stderr)")
        let clean = try runCLI(["serve", "--backend", "epoll", "--port", "0", "--quit-on-eof"])
        #expect(clean.stdout.split(separator: "\n").last.flatMap { StatsLine(json: String($0)) }?.leakedFileDescriptors == 0)
    }

    @Test func quitOnStdinStopsGracefully() throws {
        let server = try startServer(.ioUring, ["--host", "::1"])
        #expect(server.address.family == .ipv6)
        let client = try Client(server.address)
        #expect(try client.echo([1, 2, 3]))
        try server.send("quit")
        let stopped = server.stop(signal: 0)
        #expect(stopped.exitStatus == 0)
        #expect(stopped.finalStats?.bytesOut == 3)
    }
}

/// io_uring's `--batch-wait`: the kernel's min-timeout batch wait, checked by what it must do.
@Suite(.serialized) struct BatchWaitTests {
    @Test func batchedLoopsStillEchoEveryByte() throws {
        let server = try startServer(.ioUring, ["--batch-wait", "500us"])
        defer { server.stop() }
        #expect(server.listeningLine.contains("MIN_TIMEOUT=500us"), "\(server.listeningLine)")
        let report = try ConcurrentEchoDriver.run(address: server.address, connections: 200, rounds: 5, maxMessage: 3000, timeout: 60)
        #expect(report.mismatches == 0)
        #expect(report.completed == 200)
    }

    /// With 64 connections open the loop waits for 16 completions; one lone message cannot make
    /// a batch, so its echo leaves only when the minimum wait (counted from the start of the
    /// loop's wait) runs out. Without the option the same echo is immediate. This is what the
    /// option trades: latency for fewer wake-ups.
    @Test func aLoneMessageWaitsOutTheBatchTimeout() throws {
        for (wait, batched) in [("20ms", true), ("0", false)] {
            let server = try startServer(.ioUring, ["--batch-wait", wait])
            defer { server.stop() }
            let idle = try (0..<63).map { _ in try Client(server.address) }
            let client = try Client(server.address)
            #expect(try eventually { try server.stats().connectionsOpen == 64 })
            var slow = 0
            for _ in 0..<6 {
                let start = ProcessResources.monotonicNanoseconds()
                #expect(try client.echo(Array(repeating: 7, count: 64)))
                if ProcessResources.monotonicNanoseconds() - start >= 15_000_000 { slow += 1 }
            }
            // The first echo may find the loop already past its minimum wait; the rest cannot.
            if batched {
                #expect(slow >= 4, "--batch-wait 20ms: only \(slow) of 6 echoes waited 15 ms or more")
            } else {
                #expect(slow <= 2, "without a batch wait \(slow) of 6 echoes took 15 ms or more")
            }
            withExtendedLifetime(idle) {}
        }
    }
}
