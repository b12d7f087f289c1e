import ResultAnalysis
import Backends
import Foundation

/// One colour and one marker per server, the same in every chart: the Okabe–Ito palette, which
/// stays distinct with the common colour-vision deficiencies and in greyscale print (with the
/// markers). Our backends, the NIO peer and the C floor have fixed colours; any other server
/// (a --variant, an --external) takes the next spare colour in the order it first appears.
public struct Palette: Sendable {
    /// The registry's backends, then the C floor.
    public static let fixed: [String: String] = Dictionary(uniqueKeysWithValues: Backends.all.map { ($0.kind.rawValue, $0.colour) })
        .merging(["c-floor": "#000000"]) { a, _ in a }  // black: the floor
    /// Colours for other servers, without those a registered backend has.
    public static let spare = ["#E69F00", "#56B4E9", "#7F7F7F", "#882255", "#44AA99", "#999933", "#332288", "#AA4499"]
        .filter { !fixed.values.contains($0) }
    static let fixedMarkers: [String: Chart.Marker] = Dictionary(uniqueKeysWithValues: Backends.all.map {
        ($0.kind.rawValue, Chart.Marker(rawValue: $0.marker) ?? .ring)
    }).merging(["c-floor": .cross]) { a, _ in a }

    private var assigned: [String: String] = [:]
    private var order: [String] = []

    public init(names: [String] = []) {
        for name in names { register(name) }
    }

    public mutating func register(_ name: String) {
        guard Palette.fixed[name] == nil, assigned[name] == nil else { return }
        assigned[name] = Palette.spare[order.count % Palette.spare.count]
        order.append(name)
    }

    public func color(_ name: String) -> String {
        Palette.fixed[name] ?? assigned[name] ?? "#7F7F7F"
    }

    public func marker(_ name: String) -> Chart.Marker {
        if let m = Palette.fixedMarkers[name] { return m }
        let spareMarkers: [Chart.Marker] = [.ring, .openTriangle, .openDiamond]
        return spareMarkers[(order.firstIndex(of: name) ?? 0) % spareMarkers.count]
    }
}

/// The charts a report draws from result rows: echo and rpc runs (`iobench run`), the
/// notification comparison (`iobench run --pattern`), and latency spectra (`.hgrm` files).
public enum ReportCharts {
    /// The servers in rows, in the order they first appear. A notification comparison's
    /// `server_threads` is a measurement (the threads it ran), not part of its name.
    public static func servers(_ rows: [ResultRow]) -> [String] {
        var names: [String] = []
        for row in rows where !names.contains(name(row)) { names.append(name(row)) }
        return names
    }

    static func name(_ row: ResultRow) -> String {
        NotificationWorkload.isNotification(row) ? row["backend"] ?? "" : row.serverLabel
    }

    static func estimate(_ values: [Double]) -> Estimate? {
        Statistics.medianInterval(values.filter(\.isFinite))
    }

    /// "median of 5, 94% interval 5.1–5.9" for a tooltip.
    static func describe(_ e: Estimate, _ format: (Double) -> String) -> String {
        guard e.count > 1 else { return format(e.value) }
        return "\(format(e.value)) (median of \(e.count), \(Int((e.confidence * 100).rounded(.down)))% interval \(format(e.low))–\(format(e.high)))"
    }

    static func fixed(_ digits: Int) -> (Double) -> String { { String(format: "%.\(digits)f", $0) } }

    /// A run's echo (or rpc) cells without connections: one chart per message size and load.
    struct EchoGroup {
        var key: String
        var describe: String
        var rows: [ResultRow]
    }

    static func echoGroups(_ rows: [ResultRow]) -> [EchoGroup] {
        var groups: [EchoGroup] = []
        for row in rows {
            let workload = row["workload"] ?? "echo"
            let size = row["size_bytes"] ?? "?"
            let mode: String
            if let rate = row["rate_msgs_per_s"], !rate.isEmpty {
                mode = "open loop \(Scale.label(Double(rate) ?? 0)) msgs/s"
            } else {
                mode = "depth \(row["depth"] ?? "1")"
            }
            let work = (row.int("work_us") ?? 0) > 0 ? ", \(row["work_us"]!) µs work" : ""
            let key = [workload, size, row["depth"] ?? "", row["rate_msgs_per_s"] ?? "", row["work_us"] ?? ""].joined(separator: "|")
            if let i = groups.firstIndex(where: { $0.key == key }) {
                groups[i].rows.append(row)
            } else {
                groups.append(EchoGroup(key: key, describe: "\(size) B \(workload), \(mode)\(work)", rows: [row]))
            }
        }
        return groups
    }

