/// Reads CSVs written by older versions of the tool under today's column names, so every file
/// in `results/` stays readable; `iobench report --upgrade FILE…` writes them back that way.
///
/// The notification comparison (`run --pattern`) once had its own vocabulary: `cell` (a label
/// such as "short-poll 100ms"), `clients`, `pattern`, `run_command` for the run and `command`
/// for the cell, CPU lists with commas. Today every row has one `workload` column (the word
/// `run --pattern` takes; a short-poll cell's interval is its `poll_interval_ms`),
/// `connections`, `method`, `command` for the run and `cell_command` for the cell, CPU lists
/// with spaces, as the echo and rpc rows do. `iobench load --format csv` files said `pattern`
/// and `clients` too.
public enum ResultUpgrade {
    /// Old cell labels and the workload each names.
    package static let workloads: [String: String] = [
        "push": "push", "push, 1% stalled": "push-stalled", "long-poll": "long-poll", "long-poll wake": "long-poll-wake",
        "long-poll timeouts": "long-poll-timeouts",
    ]

    /// Whether rows were written by an older version (they carry a column that was renamed).
    public static func isOld(_ rows: [ResultRow]) -> Bool {
        rows.contains { $0["cell"] != nil || $0["clients"] != nil || $0["run_command"] != nil }
    }

    /// The rows under today's names (rows already current are returned as they are).
    public static func upgrade(_ rows: [ResultRow]) -> [ResultRow] {
        rows.map { old in
            guard old["cell"] != nil || old["clients"] != nil || old["run_command"] != nil else { return old }
            var row = old
            if let cell = row.values.removeValue(forKey: "cell") {
                row["workload"] = workloads[cell] ?? (cell.hasPrefix("short-poll") ? "short-poll" : cell)
                row["method"] = row["method"] ?? MeasurementMethod.timed.rawValue
                // The cell's own serve and load commands, then the run's command.
                if let command = row.values.removeValue(forKey: "command") { row["cell_command"] = command }
                if let run = row.values.removeValue(forKey: "run_command") { row["command"] = run }
                row.values.removeValue(forKey: "pattern")
                for column in ["server_cpus", "client_cpus"] {
                    row[column] = row[column]?.replacingOccurrences(of: ",", with: " ")
                }
            } else if let pattern = row.values.removeValue(forKey: "pattern") {
                row["workload"] = pattern
            }
            if let clients = row.values.removeValue(forKey: "clients") { row["connections"] = clients }
            return row
        }
    }

    /// The CSV `text` under today's column names, columns kept in their order (renamed in
    /// place); nil when it is current already.
    public static func upgrade(csv text: String) throws -> String? {
        let rows = try CSV.read(text)
        guard isOld(rows) else { return nil }
        let header = text.prefix { $0 != "\n" && $0 != "\r" }.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        var columns: [String] = []
        let notification = header.contains("cell")
        for name in header {
            let renamed: String?
            switch name {
            case "cell": renamed = "workload"
            case "pattern": renamed = notification ? nil : "workload"
            case "clients": renamed = "connections"
            case "run_command": renamed = "command"
            case "command": renamed = notification ? "cell_command" : "command"
            default: renamed = name
            }
            if let renamed, !columns.contains(renamed) { columns.append(renamed) }
            if name == "cell" { columns.append("method") }
        }
        // A comparison row's run command came last in some files: keep each column once.
        return CSV.write(upgrade(rows), columns: columns)
    }
}
