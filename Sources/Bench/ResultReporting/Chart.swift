import ResultAnalysis
import Foundation

/// One chart, drawn as standalone SVG (no script, no fonts or files fetched): a line chart of
/// points with optional error bars, or grouped bars over categories. The figures are kept beside
/// the drawing so tests and the browser check can hold the SVG against them.
///
/// The SVG names what it draws: `.chart-title`, `.axis-title.x`, `.axis-title.y`, one
/// `g.series[data-series]` per series with its `.point`s (each with a `<title>` tooltip giving the
/// figure), `.legend-entry[data-series]`, so a page can be checked by structure, not by pixels.
public struct Chart: Sendable {
    public enum Axis: Sendable, Equatable {
        case linear
        case log
        /// A percentile p drawn at 1/(1−p) on a log axis, labelled as percentiles (HdrHistogram's
        /// plots): the x of a point is already 1/(1−p).
        case percentileTail
    }

    public enum Marker: String, Sendable, CaseIterable {
        case circle, square, triangle, diamond, ring, openTriangle, openDiamond, cross
        var filled: Bool { ![.ring, .openTriangle, .openDiamond, .cross].contains(self) }
    }

    public struct Point: Sendable {
        public var x: Double
        public var y: Double
        /// An error bar from `low` to `high` (a confidence interval, or a whisker the chart's
        /// note explains).
        public var low: Double?
        public var high: Double?
        /// A marker of its own (for example the bottleneck of that measurement).
        public var marker: Marker?
        /// The tooltip: what was measured, in words.
        public var note: String
        /// Printed beside the point (a bar's value).
        public var label: String?

        public init(x: Double, y: Double, low: Double? = nil, high: Double? = nil, marker: Marker? = nil, note: String = "", label: String? = nil) {
            self.x = x; self.y = y; self.low = low; self.high = high; self.marker = marker; self.note = note; self.label = label
        }
    }

    public struct Series: Sendable {
        public var name: String
        public var color: String
        public var marker: Marker
        public var dashed: Bool
        public var points: [Point]

        public init(name: String, color: String, marker: Marker = .circle, dashed: Bool = false, points: [Point]) {
            self.name = name; self.color = color; self.marker = marker; self.dashed = dashed; self.points = points
        }
    }

    /// A legend entry that explains a marker rather than a series.
    public struct MarkerKey: Sendable {
        public var marker: Marker
        public var meaning: String
        public init(_ marker: Marker, _ meaning: String) { self.marker = marker; self.meaning = meaning }
    }

    /// A short name, unique in a report: the SVG file's name and the page's anchor.
    public var id: String
    public var title: String
    public var subtitle: String
    public var xTitle: String
    public var yTitle: String
    public var xAxis: Axis
    public var yAxis: Axis
    /// Non-empty: grouped bars, one group per category; a point's x is its category's index.
    public var categories: [String]
    public var series: [Series]
    public var markerKeys: [MarkerKey]
    /// Ticks on the x axis at these values instead of round ones (connection counts).
    public var xTicks: [Double]?
    /// The legend shows each series' marker; off when the markers mean something else.
    public var legendMarkers = true

    public init(id: String, title: String, subtitle: String = "", xTitle: String, yTitle: String,
                xAxis: Axis = .linear, yAxis: Axis = .linear, categories: [String] = [], series: [Series], markerKeys: [MarkerKey] = []) {
        self.id = id; self.title = title; self.subtitle = subtitle; self.xTitle = xTitle; self.yTitle = yTitle
        self.xAxis = xAxis; self.yAxis = yAxis; self.categories = categories; self.series = series; self.markerKeys = markerKeys
    }

    public var isBars: Bool { !categories.isEmpty }
    public var pointCount: Int { series.reduce(0) { $0 + $1.points.count } }

    // MARK: - Drawing

    public static let width = 960.0
    static let font = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', Arial, sans-serif"