    /// A file and anchor name: lower-case ASCII letters and digits (µ as u), runs of anything else one `-`.
    public static func slug(_ text: String) -> String {
        var out = ""
        for c in text.lowercased() {
            if c.isASCII && (c.isLetter || c.isNumber) { out.append(c) } else if c == "µ" { out.append("u") } else if !out.hasSuffix("-") { out.append("-") }
        }
        while out.hasSuffix("-") { out.removeLast() }
        return out
    }

    /// Charts of an `iobench run` CSV: server CPU per message and messages per second against
    /// connections (one chart per message size and load), the latency spectrum of every cell,
    /// and memory per idle connection.
    public static func echoCharts(_ rows: [ResultRow], reference: String, palette: Palette, prefix: String = "") -> [Chart] {
        let trusted = RegressionCheck.trusted(rows).filter { $0["method"] != MeasurementMethod.counted.rawValue }
        let load = trusted.filter { $0["workload"] != "idle" }
        var charts: [Chart] = []
        let servers = servers(trusted)
        func style(_ name: String) -> (color: String, marker: Chart.Marker, dashed: Bool, label: String) {
            let isReference = name == reference
            return (palette.color(name), palette.marker(name), isReference, isReference ? "\(name) (reference)" : name)
        }
        for group in echoGroups(load) {
            let connections = Set(group.rows.compactMap { $0.int("connections") }).sorted()
            let xAxis: Chart.Axis = connections.count > 1 && (connections.last! / max(connections.first!, 1)) >= 8 ? .log : .linear
            var cpu: [Chart.Series] = [], throughput: [Chart.Series] = []
            for server in servers {
                let mine = group.rows.filter { $0.serverLabel == server }
                guard !mine.isEmpty else { continue }
                let s = style(server)
                var cpuPoints: [Chart.Point] = [], ratePoints: [Chart.Point] = []
                for c in connections {
                    let cell = mine.filter { $0.int("connections") == c }
                    if let e = estimate(cell.compactMap { $0.double(.serverCPUPerMessage) }) {
                        cpuPoints.append(Chart.Point(x: Double(c), y: e.value, low: e.count > 1 ? e.low : nil, high: e.count > 1 ? e.high : nil,
                                                     note: "\(server), \(c) connections: \(describe(e, fixed(2))) µs of server CPU per message"))
                    }
                    if let e = estimate(cell.compactMap { $0.double(.messagesPerSecond) }) {
                        let verdicts = cell.compactMap { $0["bottleneck"] }.filter { !$0.isEmpty }
                        let verdict = Dictionary(grouping: verdicts, by: { $0 }).mapValues(\.count).max { $0.value < $1.value }?.key ?? "unknown"
                        ratePoints.append(Chart.Point(x: Double(c), y: e.value, low: e.count > 1 ? e.low : nil, high: e.count > 1 ? e.high : nil,
                                                      marker: bottleneckMarker(verdict),
                                                      note: "\(server), \(c) connections: \(describe(e, { Scale.label($0) })) msgs/s; bottleneck: \(verdict)"))
                    }
                }
                if !cpuPoints.isEmpty { cpu.append(Chart.Series(name: s.label, color: s.color, marker: s.marker, dashed: s.dashed, points: cpuPoints)) }
                if !ratePoints.isEmpty { throughput.append(Chart.Series(name: s.label, color: s.color, marker: s.marker, dashed: s.dashed, points: ratePoints)) }
            }
            let repetitions = Set(group.rows.compactMap { $0["repetition"] }).count
            let bars = repetitions > 1 ? "medians of \(repetitions) repetitions; bars: \(repetitions >= 6 ? "95%" : "min–max") interval of the median" : "one repetition"
            let xTitle = "connections (count" + (xAxis == .log ? ", log scale)" : ")")
            // A figure that spans more than 5× across the chart (one connection costs ten times
            // what many do) goes on a log axis, so the small values stay apart.
            func yAxis(_ series: [Chart.Series]) -> Chart.Axis {
                let values = series.flatMap { $0.points.map(\.y) }.filter { $0 > 0 }
                guard let low = values.min(), let high = values.max() else { return .linear }
                return high / low > 5 ? .log : .linear
            }
            if !cpu.isEmpty {
                let axis = yAxis(cpu)
                charts.append(Chart(id: prefix + "cpu-per-message-" + slug(group.describe), title: "Server CPU per message — \(group.describe)",
                                    subtitle: "Lower is better; \(bars). The server is pinned to its CPUs, the generator to others.",
                                    xTitle: xTitle, yTitle: Metric.serverCPUPerMessage.axisTitle(logScale: axis == .log), xAxis: xAxis, yAxis: axis, series: cpu))
                charts[charts.count - 1].xTicks = connections.map(Double.init)
            }
            if !throughput.isEmpty {
                let used = Set(throughput.flatMap { $0.points.compactMap { $0.marker } })
                let keys = [("server", "server-bound (its CPUs were busy)"), ("generator", "generator-bound (the load could not go faster)"),
                            ("neither", "neither (latency-bound)"), ("unknown", "no verdict")]
                    .filter { used.contains(bottleneckMarker($0.0)) }
                    .map { Chart.MarkerKey(bottleneckMarker($0.0), $0.1) }
                let axis = yAxis(throughput)
                charts.append(Chart(id: prefix + "throughput-" + slug(group.describe), title: "Messages per second — \(group.describe)",
                                    subtitle: "Higher is better; \(bars). The marker says what limited each point.",
                                    xTitle: xTitle, yTitle: Metric.messagesPerSecond.axisTitle(logScale: axis == .log), xAxis: xAxis, yAxis: axis, series: throughput, markerKeys: keys))
                charts[charts.count - 1].xTicks = connections.map(Double.init)
                charts[charts.count - 1].legendMarkers = false
            }
            for c in connections {
                var series: [Chart.Series] = []
                for server in servers {
                    let cell = group.rows.filter { $0.serverLabel == server && $0.int("connections") == c }
                    guard !cell.isEmpty else { continue }
                    let messages = Statistics.median(cell.compactMap { $0.double("messages") }) ?? 0
                    var points: [Chart.Point] = []
                    for (column, x, name) in [(Metric.latencyP50, 2.0, "p50"), (.latencyP90, 10, "p90"), (.latencyP99, 100, "p99"), (.latencyP999, 1000, "p99.9"), (.latencyP9999, 10_000, "p99.99")] where x <= messages {
                        if let m = Statistics.median(cell.compactMap { $0.double(column) }.filter { $0 > 0 }) {
                            points.append(Chart.Point(x: x, y: m, note: "\(server), \(c) connections: \(name) \(String(format: "%.1f", m)) µs"))
                        }
                    }
                    if messages > 10_000, let m = Statistics.median(cell.compactMap { $0.double(.latencyMax) }.filter { $0 > 0 }) {
                        points.append(Chart.Point(x: messages, y: m, note: "\(server), \(c) connections: max \(String(format: "%.1f", m)) µs of \(Int(messages)) messages"))
                    }
                    let s = style(server)
                    if !points.isEmpty { series.append(Chart.Series(name: s.label, color: s.color, marker: s.marker, dashed: s.dashed, points: points)) }
                }
                if !series.isEmpty {
                    charts.append(Chart(id: prefix + "latency-" + slug(group.describe) + "-\(c)-connections",
                                        title: "Latency spectrum — \(group.describe), \(c) connections",
                                        subtitle: "Round trip from the moment each message was due (HdrHistogram, corrected for coordinated omission); medians over repetitions; the last point is the max.",
                                        xTitle: "percentile (log scale of 1/(1−p))", yTitle: Metric.latencySpectrumAxisTitle, xAxis: .percentileTail, yAxis: .log, series: series))
                }
            }
        }
        // Memory per idle connection.
        let idle = trusted.filter { $0["workload"] == "idle" }
        var idleSeries: [Chart.Series] = []
        var idleCounts: [String] = []
        for server in servers {
            let mine = idle.filter { $0.serverLabel == server }
            guard let e = estimate(mine.compactMap { $0.double(.idleBytesPerConnection) }) else { continue }
            for row in mine where !idleCounts.contains(row["connections"] ?? "") { idleCounts.append(row["connections"] ?? "") }
            let s = style(server)
            idleSeries.append(Chart.Series(name: s.label, color: s.color, marker: s.marker, points: [
                Chart.Point(x: Double(idleSeries.count), y: e.value, low: e.count > 1 ? e.low : nil, high: e.count > 1 ? e.high : nil,
                            note: "\(server): \(describe(e, fixed(0))) bytes of resident memory per idle connection",
                            label: SummaryTable.formatBytes(e.value)),
            ]))
        }
        if !idleSeries.isEmpty {
            charts.append(Chart(id: prefix + "memory-per-idle-connection", title: "Memory per idle connection",
                                subtitle: "Server RSS growth over \(idleCounts.joined(separator: ", ")) idle connections, divided by their number; lower is better.",
                                xTitle: "server", yTitle: Metric.idleBytesPerConnection.axisTitle(), categories: idleSeries.map(\.name), series: idleSeries))
        }
        return charts
    }

