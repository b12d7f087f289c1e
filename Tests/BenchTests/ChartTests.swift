import BenchRunner
import LoadGeneration
import ResultAnalysis
import ResultReporting
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
import TestSupport

/// The committed fixtures: real runs by the tool (copies of results/runs and results/notify
/// files, and two `iobench load --histogram` outputs).
enum ReportFixture {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/report")
    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
    /// A fixture's rows as `iobench report` reads them (notify-run.csv is a comparison written
    /// before the shared column names: it is read under today's, as every old file is).
    static func rows(_ name: String) throws -> [ResultRow] { ResultUpgrade.upgrade(try CSV.read(try String(contentsOfFile: path(name), encoding: .utf8))) }

    /// The palette the charts promise, written out here rather than read from the code.
    static let colours = ["blocking": "#D55E00", "epoll": "#0072B2", "io_uring": "#009E73", "nio": "#CC79A7", "c-floor": "#000000"]
}

/// One chart's SVG, parsed as XML: what a reader of the file would find.
struct ParsedChart {
    let document: XMLDocument
    let text: String

    init(_ svg: String) throws {
        text = svg
        // Parsed without its default namespace: swift-corelibs-foundation's XPath and attribute
        // lookups do not see into it. The markup is otherwise the file's own.
        document = try XMLDocument(xmlString: svg.replacingOccurrences(of: #"xmlns="http://www.w3.org/2000/svg""#, with: ""), options: [])
    }

    func nodes(_ xpath: String) -> [XMLElement] {
        ((try? document.nodes(forXPath: xpath)) ?? []).compactMap { $0 as? XMLElement }
    }
    func attribute(_ element: XMLElement, _ name: String) -> String? { element.attribute(forName: name)?.stringValue }

    var title: String? { nodes("//*[@class='chart-title']").first?.stringValue }
    var xTitle: String? { nodes("//*[@class='axis-title x']").first?.stringValue }
    var yTitle: String? { nodes("//*[@class='axis-title y']").first?.stringValue }
    /// name → (colour, point count, the colours its points are drawn in)
    var series: [(name: String, color: String, points: Int, pointColors: Set<String>)] {
        nodes("//*[@class='series']").map { g in
            let points = (g.children ?? []).compactMap { $0 as? XMLElement }.filter { (attribute($0, "class") ?? "").split(separator: " ").contains("point") }
            let colours = Set(points.flatMap { [attribute($0, "fill"), attribute($0, "stroke")].compactMap { $0 }.filter { $0 != "#ffffff" } })
            return (attribute(g, "data-series") ?? "", attribute(g, "data-color") ?? "", points.count, colours)
        }
    }
    var legend: [String] { nodes("//*[contains(@class,'legend-entry')]").map { attribute($0, "data-series") ?? "" } }
}

@Suite struct ChartTests {
    /// Every chart of every fixture, checked for what a reader needs: a title, both axis titles
    /// with their units, one legend entry per series, no NaN, no empty path, one colour per
    /// server everywhere.
    func checkStructure(_ charts: [Chart]) throws -> [String: String] {
        var colourOf: [String: String] = [:]
        for chart in charts {
            let parsed = try ParsedChart(chart.svg())
            #expect(parsed.title == chart.title, "\(chart.id): title \(parsed.title ?? "none")")
            #expect(!(parsed.text.contains("NaN")), "\(chart.id) holds NaN")
            #expect(!parsed.text.contains("inf\""), "\(chart.id) holds an infinite coordinate")
            for path in parsed.nodes("//*[local-name()='path']") {
                #expect(!(parsed.attribute(path, "d") ?? "").trimmingCharacters(in: .whitespaces).isEmpty, "\(chart.id) has an empty path")
            }
            let yTitle = try #require(parsed.yTitle, "\(chart.id) has no y axis title")
            #expect(yTitle.contains("(") && yTitle.contains(")"), "\(chart.id): the y axis title '\(yTitle)' names no unit")
            let xTitle = try #require(parsed.xTitle, "\(chart.id) has no x axis title")
            if !chart.isBars { #expect(xTitle.contains("("), "\(chart.id): the x axis title '\(xTitle)' names no unit") }
            let series = parsed.series
            #expect(!series.isEmpty, "\(chart.id) draws no series")
            #expect(series.count == chart.series.count)
            for s in series {
                #expect(s.points > 0, "\(chart.id): \(s.name) has no points")
                #expect(parsed.legend.contains(s.name), "\(chart.id): \(s.name) is not in the legend \(parsed.legend)")
                #expect(s.pointColors == [s.color], "\(chart.id): \(s.name) is drawn in \(s.pointColors), not \(s.color)")
                let server = s.name.replacingOccurrences(of: " (reference)", with: "")
                if let known = colourOf[server] {
                    #expect(known == s.color, "\(server) is \(known) in one chart and \(s.color) in \(chart.id)")
                }
                colourOf[server] = s.color
                if let promised = ReportFixture.colours[server] { #expect(s.color == promised, "\(server) is drawn in \(s.color), not \(promised)") }
            }
        }
        return colourOf
    }

    @Test func everyEchoChartMatchesItsCSV() throws {
        let rows = try ReportFixture.rows("echo-run.csv")
        var palette = Palette()
        ReportCharts.servers(rows).forEach { palette.register($0) }
        let charts = ReportCharts.echoCharts(rows, reference: "epoll", palette: palette)
        _ = try checkStructure(charts)
        // What the CSV says, counted here from its text: sizes, servers, connection counts.
        let load = rows.filter { $0["workload"] == "echo" && ($0["valid"] ?? "").isEmpty }
        let sizes = Set(load.compactMap { $0["size_bytes"] })
        let connections = Set(load.compactMap { $0["connections"] })
        let backends = Set(load.compactMap { $0["backend"] })
        let cpu = charts.filter { $0.id.hasPrefix("cpu-per-message-") }
        let rate = charts.filter { $0.id.hasPrefix("throughput-") }
        let latency = charts.filter { $0.id.hasPrefix("latency-") }
        #expect(cpu.count == sizes.count && rate.count == sizes.count)
        #expect(latency.count == sizes.count * connections.count)
        for chart in cpu + rate {
            let parsed = try ParsedChart(chart.svg())
            #expect(Set(parsed.series.map { $0.name.replacingOccurrences(of: " (reference)", with: "") }) == backends)
            for s in parsed.series { #expect(s.points == connections.count, "\(chart.id): \(s.name) has \(s.points) points for \(connections.count) connection counts") }
            #expect(parsed.series.filter { $0.name.hasSuffix("(reference)") }.map(\.name) == ["epoll (reference)"])
        }
        // Every point marked by its bottleneck, and the legend says what each marker means.
        let marked = try ParsedChart(rate[0].svg())
        #expect(marked.nodes("//*[contains(@class,'legend-entry marker')]").count == Set(load.filter { $0["size_bytes"] == "64" }.compactMap { $0["bottleneck"] }.filter { !$0.isEmpty }).count)
        // Memory per idle connection: one bar per server that held idle connections.
        let memory = try #require(charts.first { $0.id == "memory-per-idle-connection" })
        #expect(memory.series.count == Set(rows.filter { $0["workload"] == "idle" }.compactMap { $0["backend"] }).count)
        let blocking = try #require(memory.series.first { $0.name == "blocking" }?.points.first)
        let idleBlocking = rows.first { $0["workload"] == "idle" && $0["backend"] == "blocking" }?.double("idle_rss_bytes_per_conn")
        #expect(blocking.y == idleBlocking)
    }

    @Test func theCFloorIsTheReferenceAndAVariantGetsAColourOfItsOwn() throws {
        let rows = try ReportFixture.rows("echo-cfloor.csv")
        var palette = Palette()
        ReportCharts.servers(rows).forEach { palette.register($0) }
        let charts = ReportCharts.echoCharts(rows, reference: "c-floor", palette: palette)
        let colours = try checkStructure(charts)
        #expect(colours["c-floor"] == "#000000" && colours["io_uring+wait"] != nil)
        #expect(Set(colours.values).count == colours.count, "two servers share a colour: \(colours)")
        let cpu = try #require(charts.first { $0.id.hasPrefix("cpu-per-message-") })
        #expect(cpu.title.contains("open loop 40k msgs/s"))
        #expect(cpu.series.first { $0.name == "c-floor (reference)" }?.dashed == true)
        // Ten repetitions: a 95% interval exists, and every point has its error bar.
        #expect(cpu.series.allSatisfy { $0.points.allSatisfy { $0.low != nil && $0.high != nil && $0.low! <= $0.y && $0.y <= $0.high! } })
        #expect(cpu.subtitle.contains("95%"))
    }

    @Test func theNotificationComparisonIsDrawnPerCommunicationModel() throws {
        let rows = try ReportFixture.rows("notify-run.csv")
        let charts = ReportCharts.notificationCharts(rows, palette: Palette())
        _ = try checkStructure(charts)
        #expect(charts.map(\.id) == ["notify-cpu-per-event-10000-clients", "notify-latency-10000-clients", "notify-wire-bytes-10000-clients"])
        let cells = Set(rows.map(NotificationWorkload.label))
        let cpu = charts[0]
        // The timeout cell delivers nothing, so it has no cost per delivered event.
        #expect(Set(cpu.categories) == cells.subtracting(["long-poll timeouts"]))
        #expect(Set(cpu.series.map(\.name)) == Set(rows.compactMap { $0["backend"] }))
        let pushEpoll = rows.filter { $0["workload"] == "push" && $0["backend"] == "epoll" }.compactMap { $0.double("server_cpu_us_per_event") }.sorted()
        let drawn = cpu.series.first { $0.name == "epoll" }?.points.first { cpu.categories[Int($0.x)] == "push" }
        #expect(drawn?.y == pushEpoll[pushEpoll.count / 2], "the bar is not the median of the CSV's values")
        // Wide ranges go on a log axis, and the latency whiskers reach p99.
        #expect(charts[1].yAxis == .log && charts[1].series.allSatisfy { $0.points.allSatisfy { ($0.high ?? 0) >= $0.y } })
    }

    @Test func hgrmFilesMakeOneSpectrum() throws {
        let spectra = try ["epoll", "io_uring"].map { name in
            try ReportCharts.parseHgrm(try String(contentsOfFile: ReportFixture.path("\(name).hgrm"), encoding: .utf8), name: name)
        }
        let chart = try #require(ReportCharts.spectrumChart(spectra, palette: Palette()))
        _ = try checkStructure([chart])
        #expect(chart.xAxis == .percentileTail && chart.yAxis == .log)
        // The last point is the max at the total count, as the file's last line says.
        for (s, spectrum) in zip(chart.series, spectra) {
            #expect(s.points.last?.x == spectrum.lines.last?.count && s.points.last?.y == spectrum.lines.last?.value)
            #expect(zip(s.points, s.points.dropFirst()).allSatisfy { $0.x < $1.x && $0.y <= $1.y })
        }
        let svg = chart.svg()
        for label in ["50%", "90%", "99%", "99.9%"] { #expect(svg.contains(">\(label)</text>"), "no \(label) tick") }
        #expect(throws: ReportError.self) { try ReportCharts.parseHgrm("value,percentile\n1,2\n", name: "bad") }
    }

    /// results/charts is what `make charts` draws from the runs the Makefile names, byte for byte:
    /// the README's charts cannot drift from their data.
    @Test func theCommittedChartsAreWhatMakeChartsDraws() throws {
        let root = ReportFixture.directory.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let makefile = try String(contentsOf: root.appendingPathComponent("Makefile"), encoding: .utf8)
        let line = try #require(makefile.split(separator: "\n").first { $0.hasPrefix("CHART_RUNS ?= ") })
        let runs = line.dropFirst("CHART_RUNS ?= ".count).split(separator: " ").map(String.init)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-charts-\(getpid())")
        defer { try? FileManager.default.removeItem(at: out) }
        let made = try runCLI(["report"] + runs.map { root.appendingPathComponent($0).path } + ["--reference", "c-floor", "--svg", out.path])
        #expect(made.status == 0, "\(made.stderr)")
        let committed = root.appendingPathComponent("results/charts")
        let names = try FileManager.default.contentsOfDirectory(atPath: committed.path).sorted()
        #expect(try FileManager.default.contentsOfDirectory(atPath: out.path).sorted() == names)
        for name in names {
            let fresh = try String(contentsOf: out.appendingPathComponent(name), encoding: .utf8)
            let kept = try String(contentsOf: committed.appendingPathComponent(name), encoding: .utf8)
            #expect(fresh == kept, "results/charts/\(name) differs from what make charts draws: run make charts")
        }
        // docs/RESULTS.md is the same runs' tables, as `report --markdown` prints them.
        let tables = try runCLI(["report"] + runs.map { root.appendingPathComponent($0).path } + ["--reference", "c-floor", "--markdown"])
        #expect(tables.status == 0, "\(tables.stderr)")
        let results = try String(contentsOf: root.appendingPathComponent("docs/RESULTS.md"), encoding: .utf8)
        #expect(tables.stdout == results, "docs/RESULTS.md differs from what make charts writes: run make charts")
    }

    @Test func chartFileNamesAreASCII() {
        #expect(ReportCharts.slug("64 B rpc, depth 1, 50 µs work") == "64-b-rpc-depth-1-50-us-work")
        #expect(ReportCharts.slug("open loop 40k msgs/s") == "open-loop-40k-msgs-s")
    }

    @Test func logAxesHaveReadableTicks() throws {
        let chart = Chart(id: "t", title: "t", xTitle: "x (count)", yTitle: "y (µs)", xAxis: .log, yAxis: .log, series: [
            Chart.Series(name: "epoll", color: "#0072B2", points: [Chart.Point(x: 1, y: 0.5), Chart.Point(x: 512, y: 20_000)]),
        ])
        let parsed = try ParsedChart(chart.svg())
        let ticks = parsed.nodes("//*[@class='tick']").map { $0.stringValue ?? "" }
        for label in ["1", "10", "100", "1k", "10k"] { #expect(ticks.contains(label), "no tick \(label) in \(ticks)") }
        // The axis hugs the data at 1-2-5 steps: nothing below 0.5 or above 20k.
        #expect(!ticks.contains("0.1") && !ticks.contains("100k"), "\(ticks)")
        #expect(!ticks.contains { $0.contains("e") }, "a tick in exponent notation: \(ticks)")
    }
}

/// The page in a real browser: Debian's chromium, headless, driven over the DevTools protocol by
/// scripts/browser-check.py. The same judge must pass the real page and fail each broken one.
@Suite(.serialized) struct BrowserReportTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/browser-check.py").path

    struct Observation: Decodable {
        struct ChartSeen: Decodable {
            let id: String?
            let declared_points: Int?
            let title: String?
            let title_visible: Bool
            let points: Int
            let visible_points: Int
            let nan: Bool
            let empty_paths: Int
            let width: Double
        }
        struct Shot: Decodable {
            let width: Int
            let height: Int
            let non_background_fraction: Double
            let solid_colours: [String]
        }
        struct Console: Decodable { let type: String?; let text: String? }
        let loaded: Bool
        let error: String?
        let console: [Console]
        let exceptions: [String?]
        let log: [[String: String?]]
        let requests: [String]
        let charts: [ChartSeen]?
        let screenshot: Shot?
    }

    func observe(_ page: String, screenshot: String? = nil) throws -> Observation {
        let result = try runProcess("/usr/bin/env", ["python3", Self.script, page] + (screenshot.map { ["--screenshot", $0] } ?? []), timeout: 120)
        return try JSONDecoder().decode(Observation.self, from: Data(result.stdout.utf8))
    }

    /// What is wrong with the page as the browser showed it, given the charts it should hold.
    func problems(_ seen: Observation, expected: [Chart]) -> [String] {
        var problems: [String] = []
        if !seen.loaded { problems.append("not loaded: \(seen.error ?? "?")") }
        problems += seen.console.filter { $0.type == "error" || $0.type == "warning" || $0.type == "assert" }.map { "console \($0.type ?? ""): \($0.text ?? "")" }
        problems += seen.exceptions.map { "exception: \($0 ?? "")" }
        problems += seen.log.map { "log: \(($0["text"] ?? nil) ?? "")" }
        problems += seen.requests.map { "fetched \($0)" }
        let charts = seen.charts ?? []
        for chart in expected {
            guard let found = charts.first(where: { $0.id == chart.id }) else { problems.append("\(chart.id) is not on the page"); continue }
            if found.title != chart.title || !found.title_visible { problems.append("\(chart.id): title '\(found.title ?? "none")' not shown") }
            if found.points != chart.pointCount || found.visible_points != chart.pointCount || found.declared_points != chart.pointCount {
                problems.append("\(chart.id): \(found.visible_points) of \(found.points) points visible, \(chart.pointCount) drawn")
            }
            if found.nan || found.empty_paths > 0 { problems.append("\(chart.id): NaN or an empty path") }
            if found.width < 600 { problems.append("\(chart.id): only \(found.width) px wide") }
        }
        if let shot = seen.screenshot {
            if shot.width != 1280 || shot.height != 800 { problems.append("screenshot \(shot.width)×\(shot.height)") }
            if shot.non_background_fraction < 0.02 { problems.append("the screenshot is blank (\(shot.non_background_fraction) not background)") }
        } else {
            problems.append("no screenshot")
        }
        return problems
    }

    @Test func theReportPageLoadsCleanAndShowsEveryChart() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-browser-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let page = directory.appendingPathComponent("report.html").path
        let svgs = directory.appendingPathComponent("svg").path
        let inputs = ["echo-run.csv", "notify-run.csv", "epoll.hgrm", "io_uring.hgrm"].map(ReportFixture.path)
        let made = try runCLI(["report"] + inputs + ["--html", page, "--svg", svgs, "--markdown"])
        #expect(made.status == 0, "\(made.stderr)")
        // --markdown links every chart --svg wrote, and each file is there.
        let links = made.stdout.split(separator: "\n").filter { $0.hasPrefix("![") }
        let files = try FileManager.default.contentsOfDirectory(atPath: svgs).filter { $0.hasSuffix(".svg") }
        #expect(links.count == files.count && files.count >= 17, "\(links.count) links, \(files.count) files")
        for link in links {
            let path = String(link[link.index(after: link.lastIndex(of: "(")!)..<link.lastIndex(of: ")")!])
            #expect(FileManager.default.fileExists(atPath: path), "\(path) is linked but missing")
        }

        // The charts the page should hold, built here from the same fixtures.
        var palette = Palette()
        let echo = try ReportFixture.rows("echo-run.csv"), notify = try ReportFixture.rows("notify-run.csv")
        (ReportCharts.servers(echo) + ReportCharts.servers(notify)).forEach { palette.register($0) }
        let expected = ReportCharts.echoCharts(echo, reference: "epoll", palette: palette, prefix: "run1-")
            + ReportCharts.notificationCharts(notify, palette: palette, prefix: "run2-")

        let shot = directory.appendingPathComponent("report.png").path
        let seen = try observe(page, screenshot: shot)
        let found = problems(seen, expected: expected)
        #expect(found.isEmpty, "\(found)")
        #expect((seen.charts ?? []).count == expected.count + 1, "the page shows \((seen.charts ?? []).count) charts (the spectrum of the .hgrm files besides)")
        // The first chart is on screen: every backend's colour fills pixels of the screenshot.
        let solid = Set(seen.screenshot?.solid_colours ?? [])
        for (backend, colour) in ReportFixture.colours where backend != "c-floor" {
            #expect(solid.contains(colour.lowercased()), "\(backend)'s \(colour) is nowhere on the screenshot")
        }
        if let keep = ProcessInfo.processInfo.environment["IOBENCH_SCREENSHOT"] {
            try? FileManager.default.removeItem(atPath: keep)
            try FileManager.default.copyItem(atPath: shot, toPath: keep)
        }

        // The same judge on broken pages: each fault must be caught.
        let html = try String(contentsOfFile: page, encoding: .utf8)
        func broken(_ name: String, _ text: String) throws -> [String] {
            let path = directory.appendingPathComponent(name + ".html").path
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return problems(try observe(path), expected: expected)
        }
        let scriptError = try broken("script-error", html.replacingOccurrences(of: "</body>", with: "<script>console.error('chart data missing'); undefinedRenderer();</script></body>"))
        #expect(scriptError.contains { $0.hasPrefix("console error") } && scriptError.contains { $0.hasPrefix("exception") }, "\(scriptError)")
        let blank = try broken("blank", String(html[..<html.range(of: "<body>")!.upperBound]) + "</body></html>")
        #expect(blank.contains { $0.contains("blank") } && blank.contains { $0.contains("is not on the page") }, "\(blank)")
        let noPoints = try broken("no-points", html.replacingOccurrences(of: "class=\"point\"", with: "class=\"gone\""))
        #expect(noPoints.contains { $0.contains("points visible") }, "\(noPoints)")
        let fetches = try broken("fetches", html.replacingOccurrences(of: "</body>", with: "<img src=\"http://127.0.0.1:9/chart.png\" alt=\"\"></body>"))
        #expect(fetches.contains { $0.hasPrefix("fetched") }, "\(fetches)")
        let hidden = try broken("hidden", html.replacingOccurrences(of: "</style>", with: "figure.chart .point { display: none; }</style>"))
        #expect(hidden.contains { $0.contains("points visible") }, "\(hidden)")
    }
}
