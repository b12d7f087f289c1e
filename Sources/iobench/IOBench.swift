import ArgumentParser
import Backends
import BenchRunner
import LoadGeneration
import ResultAnalysis
import ResultReporting
import ServerKit
import Protocols
import BackendKit
import Foundation
#if canImport(Glibc)
import Glibc
#endif

@main
struct IOBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iobench",
        abstract: "Compare TCP server I/O models: blocking threads, epoll readiness, io_uring completion.",
        discussion: """
        Exit codes: 0 success; 1 the run failed (a server or system error, a cell with \
        errors); 2 check found a regression; 64 bad usage (an unknown option, a bad value, a \
        port in use).
        """,
        version: versionText,
        subcommands: [ServeCommand.self, LoadCommand.self, RunCommand.self, ReportCommand.self, BaselineCommand.self, CheckCommand.self, AuditCommand.self]
    )

    static let number = "0.22.0"

    /// `iobench --version`: the version, the commit of the checkout the binary was built in
    /// (read from its `.git` folder: no subprocess at every start) and the build configuration.
    static var versionText: String {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let git = MachineInfo.packageDirectory(of: executable) + "/.git"
        var commit: String?
        if let head = try? String(contentsOfFile: git + "/HEAD", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) {
            if head.hasPrefix("ref: ") {
                let ref = String(head.dropFirst(5))
                commit = (try? String(contentsOfFile: git + "/" + ref, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
                    ?? (try? String(contentsOfFile: git + "/packed-refs", encoding: .utf8))?.split(separator: "\n")
                        .first { $0.hasSuffix(" " + ref) }.map { String($0.prefix(40)) }
            } else {
                commit = head
            }
        }
        return "iobench \(number) (commit \(commit.map { String($0.prefix(12)) } ?? "unknown"), \(MachineInfo.buildConfiguration) build)"
    }

    /// Every error a command throws ends here, and only here becomes an exit status: a usage
    /// error is one sentence on stderr and 64 (EX_USAGE); a harness error (`HarnessError`: a
    /// run, load, check or report that failed) one sentence and 1; `ExitCode` (1, or 2 for a
    /// regression) and ArgumentParser's own errors keep theirs. No command calls exit().
    static func main() {
        // A peer that has gone (a server stopped mid-cell, a client that reset) is an EPIPE to
        // handle where it happens, not a signal that ends the whole run.
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as UsageError {
            printError("iobench: \(error)")
            Foundation.exit(64)
        } catch let error as any HarnessError {
            printError("iobench: \(error)")
            Foundation.exit(1)
        } catch {
            exit(withError: error)
        }
    }
}

extension BackendKind: ExpressibleByArgument {
    /// Only the names in the registry.
    public init?(argument: String) {
        guard let descriptor = Backends.named(argument) else { return nil }
        self = descriptor.kind
    }

    public static var allValueStrings: [String] { Backends.kinds.map(\.rawValue) }
}
extension ServerPattern: ExpressibleByArgument {}
extension SlowConsumerPolicy: ExpressibleByArgument {}
extension EventArrivals: ExpressibleByArgument {}
extension Workload: ExpressibleByArgument {
    public init?(argument: String) {
        guard let workload = Workload.named(argument) else { return nil }
        self = workload
    }

    public static var allValueStrings: [String] { builtIn.map(\.name) }
}

/// `error` as input the user can fix (exit 64, see ``IOBench/main()``): itself when it is a
/// ``UsageError``, else one made of its sentence.
func usageError(_ error: Error) -> UsageError { error as? UsageError ?? UsageError("\(error)") }

func printError(_ message: String) { reportError(message) }

/// This invocation as a command a shell can run again: arguments with spaces or shell
/// metacharacters are single-quoted (`--variant 'x=io_uring --batch-wait 50us'`).
func reproducibleCommandLine(_ arguments: [String] = Array(CommandLine.arguments.dropFirst())) -> String {
    let plain = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-")
    let quoted = arguments.map { argument in
        !argument.isEmpty && argument.allSatisfy(plain.contains)
            ? argument
            : "'" + argument.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
    return (["iobench"] + quoted).joined(separator: " ")
}

/// The rows of a results CSV, or exit 1 with one sentence naming the file (`command` prefixes it).
func readResults(_ path: String, command: String = "iobench") throws -> [ResultRow] {
    guard FileManager.default.fileExists(atPath: path) else {
        printError("\(command): cannot read \(path): no such file")
        throw ExitCode.failure
    }
    do {
        // Files from older versions are read under today's column names.
        return ResultUpgrade.upgrade(try CSV.read(try String(contentsOfFile: path, encoding: .utf8)))
    } catch let error as CSV.ParseError {
        printError("\(command): cannot read \(path): \(error)")
        throw ExitCode.failure
    } catch {
        // One sentence, not Foundation's error domain and user info.
        printError("\(command): cannot read \(path): \(CSVAppender.reason(error))")
        throw ExitCode.failure
    }
}
