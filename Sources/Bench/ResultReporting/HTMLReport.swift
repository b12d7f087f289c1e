import ResultAnalysis
import Foundation

/// One self-contained HTML page from any results: inline SVG charts, inline CSS, no script and
/// nothing fetched, so it opens the same from a CI artifact, a mail or a laptop offline.
public struct HTMLReport {
    /// One input's part of the page: its heading, what ran where, its charts and its tables
    /// (Markdown, as `iobench report --markdown` prints them).
    public struct Section {
        public var heading: String
        public var facts: [(String, String)]
        public var charts: [Chart]
        public var markdown: String

        public init(heading: String, facts: [(String, String)], charts: [Chart], markdown: String) {
            self.heading = heading; self.facts = facts; self.charts = charts; self.markdown = markdown
        }
    }

    public var title = "iobench report"
    public var generatedBy: String
    public var sections: [Section]

    public init(generatedBy: String, sections: [Section]) {
        self.generatedBy = generatedBy
        self.sections = sections
    }

    public var charts: [Chart] { sections.flatMap(\.charts) }

    /// The facts a results CSV records about where and how it ran.
    public static func facts(_ rows: [ResultRow]) -> [(String, String)] {
        guard let first = rows.first else { return [] }
        var facts: [(String, String)] = []
        func add(_ label: String, _ value: String?) {
            if let value, !value.isEmpty { facts.append((label, value)) }
        }
        add("machine", [first["cpu_model"], first["cores"].map { "\($0) cores" }, first["kernel"].map { "Linux \($0)" }].compactMap { $0 }.joined(separator: ", "))
        add("host", first["host"])
        add("toolchain", [first["swift_version"].map { "Swift \($0)" }, first["liburing_version"].flatMap { $0.isEmpty ? nil : "liburing \($0)" }, first["build_config"].flatMap { $0.isEmpty ? nil : "\($0) build" }].compactMap { $0 }.joined(separator: ", "))
        if let commit = first["git_commit"], !commit.isEmpty {
            add("commit", commit + (first["git_dirty"] == "yes" || first["git_dirty"] == "true" ? " (with uncommitted changes)" : ""))
        }
        add("pinning", [first["server_cpus"].map { "server on CPUs \($0)" }, first["client_cpus"].map { "load on CPUs \($0)" }].compactMap { $0 }.joined(separator: ", "))
        // The run's command; a notification comparison recorded before runs had one, its cells'.
        let runCommands = Set(rows.compactMap { $0["command"] }.filter { !$0.isEmpty })
        let commands = runCommands.isEmpty ? Set(rows.compactMap { $0["cell_command"] }.filter { !$0.isEmpty }) : runCommands
        for command in commands.sorted() { add("command", command) }
        return facts
    }

