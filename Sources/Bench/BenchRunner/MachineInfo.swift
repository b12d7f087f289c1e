import ResultReporting
import LoadGeneration
import ResultAnalysis
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
    /// Whether the iobench sources (Sources/, Package.swift, Package.resolved) differed from
    /// the commit: counts from a dirty tree belong to no commit.
    public var gitDirty: Bool
    /// How the running binary was built: release or debug.
    public var buildConfiguration: String

    /// The machine, and the build of the binary at `executable` (default: this one): its commit
    /// is read from the package the binary was built in, so a binary built from another ref (in
    /// a worktree) reports that ref.
    public static func current(executable: String? = nil) -> MachineInfo {
        var names = utsname()
        uname(&names)
        func text<T>(_ field: T) -> String {
            withUnsafeBytes(of: field) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        let cpuinfo = ProcessProbe.read("/proc/cpuinfo") ?? ""
        let package = packageDirectory(of: executable ?? selfExecutablePath())
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { $0.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "" } ?? "unknown"
        return MachineInfo(
            host: text(names.nodename),
            kernel: text(names.release),
            cpuModel: model,
            cores: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))),
            swiftVersion: compilerVersion,
            liburingVersion: run("/usr/bin/pkg-config", ["--modversion", "liburing"]) ?? "unknown",
            gitCommit: run("/usr/bin/git", ["-C", package, "rev-parse", "--short=12", "HEAD"]) ?? "unknown",
            gitDirty: !(output("/usr/bin/git", ["-C", package, "status", "--porcelain", "--", "Sources", "Package.swift", "Package.resolved"]) ?? "").isEmpty,
            buildConfiguration: buildConfiguration)
    }

    #if DEBUG
    public static let buildConfiguration = "debug"
    #else
    public static let buildConfiguration = "release"
    #endif

    static func selfExecutablePath() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// The folder holding Package.swift above a binary in its .build folder (or the current folder).
    public static func packageDirectory(of executable: String) -> String {
        var url = URL(fileURLWithPath: executable).deletingLastPathComponent()
        while url.path != "/" {
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
            url.deleteLastPathComponent()
        }
        return FileManager.default.currentDirectoryPath
    }

    /// The Swift compiler that built this binary (counted costs compare only between binaries
    /// of the same compiler).
    static var compilerVersion: String {
        #if compiler(>=6.4)
        return "6.4+"
        #elseif compiler(>=6.3.2)
        return "6.3.2+"
        #elseif compiler(>=6.3.1)
        return "6.3.1"
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
        output(executable, arguments)?.split(separator: "\n").first.map(String.init)
    }

    /// What a command prints on stdout, or nil when it fails.
    static func output(_ executable: String, _ arguments: [String]) -> String? {
        guard FileManager.default.isExecutableFile(atPath: executable) else { return nil }
        let (status, output) = Subprocess.run(executable, arguments, discardErrors: true)
        return status == 0 ? output : nil
    }
}

extension ResultRow {
    /// Records the machine and the build a row was measured on (its host, kernel, CPU, cores,
    /// Swift and liburing versions, commit, dirty flag and build configuration).
    public mutating func record(machine: MachineInfo) {
        self["host"] = machine.host
        self["kernel"] = machine.kernel
        self["cpu_model"] = machine.cpuModel
        self["cores"] = "\(machine.cores)"
        self["swift_version"] = machine.swiftVersion
        self["liburing_version"] = machine.liburingVersion
        self["git_commit"] = machine.gitCommit
        self["git_dirty"] = machine.gitDirty ? "yes" : "no"
        self["build_config"] = machine.buildConfiguration
    }
}

extension RegressionCheck {
    /// The machine fields that must match for absolute comparisons to be fair.
    public static func machineDifferences(baseline: ResultRow, now: MachineInfo) -> [String] {
        var differences: [String] = []
        let pairs: [(String, String)] = [("host", now.host), ("cpu_model", now.cpuModel), ("cores", "\(now.cores)"),
                                         ("kernel", now.kernel), ("swift_version", now.swiftVersion)]
        for (column, value) in pairs where (baseline[column] ?? "") != value {
            differences.append("\(column) was '\(baseline[column] ?? "")', now '\(value)'")
        }
        return differences
    }
}