    /// The chart as an SVG document (or an element to inline in HTML: the same text).
    public func svg() -> String {
        let w = Chart.width
        let legend = legendLayout(width: w - 100)
        let subtitleLines = Chart.wrap(subtitle, width: 125)
        let plotTop = 52.0 + 17 * Double(subtitleLines.count)
        let plotHeight = 360.0
        let plotLeft = 92.0, plotRight = w - 28
        let plotBottom = plotTop + plotHeight
        let xTickBand = isBars ? 38.0 : 24.0
        let legendTop = plotBottom + xTickBand + 34
        let h = legendTop + legend.height + 12

        let xs = isBars ? [] : series.flatMap { $0.points.map(\.x) }
        let ys = series.flatMap { $0.points.flatMap { [$0.y, $0.low, $0.high].compactMap { $0 } } }
        var xScale = Scale(axis: xAxis, values: xs, range: (plotLeft, plotRight), startAtZero: false)
        xScale.fixedTicks = xTicks
        let yScale = Scale(axis: yAxis, values: ys, range: (plotBottom, plotTop), startAtZero: true)

        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" class="iobench-chart" data-chart="\(xmlEscape(id))" viewBox="0 0 \(svgNumber(w)) \(svgNumber(h))" width="\(svgNumber(w))" height="\(svgNumber(h))" role="img" aria-labelledby="\(xmlEscape(id))-title" font-family="\(xmlEscape(Chart.font))">

        """
        out += "<title id=\"\(xmlEscape(id))-title\">\(xmlEscape(title))</title>\n"
        out += "<rect class=\"background\" x=\"0\" y=\"0\" width=\"\(svgNumber(w))\" height=\"\(svgNumber(h))\" fill=\"#ffffff\"/>\n"
        out += "<text class=\"chart-title\" x=\"\(svgNumber(plotLeft))\" y=\"26\" font-size=\"19\" font-weight=\"600\" fill=\"#111111\">\(xmlEscape(title))</text>\n"
        if !subtitleLines.isEmpty {
            out += "<text class=\"chart-subtitle\" x=\"\(svgNumber(plotLeft))\" y=\"48\" font-size=\"13\" fill=\"#444444\">"
            for (i, line) in subtitleLines.enumerated() {
                out += "<tspan x=\"\(svgNumber(plotLeft))\" dy=\"\(i == 0 ? 0 : 17)\">\(xmlEscape(line))</tspan>"
            }
            out += "</text>\n"
        }
        // Grid lines at every tick; labels at the major ones (at all of them when fewer than
        // three are major).
        func gridAndLabels(_ scale: Scale, horizontal: Bool) -> String {
            var out = ""
            let ticks = scale.ticks()
            let labelAll = ticks.filter(\.major).count < 3
            for tick in ticks {
                let p = scale.position(tick.value)
                let (x1, x2, y1, y2) = horizontal ? (plotLeft, plotRight, p, p) : (p, p, plotTop, plotBottom)
                out += "<line x1=\"\(svgNumber(x1))\" x2=\"\(svgNumber(x2))\" y1=\"\(svgNumber(y1))\" y2=\"\(svgNumber(y2))\" stroke=\"\(tick.major ? "#d0d0d0" : "#ececec")\" stroke-width=\"1\"/>\n"
                guard tick.major || labelAll else { continue }
                let (x, y, anchor) = horizontal ? (plotLeft - 8, p + 4.5, "end") : (p, plotBottom + 20, "middle")
                out += "<text class=\"tick\" x=\"\(svgNumber(x))\" y=\"\(svgNumber(y))\" text-anchor=\"\(anchor)\">\(xmlEscape(tick.label))</text>\n"
            }
            return out
        }
        out += "<g class=\"axis y\" font-size=\"13\" fill=\"#333333\">\n" + gridAndLabels(yScale, horizontal: true) + "</g>\n"
        out += "<g class=\"axis x\" font-size=\"13\" fill=\"#333333\">\n"
        if isBars {
            let band = (plotRight - plotLeft) / Double(categories.count)
            for (i, category) in categories.enumerated() {
                let x = plotLeft + band * (Double(i) + 0.5)
                out += "<text class=\"tick\" x=\"\(svgNumber(x))\" y=\"\(svgNumber(plotBottom + 20))\" text-anchor=\"middle\">\(xmlEscape(category))</text>\n"
            }
        } else {
            out += gridAndLabels(xScale, horizontal: false)
        }
        out += "</g>\n"
        out += "<rect class=\"frame\" x=\"\(svgNumber(plotLeft))\" y=\"\(svgNumber(plotTop))\" width=\"\(svgNumber(plotRight - plotLeft))\" height=\"\(svgNumber(plotHeight))\" fill=\"none\" stroke=\"#888888\" stroke-width=\"1\"/>\n"
        out += "<text class=\"axis-title x\" x=\"\(svgNumber((plotLeft + plotRight) / 2))\" y=\"\(svgNumber(plotBottom + xTickBand + 20))\" text-anchor=\"middle\" font-size=\"14\" fill=\"#111111\">\(xmlEscape(xTitle))</text>\n"
        out += "<text class=\"axis-title y\" transform=\"translate(22 \(svgNumber((plotTop + plotBottom) / 2))) rotate(-90)\" text-anchor=\"middle\" font-size=\"14\" fill=\"#111111\">\(xmlEscape(yTitle))</text>\n"

        // Series.
        // A category's bars sit side by side, centred, whichever series have a value there.
        func barSlot(_ series: Int, _ category: Int) -> (index: Int, count: Int) {
            let present = self.series.indices.filter { s in self.series[s].points.contains { Int($0.x) == category } }
            return (present.firstIndex(of: series) ?? 0, max(present.count, 1))
        }
        let widest = categories.indices.map { barSlot(0, $0).count }.max() ?? 1
        for (index, s) in series.enumerated() {
            out += "<g class=\"series\" data-series=\"\(xmlEscape(s.name))\" data-color=\"\(s.color)\" data-points=\"\(s.points.count)\">\n"
            if isBars {
                let band = (plotRight - plotLeft) / Double(categories.count)
                let barWidth = min(64, band * 0.8 / Double(widest))
                for p in s.points {
                    let slot = barSlot(index, Int(p.x))
                    let left = plotLeft + band * (p.x + 0.5) - barWidth * Double(slot.count) / 2 + barWidth * Double(slot.index)
                    let top = yScale.position(p.y), base = yScale.position(yScale.floor)
                    out += "<rect class=\"point bar\" x=\"\(svgNumber(left + 1))\" y=\"\(svgNumber(min(top, base)))\" width=\"\(svgNumber(barWidth - 2))\" height=\"\(svgNumber(max(abs(base - top), 1)))\" fill=\"\(s.color)\"><title>\(xmlEscape(p.note))</title></rect>\n"
                    out += errorBar(p, x: left + barWidth / 2, scale: yScale, color: "#222222", cap: barWidth * 0.3)
                    if let label = p.label {
                        let above = yScale.position(p.high ?? p.y) - 6
                        out += "<text class=\"value\" x=\"\(svgNumber(left + barWidth / 2))\" y=\"\(svgNumber(above))\" text-anchor=\"middle\" font-size=\"13\" fill=\"#111111\">\(xmlEscape(label))</text>\n"
                    }
                }
            } else {
                let sorted = s.points.sorted { $0.x < $1.x }
                if sorted.count > 1 {
                    let d = sorted.enumerated().map { i, p in "\(i == 0 ? "M" : "L")\(svgNumber(xScale.position(p.x))),\(svgNumber(yScale.position(p.y)))" }.joined(separator: " ")
                    out += "<path class=\"line\" d=\"\(d)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2.5\"\(s.dashed ? " stroke-dasharray=\"7 5\"" : "")/>\n"
                }
                for p in sorted {
                    let x = xScale.position(p.x), y = yScale.position(p.y)
                    out += errorBar(p, x: x, scale: yScale, color: s.color, cap: 5)
                    out += "<path class=\"point\" d=\"\(Chart.markerPath(p.marker ?? s.marker, x: x, y: y, r: 5.5))\" fill=\"\((p.marker ?? s.marker).filled ? s.color : "#ffffff")\" stroke=\"\(s.color)\" stroke-width=\"2\"><title>\(xmlEscape(p.note))</title></path>\n"
                }
            }
            out += "</g>\n"
        }
        out += legend.svg(left: plotLeft, top: legendTop)
        out += "</svg>\n"
        return out
    }

    private func errorBar(_ p: Point, x: Double, scale: Scale, color: String, cap: Double) -> String {
        guard p.low != nil || p.high != nil else { return "" }
        let low = scale.position(p.low ?? p.y), high = scale.position(p.high ?? p.y)
        guard abs(low - high) >= 0.5 else { return "" }
        var d = "M\(svgNumber(x)),\(svgNumber(low)) L\(svgNumber(x)),\(svgNumber(high))"
        if p.low != nil { d += " M\(svgNumber(x - cap)),\(svgNumber(low)) L\(svgNumber(x + cap)),\(svgNumber(low))" }
        if p.high != nil { d += " M\(svgNumber(x - cap)),\(svgNumber(high)) L\(svgNumber(x + cap)),\(svgNumber(high))" }
        return "<path class=\"error-bar\" d=\"\(d)\" stroke=\"\(color)\" stroke-width=\"1.5\" fill=\"none\"/>\n"
    }

    static func markerPath(_ marker: Marker, x: Double, y: Double, r: Double) -> String {
        switch marker {
        case .circle, .ring:
            return "M\(svgNumber(x - r)),\(svgNumber(y)) a\(svgNumber(r)),\(svgNumber(r)) 0 1,0 \(svgNumber(2 * r)),0 a\(svgNumber(r)),\(svgNumber(r)) 0 1,0 \(svgNumber(-2 * r)),0 Z"
        case .square:
            let s = r * 0.9
            return "M\(svgNumber(x - s)),\(svgNumber(y - s)) H\(svgNumber(x + s)) V\(svgNumber(y + s)) H\(svgNumber(x - s)) Z"
        case .triangle, .openTriangle:
            return "M\(svgNumber(x)),\(svgNumber(y - r * 1.15)) L\(svgNumber(x + r * 1.1)),\(svgNumber(y + r * 0.8)) L\(svgNumber(x - r * 1.1)),\(svgNumber(y + r * 0.8)) Z"
        case .diamond, .openDiamond:
            return "M\(svgNumber(x)),\(svgNumber(y - r * 1.25)) L\(svgNumber(x + r * 1.1)),\(svgNumber(y)) L\(svgNumber(x)),\(svgNumber(y + r * 1.25)) L\(svgNumber(x - r * 1.1)),\(svgNumber(y)) Z"
        case .cross:
            return "M\(svgNumber(x - r)),\(svgNumber(y - r)) L\(svgNumber(x + r)),\(svgNumber(y + r)) M\(svgNumber(x + r)),\(svgNumber(y - r)) L\(svgNumber(x - r)),\(svgNumber(y + r))"
        }
    }

    /// Words into lines of at most `width` characters.
    static func wrap(_ text: String, width: Int) -> [String] {
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ") {
            if !line.isEmpty && line.count + 1 + word.count > width {
                lines.append(line)
                line = ""
            }
            line += (line.isEmpty ? "" : " ") + word
        }
        if !line.isEmpty { lines.append(line) }
        return lines
    }

    // MARK: - Legend

    struct LegendLayout {
        struct Entry { var kind: String; var name: String; var color: String; var marker: Marker?; var dashed: Bool; var line: Bool; var x: Double; var row: Int }
        var entries: [Entry]
        var rows: Int
        var height: Double { Double(rows) * 22 }

        func svg(left: Double, top: Double) -> String {
            var out = "<g class=\"legend\" font-size=\"13\" fill=\"#111111\">\n"
            for e in entries {
                let x = left + e.x, y = top + Double(e.row) * 22
                out += "<g class=\"legend-entry \(e.kind)\" data-series=\"\(xmlEscape(e.name))\">"
                if e.line {
                    out += "<line x1=\"\(svgNumber(x))\" x2=\"\(svgNumber(x + 26))\" y1=\"\(svgNumber(y))\" y2=\"\(svgNumber(y))\" stroke=\"\(e.color)\" stroke-width=\"2.5\"\(e.dashed ? " stroke-dasharray=\"7 5\"" : "")/>"
                }
                if let marker = e.marker {
                    out += "<path d=\"\(Chart.markerPath(marker, x: x + 13, y: y, r: 5))\" fill=\"\(marker.filled ? e.color : "#ffffff")\" stroke=\"\(e.color)\" stroke-width=\"2\"/>"
                }
                out += "<text x=\"\(svgNumber(x + 32))\" y=\"\(svgNumber(y + 4.5))\">\(xmlEscape(e.name))</text></g>\n"
            }
            return out + "</g>\n"
        }
    }

    func legendLayout(width: Double) -> LegendLayout {
        var entries: [LegendLayout.Entry] = []
        var x = 0.0, row = 0
        func place(_ kind: String, _ name: String, _ color: String, _ marker: Marker?, _ dashed: Bool, _ line: Bool) {
            let entryWidth = 40 + Double(name.count) * 7.6 + 18
            if x > 0 && x + entryWidth > width { x = 0; row += 1 }
            entries.append(.init(kind: kind, name: name, color: color, marker: marker, dashed: dashed, line: line, x: x, row: row))
            x += entryWidth
        }
        for s in series {
            place("series", s.name, s.color, isBars ? .square : legendMarkers ? s.marker : nil, s.dashed, !isBars)
        }
        if !markerKeys.isEmpty { x = 0; row += 1 }
        for key in markerKeys { place("marker", key.meaning, "#333333", key.marker, false, false) }
        return LegendLayout(entries: entries, rows: row + 1)
    }
}

// MARK: - Scales

struct Tick { var value: Double; var label: String; var major: Bool }

struct Scale {
    let axis: Chart.Axis
    let lower: Double, upper: Double
    let range: (Double, Double)
    var fixedTicks: [Double]?

    init(axis: Chart.Axis, values: [Double], range: (Double, Double), startAtZero: Bool) {
        self.axis = axis
        self.range = range
        let finite = values.filter { $0.isFinite && (axis == .linear || $0 > 0) }
        switch axis {
        case .linear:
            var low = finite.min() ?? 0, high = finite.max() ?? 1
            if startAtZero || low > 0 && low < high * 0.25 { low = min(low, 0) }
            if high <= low { high = low + (low == 0 ? 1 : abs(low) * 0.5) }
            let step = Scale.niceStep((high - low) / 5)
            lower = (low / step).rounded(.down) * step
            upper = (high * 1.04 / step).rounded(.up) * step
        case .log, .percentileTail:
            var low = finite.min() ?? 1, high = finite.max() ?? 10
            if axis == .percentileTail { low = 1 }
            if high <= low { low /= 2; high *= 2 }
            var lo = Foundation.pow(10, Foundation.floor(Foundation.log10(low)))
            var hi = Foundation.pow(10, Foundation.ceil(Foundation.log10(high)))
            // Hug the data at the 1-2-5 steps around it (a percentile axis keeps its decades).
            if axis == .log {
                for f in [5.0, 2.0] where lo * f <= low { lo *= f; break }
                for f in [0.2, 0.5] where hi * f >= high { hi *= f; break }
            }
            lower = lo; upper = hi
        }
    }

    /// The bottom of the axis, where bars stand.
    var floor: Double { axis == .linear ? max(lower, 0) : lower }

    func position(_ value: Double) -> Double {
        let t: Double
        switch axis {
        case .linear: t = (value - lower) / (upper - lower)
        case .log, .percentileTail:
            t = (Foundation.log10(max(value, lower * 1e-3)) - Foundation.log10(lower)) / (Foundation.log10(upper) - Foundation.log10(lower))
        }
        return range.0 + (range.1 - range.0) * t
    }

    func ticks() -> [Tick] {
        if let fixedTicks {
            return fixedTicks.filter { $0 >= lower && $0 <= upper }.map { Tick(value: $0, label: Scale.label($0), major: true) }
        }
        switch axis {
        case .linear:
            let step = Scale.niceStep((upper - lower) / 5)
            var ticks: [Tick] = []
            var v = lower
            while v <= upper + step * 1e-9 {
                ticks.append(Tick(value: v, label: Scale.label(abs(v) < step * 1e-9 ? 0 : v), major: true))
                v += step
            }
            return ticks
        case .log, .percentileTail:
            var ticks: [Tick] = []
            let decades = Foundation.log10(upper / lower)
            var decade = Foundation.pow(10, Foundation.floor(Foundation.log10(lower)))
            while decade <= upper * 1.0001 {
                for f in [1.0, 2.0, 5.0] {
                    let v = decade * f
                    guard v >= lower * 0.9999 && v <= upper * 1.0001 else { continue }
                    let major = f == 1 || decades <= 2.5
                    if axis == .percentileTail {
                        // Percentiles sit at 1/(1−p): 2 = 50%, 10 = 90%, 100 = 99%...
                        guard (f == 1 && v > 1) || (f == 2 && decade == 1) else { continue }
                        ticks.append(Tick(value: v, label: Scale.percentileLabel(v), major: true))
                    } else {
                        ticks.append(Tick(value: v, label: Scale.label(v), major: major))
                    }
                }
                decade *= 10
            }
            return ticks
        }
    }

    static func niceStep(_ raw: Double) -> Double {
        guard raw > 0 && raw.isFinite else { return 1 }
        let magnitude = Foundation.pow(10, Foundation.floor(Foundation.log10(raw)))
        let f = raw / magnitude
        return magnitude * (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10)
    }

    /// 0.5, 12, 1.5k, 2M: short enough for a tick.
    static func label(_ v: Double) -> String {
        let a = abs(v)
        func trim(_ s: String) -> String {
            guard s.contains(".") else { return s }
            var t = s
            while t.hasSuffix("0") { t.removeLast() }
            if t.hasSuffix(".") { t.removeLast() }
            return t
        }
        if a >= 1e9 { return trim(String(format: "%.2f", v / 1e9)) + "G" }
        if a >= 1e6 { return trim(String(format: "%.2f", v / 1e6)) + "M" }
        if a >= 1e4 { return trim(String(format: "%.1f", v / 1e3)) + "k" }
        if a >= 1000 { return trim(String(format: "%.2f", v / 1e3)) + "k" }
        if a >= 1 || a == 0 { return trim(String(format: "%.2f", v)) }
        return trim(String(format: "%.4g", v))
    }

    static func percentileLabel(_ x: Double) -> String {
        if x <= 1 { return "0%" }
        let p = (1 - 1 / x) * 100
        let s = String(format: "%.6f", p)
        var t = s
        while t.hasSuffix("0") { t.removeLast() }
        if t.hasSuffix(".") { t.removeLast() }
        return t + "%"
    }
}

/// Six-figure precision for coordinates, without exponent notation.
func svgNumber(_ v: Double) -> String {
    guard v.isFinite else { return "NaN" }  // shown, never hidden: the tests look for it
    let r = (v * 100).rounded() / 100
    if r == r.rounded() { return String(Int(r)) }
    return String(format: "%.2f", r)
}

/// Text made safe for XML content and attributes.
func xmlEscape(_ s: String) -> String {
    var out = ""
    out.reserveCapacity(s.count)
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        default: out.append(c)
        }
    }
    return out
}