    public func html() -> String {
        var out = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(xmlEscape(title))</title>
        <style>
        :root { color-scheme: light; }
        body { font-family: \(Chart.font); color: #111; background: #fff; margin: 0 auto; padding: 24px 32px 48px; max-width: 1200px; line-height: 1.45; }
        h1 { font-size: 28px; margin: 0 0 4px; }
        h2 { font-size: 22px; margin: 40px 0 8px; border-bottom: 1px solid #ccc; padding-bottom: 4px; }
        h3 { font-size: 16px; margin: 22px 0 6px; }
        .generated { color: #444; margin: 0 0 12px; font-size: 13px; }
        dl.facts { display: grid; grid-template-columns: max-content 1fr max-content 1fr; gap: 2px 16px; margin: 8px 0 16px; font-size: 13px; }
        dl.facts dt.wide + dd { grid-column: span 3; }
        dl.facts dt { color: #444; }
        dl.facts dd { margin: 0; overflow-wrap: anywhere; }
        code { font-family: ui-monospace, 'DejaVu Sans Mono', Menlo, monospace; font-size: 0.92em; background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
        nav ul { columns: 2; font-size: 14px; padding-left: 18px; }
        figure.chart { margin: 18px 0 28px; break-inside: avoid; page-break-inside: avoid; }
        figure.chart svg { width: 100%; max-width: 960px; height: auto; display: block; }
        figure.chart figcaption { font-size: 13px; color: #444; max-width: 960px; }
        table { border-collapse: collapse; font-size: 13px; margin: 6px 0 14px; font-variant-numeric: tabular-nums; }
        th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
        th:first-child, td:first-child { text-align: left; }
        thead th { background: #f3f3f3; }
        .table-wrap { overflow-x: auto; }
        p.note { font-size: 13px; color: #333; max-width: 960px; }
        @media print {
          body { padding: 0; max-width: none; }
          h2 { break-before: page; }
          .table-wrap { overflow: visible; }
          table { font-size: 9px; }
        }
        </style>
        </head>
        <body>
        <h1>\(xmlEscape(title))</h1>
        <p class="generated">Made by <code>\(xmlEscape(generatedBy))</code>. Every figure comes from the CSV or .hgrm files named below; hover a point for its numbers.</p>

        """
        if charts.count > 3 {
            out += "<nav><details><summary>\(charts.count) charts</summary><ul>\n"
            for chart in charts { out += "<li><a href=\"#\(xmlEscape(chart.id))\">\(xmlEscape(chart.title))</a></li>\n" }
            out += "</ul></details></nav>\n"
        }
        for section in sections {
            out += "<section class=\"run\">\n<h2>\(xmlEscape(section.heading))</h2>\n"
            if !section.facts.isEmpty {
                out += "<dl class=\"facts\">\n"
                for (label, value) in section.facts {
                    let shown = label == "command" || label == "commit" ? "<code>\(xmlEscape(value))</code>" : xmlEscape(value)
                    let wide = label == "command" || label == "file" || label == "machine"
                    out += "<dt\(wide ? " class=\"wide\"" : "")>\(xmlEscape(label))</dt><dd>\(shown)</dd>\n"
                }
                out += "</dl>\n"
            }
            for chart in section.charts {
                out += "<figure class=\"chart\" id=\"\(xmlEscape(chart.id))\" data-chart=\"\(xmlEscape(chart.id))\" data-points=\"\(chart.pointCount)\">\n"
                out += chart.svg()
                out += "</figure>\n"
            }
            if !section.markdown.isEmpty { out += HTMLReport.markdownToHTML(section.markdown) }
            out += "</section>\n"
        }
        out += "</body>\n</html>\n"
        return out
    }

    /// The Markdown the tables are printed in (tables, bold headings, paragraphs, inline code)
    /// as HTML: enough for the report's own output, not a general converter.
    public static func markdownToHTML(_ markdown: String) -> String {
        var out = ""
        var table: [[String]] = []
        func cells(_ line: String) -> [String] {
            var trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("|") { trimmed.removeFirst() }
            if trimmed.hasSuffix("|") { trimmed.removeLast() }
            return trimmed.components(separatedBy: "|").map { $0.trimmingCharacters(in: .whitespaces) }
        }
        func flushTable() {
            guard let header = table.first else { return }
            out += "<div class=\"table-wrap\"><table>\n<thead><tr>" + header.map { "<th>\(inline($0))</th>" }.joined() + "</tr></thead>\n<tbody>\n"
            for row in table.dropFirst() { out += "<tr>" + row.map { "<td>\(inline($0))</td>" }.joined() + "</tr>\n" }
            out += "</tbody></table></div>\n"
            table = []
        }
        for raw in markdown.components(separatedBy: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("|") {
                let row = cells(line)
                if row.allSatisfy({ $0.allSatisfy { "-: ".contains($0) } && !$0.isEmpty }) { continue }  // the separator
                table.append(row)
                continue
            }
            flushTable()
            if line.isEmpty { continue }
            if line.hasPrefix("**") && line.hasSuffix("**") && line.count > 4 {
                out += "<h3>\(inline(String(line.dropFirst(2).dropLast(2))))</h3>\n"
            } else if line.hasPrefix("- ") {
                out += "<p class=\"note\">• \(inline(String(line.dropFirst(2))))</p>\n"
            } else {
                out += "<p class=\"note\">\(inline(line))</p>\n"
            }
        }
        flushTable()
        return out
    }

    /// `code` and **bold** inside escaped text.
    static func inline(_ text: String) -> String {
        var out = ""
        var code = false, bold = false
        var i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            if c == "`" {
                out += code ? "</code>" : "<code>"
                code.toggle()
            } else if !code, c == "*", text.index(after: i) < text.endIndex, text[text.index(after: i)] == "*" {
                out += bold ? "</strong>" : "<strong>"
                bold.toggle()
                i = text.index(after: i)
            } else {
                out += xmlEscape(String(c))
            }
            i = text.index(after: i)
        }
        if code { out += "</code>" }
        if bold { out += "</strong>" }
        return out
    }
}
