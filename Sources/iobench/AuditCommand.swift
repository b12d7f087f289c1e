import ArgumentParser
import BenchRunner
import LoadGeneration
import ResultAnalysis
import ResultReporting
import Foundation

struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Find result rows whose server CPU is impossible (above the CPUs it was pinned to), and withdraw their CPU figures.",
        discussion: """
        A server pinned to N CPUs cannot use more than N CPUs: a row that says so had a CPU window \
        that was not its message window (harnesses before the exact-edge CPU clock). With \
        --withdraw, each such row keeps its other figures, loses server_cpu_us_per_msg, \
        server_cpu_util and bottleneck, and says why in its valid column; the file is rewritten in \
        the current column order. Exit codes: 0 no impossible row (or all withdrawn); 1 impossible \
        rows remain, or a file cannot be read or written.
        """
    )

    @Argument(help: "Results CSVs.")
    var csvs: [String]

    @Flag(help: "Rewrite the files with the impossible rows' CPU figures withdrawn.")
    var withdraw = false

    func run() throws {
        var remaining = 0
        for path in csvs {
            var rows = try readResults(path, command: "iobench audit")
            var found = 0
            for i in rows.indices {
                guard let reason = WindowAudit.impossibleCPU(rows[i]) else { continue }
                found += 1
                print("\(path): \(rows[i]["backend"] ?? "?"), \(rows[i]["connections"] ?? "?") connections, repetition \(rows[i]["repetition"] ?? "?"): \(reason)")
                if withdraw { WindowAudit.withdraw(&rows[i], because: reason) }
            }
            guard found > 0 else { continue }
            if withdraw {
                _ = try writeCSV(rows, to: path, runID: "")
                print("\(path): \(found) row(s) withdrawn")
            } else {
                remaining += found
            }
        }
        if remaining > 0 {
            printError("iobench audit: \(remaining) impossible row(s); --withdraw blanks their CPU figures")
            throw ExitCode.failure
        }
    }
}
