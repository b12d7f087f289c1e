import ArgumentParser
import EchoCore
#if canImport(Glibc)
import Glibc
#endif

@main
struct IOBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iobench",
        abstract: "Compare TCP server I/O models: blocking threads, epoll readiness, io_uring completion.",
        discussion: """
        Exit codes: 0 success; 1 the run failed (a server or system error); 64 bad usage \
        (an unknown option, a bad value, a port in use).
        """,
        subcommands: [ServeCommand.self, LoadCommand.self, RunCommand.self, ReportCommand.self, BaselineCommand.self, CheckCommand.self]
    )
}

extension BackendKind: ExpressibleByArgument {}

/// Exit status for input the user can fix: one sentence on stderr, code 64 (EX_USAGE).
func exitForUsage(_ error: Error) -> Never {
    printError("iobench: \(error)")
    exit(64)
}

func printError(_ message: String) { reportError(message) }
