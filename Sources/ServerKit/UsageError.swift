/// A problem with what the user asked for, phrased as one sentence that names the thing and the fix.
public struct UsageError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
