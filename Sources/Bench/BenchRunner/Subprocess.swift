import ResultReporting
import LoadGeneration
import ResultAnalysis
import Foundation

/// Runs a tool to its end with empty input: the harness's git, strip, swift and
/// callgrind_control calls.
enum Subprocess {
    /// Its exit status (-1 when it could not start) and what it printed: stdout, with stderr
    /// merged in unless `discardErrors`.
    static func run(_ executable: String, _ arguments: [String], discardErrors: Bool = false) -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = discardErrors ? FileHandle.nullDevice : out
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { return (-1, "\(error)") }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
