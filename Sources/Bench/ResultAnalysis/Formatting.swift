import Foundation

/// A number with a fixed count of decimals, as written to CSV.
public func fixed(_ value: Double, _ decimals: Int) -> String {
    guard value.isFinite else { return "" }
    return String(format: "%.\(decimals)f", value)
}

/// 182345 -> "182.3k".
public func formatCount(_ value: Double) -> String {
    switch abs(value) {
    case 1e6...: String(format: "%.2fM", value / 1e6)
    case 1e3...: String(format: "%.1fk", value / 1e3)
    default: String(format: "%.0f", value)
    }
}