    static func bottleneckMarker(_ verdict: String) -> Chart.Marker {
        switch verdict {
        case "server": .circle
        case "generator": .openTriangle
        case "neither": .openDiamond
        default: .cross
        }
    }

    /// Charts of a notification comparison CSV (`iobench run --pattern`): per number of
    /// clients, server CPU per delivered event, notice latency, and bytes on the wire per event,
    /// one group of bars per communication model.
    public static func notificationCharts(_ rows: [ResultRow], palette: Palette, prefix: String = "") -> [Chart] {
        var charts: [Chart] = []
        var clientCounts: [String] = []
        for row in rows where !clientCounts.contains(row["connections"] ?? "") { clientCounts.append(row["connections"] ?? "") }
        let backends = servers(rows)
        for clients in clientCounts {
            let these = rows.filter { $0["connections"] == clients && ($0.int("errors") ?? 0) == 0 }
            var cells: [String] = []
            for row in these where !cells.contains(NotificationWorkload.label(row)) { cells.append(NotificationWorkload.label(row)) }
            let rate = these.first?["event_rate"] ?? "?"
            let runs = these.compactMap { $0.int("repetition") }.max() ?? 0
            let context = "\(clients) clients, \(rate) events/s on one topic; medians of \(runs) runs"

            func chart(_ id: String, _ title: String, _ subtitle: String, _ yTitle: String, _ value: (ResultRow) -> Double?,
                       whisker: ((ResultRow) -> Double?)? = nil, format: @escaping (Double) -> String, unit: String) -> Chart? {
                let usable = cells.filter { cell in these.contains { NotificationWorkload.label($0) == cell && value($0).map { $0.isFinite && $0 > 0 } == true } }
                guard !usable.isEmpty else { return nil }
                var series: [Chart.Series] = []
                var all: [Double] = []
                for backend in backends {
                    var points: [Chart.Point] = []
                    for (i, cell) in usable.enumerated() {
                        let mine = these.filter { name($0) == backend && NotificationWorkload.label($0) == cell }
                        guard let e = estimate(mine.compactMap(value).filter { $0 > 0 }) else { continue }
                        var p = Chart.Point(x: Double(i), y: e.value, note: "\(backend), \(cell): \(describe(e, format)) \(unit)")
                        if let whisker, let w = Statistics.median(mine.compactMap(whisker).filter { $0.isFinite && $0 > 0 }) {
                            p.high = w
                            p.note += "; p99 \(format(w)) \(unit)"
                            all.append(w)
                        } else if e.count > 1 {
                            p.low = e.low; p.high = e.high
                        }
                        all.append(e.value)
                        points.append(p)
                    }
                    if !points.isEmpty { series.append(Chart.Series(name: backend, color: palette.color(backend), marker: palette.marker(backend), points: points)) }
                }
                let positive = all.filter { $0 > 0 }
                let wide = (positive.max() ?? 1) / max(positive.min() ?? 1, 1e-12) > 50
                return Chart(id: prefix + id + "-\(clients)-clients", title: title + " — \(clients) clients", subtitle: subtitle + " " + context + ".",
                             xTitle: "communication model", yTitle: yTitle + (wide ? ", log scale" : "") + ")",
                             yAxis: wide ? .log : .linear, categories: usable, series: series)
            }
            if let c = chart("notify-cpu-per-event", "Server CPU per delivered event", "Lower is better; bars: interval of the median.",
                             "server CPU per delivered event (µs", { $0.double(.serverCPUPerEvent) }, format: fixed(2), unit: "µs") { charts.append(c) }
            if let c = chart("notify-latency", "Notice latency", "From the moment an event was due to its arrival at the client: bar p50, whisker p99.",
                             "latency (ms", { $0.double(.eventLatencyP50).map { $0 / 1000 } }, whisker: { $0.double(.eventLatencyP99).map { $0 / 1000 } },
                             format: fixed(2), unit: "ms") { charts.append(c) }
            if let c = chart("notify-wire-bytes", "Bytes on the wire per delivered event", "Frame bytes both ways, requests and answers included; lower is better.",
                             "bytes per delivered event (B", { $0.double(.wireBytesPerEvent) }, format: fixed(0), unit: "B") { charts.append(c) }
        }
        return charts
    }

