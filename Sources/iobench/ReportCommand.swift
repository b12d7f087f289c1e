import ArgumentParser
import Bench
import EchoCore
import Foundation

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Print the results table of a CSV written by 'iobench run', or the CSV schema.",
        discussion: "Exit codes: 0 success, 1 the file cannot be read, 64 bad usage."
    )

    @Argument(help: "CSVs written by 'iobench run' (each printed as its own run).")
    var csvs: [String] = []

    @Option(help: "The server the others are compared with: a backend, variant or external name.")
    var reference: String = "epoll"

    @Flag(help: "Print the CSV columns and their meaning as a Markdown table instead.")
    var schema = false

    @Flag(help: "Print the results as Markdown (the README's 'Results on this machine' section comes from this).")
    var markdown = false

    @Flag(help: "List every spread warning instead of one summary line.")
    var verbose = false

    func validate() throws {
        if !schema && csvs.isEmpty { throw ValidationError("give a CSV file to report on, or --schema") }
    }

    func run() throws {
        if schema {
            print("| column | meaning |\n| --- | --- |")
            for column in ResultRow.columns { print("| `\(column.name)` | \(column.meaning) |") }
            return
        }
        for (i, csv) in csvs.enumerated() {
            let rows = try readResults(csv)
            if i > 0 { print("") }
            // The notification comparison (iobench run --patterns) has its own table.
            if rows.first?["cell"] != nil {
                if let run = rows.first?["run_id"] {
                    let how = rows.first?["run_command"].map { ": `\($0)`" } ?? ""
                    print(markdown ? "Run `\(run)` on \(rows.first?["cpu_model"] ?? "?"), \(rows.first?["cores"] ?? "?") cores, kernel \(rows.first?["kernel"] ?? "?")\(how)" : "run \(run)\(how)")
                }
                print(NotificationRunner.render(rows, markdown: markdown), terminator: "")
                continue
            }
            if let command = rows.first?["command"], let run = rows.first?["run_id"] {
                print(markdown ? "Run `\(run)` on \(rows.first?["cpu_model"] ?? "?"), \(rows.first?["cores"] ?? "?") cores, kernel \(rows.first?["kernel"] ?? "?"): `\(command)`" : "run \(run): \(command)")
            }
            print(SummaryTable.render(rows, reference: reference, markdown: markdown, verbose: verbose), terminator: "")
        }
    }
}
