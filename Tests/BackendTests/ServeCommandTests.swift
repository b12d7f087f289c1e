import Bench
import EchoCore
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
    ])
    func badValuesExitWithUsageError(arguments: [String], message: String) throws {
        let result = try runCLI(arguments)
        #expect(result.status == 64, "\(arguments): exit \(result.status), stderr: \(result.stderr)")
        #expect(result.stderr.contains(message), "\(arguments): stderr was \(result.stderr)")
    }

    @Test(arguments: BackendKind.allCases)
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

    @Test func quitOnStdinStopsGracefully() throws {
        let server = try startServer(.ioUring, ["--host", "::1"])
        #expect(server.address.family == .ipv6)
        let client = try Client(server.address)
        #expect(try client.echo([1, 2, 3]))
        try server.send("quit")
        let stopped = server.stop(signal: 0)
        #expect(stopped.exitStatus == 0)
        #expect(stopped.finalStats?.int("bytes_out") == 3)
    }
}
