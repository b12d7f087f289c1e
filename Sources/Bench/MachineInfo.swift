import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The machine a run was made on, recorded in every CSV row.
public struct MachineInfo: Sendable, Equatable {
    public var host: String
    public var kernel: String
    public var cpuModel: String
    public var cores: Int
    public var swiftVersion: String
    public var liburingVersion: String
    public var gitCommit: String

    public static func current() -> MachineInfo {
        var names = utsname()
        uname(&names)
        func text<T>(_ field: T) -> String {
            withUnsafeBytes(of: field) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        let cpuinfo = ProcessProbe.read("/proc/cpuinfo") ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { $0.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "" } ?? "unknown"
        return MachineInfo(
            host: text(names.nodename),
            kernel: text(names.release),
            cpuModel: model,
            cores: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))),
            swiftVersion: compilerVersion,
            liburingVersion: run("/usr/bin/pkg-config", ["--modversion", "liburing"]) ?? "unknown",
            gitCommit: run("/usr/bin/git", ["rev-parse", "--short=12", "HEAD"]) ?? "unknown")
    }

    /// The Swift compiler that built this binary.
    static var compilerVersion: String {
        #if compiler(>=6.4)
        return "6.4+"
        #elseif compiler(>=6.3)
        return "6.3"
        #elseif compiler(>=6.2)
        return "6.2"
        #elseif compiler(>=6.1)
        return "6.1"
        #else
        return "6.0"
        #endif
    }

    /// The first line a command prints, or nil when it fails.
    static func run(_ executable: String, _ arguments: [String]) -> String? {
        guard FileManager.default.isExecutableFile(atPath: executable) else { return nil }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").first.map(String.init)
    }
}