    /// One HdrHistogram percentile distribution (`.hgrm` text, as `iobench load --histogram`
    /// writes it): (value, percentile, total count) per line.
    public struct Spectrum: Sendable {
        public var name: String
        public var lines: [(value: Double, percentile: Double, count: Double)]
    }

    public static func parseHgrm(_ text: String, name: String) throws -> Spectrum {
        var lines: [(Double, Double, Double)] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count == 3 || fields.count == 4, let value = Double(fields[0]), let p = Double(fields[1]), let count = Double(fields[2]) else { continue }
            guard value.isFinite, p >= 0, p <= 1 else { throw ReportError.badSpectrum("\(name): the line '\(line)' is not value, percentile, count") }
            lines.append((value, p, count))
        }
        guard !lines.isEmpty else { throw ReportError.badSpectrum("\(name) holds no percentile lines: it is not an HdrHistogram .hgrm file") }
        return Spectrum(name: name, lines: lines)
    }

    /// The spectra of `.hgrm` files in one chart: a point at each of the usual percentiles.
    public static func spectrumChart(_ spectra: [Spectrum], palette: Palette, id: String = "latency-spectrum-hgrm") -> Chart? {
        var series: [Chart.Series] = []
        for s in spectra {
            var points: [Chart.Point] = []
            let total = s.lines.last?.count ?? 0
            for target in [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999] {
                guard 1 / (1 - target) <= total, let line = s.lines.first(where: { $0.percentile >= target }), line.percentile < 1 else { continue }
                let x = 1 / (1 - line.percentile)
                if points.last.map({ $0.x >= x }) == true { continue }
                points.append(Chart.Point(x: x, y: line.value, note: "\(s.name): \(Scale.percentileLabel(x)) \(String(format: "%.1f", line.value)) µs"))
            }
            if let last = s.lines.last, total > 1, points.last.map({ $0.x < total }) ?? true {
                points.append(Chart.Point(x: total, y: last.value, note: "\(s.name): max \(String(format: "%.1f", last.value)) µs of \(Int(total)) samples"))
            }
            guard !points.isEmpty else { continue }
            series.append(Chart.Series(name: s.name, color: palette.color(s.name), marker: palette.marker(s.name), points: points))
        }
        guard !series.isEmpty else { return nil }
        return Chart(id: id, title: "Latency spectrum — " + spectra.map(\.name).joined(separator: ", "),
                     subtitle: "HdrHistogram percentile distributions (.hgrm); the last point of each is its max.",
                     xTitle: "percentile (log scale of 1/(1−p))", yTitle: Metric.latencySpectrumAxisTitle, xAxis: .percentileTail, yAxis: .log, series: series)
    }
}

public enum ReportError: Error, CustomStringConvertible {
    case badSpectrum(String)
    public var description: String {
        switch self {
        case .badSpectrum(let why): why
        }
    }
}

extension ReportError: HarnessError {}
