import ResultReporting
import LoadGeneration
import ResultAnalysis
import ServerKit
import Protocols
import BackendKit
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Counts a server's user-space work with valgrind's callgrind: instructions executed and calls
/// into the heap allocator, between two instants the harness chooses (`zero`, then `dump`).
/// Counts do not depend on how fast the machine is today, only on the binary and the work, so
/// they can be compared across days and machines (for one binary's toolchain).
///
/// Facts this relies on (checked on Debian's valgrind 3.19): it cannot read the DWARF 5 that
/// Swift 6.3 writes, so the server runs from a copy with its debug sections stripped (`strip
/// -g`; symbols stay, so allocator calls are still named); `callgrind_control` reaches a server
/// blocked in a system call through vgdb; a server under valgrind may not stop on SIGTERM, so
/// it is stopped by `quit` and then SIGKILL.
public enum Callgrind {
    public struct Counts: Sendable, Equatable {
        /// User-space instructions executed (callgrind's `Ir`), every thread.
        public var instructions: UInt64
        /// Calls into malloc, calloc, realloc, posix_memalign, aligned_alloc and memalign from
        /// outside the allocator.
        public var allocations: UInt64
    }

    public enum Failure: Error, CustomStringConvertible {
        case missingTool(String)
        case failed(String)
        public var description: String {
            switch self {
            case .missingTool(let why), .failed(let why): why
            }
        }
    }

    static let valgrind = "/usr/bin/valgrind"
    static let control = "/usr/bin/callgrind_control"

    /// Says what is missing, in one sentence, or nil when counting can run here.
    public static func unavailableReason() -> String? {
        for tool in [valgrind, control, "/usr/bin/strip"] where !FileManager.default.isExecutableFile(atPath: tool) {
            return "counted measurements need \(tool): run 'make deps' (it installs valgrind and binutils)"
        }
        return nil
    }

    /// A copy of `executable` without debug sections, made once per binary (path, size and
    /// modification time) in the temporary folder.
    static func strippedCopy(of executable: String) throws -> String {
        let attributes = try FileManager.default.attributesOfItem(atPath: executable)
        let size = (attributes[.size] as? NSNumber)?.intValue ?? 0
        let modified = Int((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)
        let tag = "\(UInt(bitPattern: stableHash(executable)))-\(size)-\(modified)"
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("iobench-nodebug-\(tag)").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
        let partial = path + ".\(getpid())"
        let (status, output) = Subprocess.run("/usr/bin/strip", ["-g", "-o", partial, executable])
        guard status == 0 else { throw Failure.failed("strip -g \(executable) failed: \(output)") }
        guard rename(partial, path) == 0 else { throw Failure.failed("cannot move the stripped copy to \(path): \(Errno.current)") }
        return path
    }

    /// FNV-1a: a hash that is the same in every process (Swift's Hasher is seeded per process).
    static func stableHash(_ text: String) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return Int(truncatingIfNeeded: hash)
    }

    /// Starts `executable serve …` under callgrind with collection on and counters that the
    /// caller zeroes at its window's start.
    public static func startServer(executable: String, arguments: [String], outputDirectory: String) throws -> ServerProcess {
        if let reason = unavailableReason() { throw Failure.missingTool(reason) }
        let stripped = try strippedCopy(of: executable)
        return try ServerProcess(executable: valgrind, arguments: [
            "--tool=callgrind", "--callgrind-out-file=\(outputDirectory)/callgrind.%p",
            "--compress-strings=no", "--compress-pos=no", "--dump-instr=no",
            stripped,
        ] + arguments, startupTimeout: 60)
    }

    /// Zeroes the counters of the callgrind process `pid` (`callgrind_control -z`).
    public static func zero(pid: Int32) throws {
        let (status, output) = Subprocess.run(control, ["-z", "\(pid)"])
        guard status == 0, output.contains("OK") else { throw Failure.failed("callgrind_control -z \(pid) failed: \(output)") }
    }

    /// Dumps the counters of the callgrind process `pid` (`callgrind_control -d`) and reads
    /// the new dump from `outputDirectory`.
    public static func dump(pid: Int32, outputDirectory: String) throws -> Counts {
        let before = dumps(pid: pid, in: outputDirectory)
        let (status, output) = Subprocess.run(control, ["-d", "\(pid)"])
        guard status == 0, output.contains("OK") else { throw Failure.failed("callgrind_control -d \(pid) failed: \(output)") }
        // The dump is written before callgrind_control answers OK; look briefly in case the
        // file system is slow to show it.
        for _ in 0..<200 {
            if let newest = dumps(pid: pid, in: outputDirectory).subtracting(before).max(by: { dumpNumber($0) < dumpNumber($1) }),
               let text = try? String(contentsOfFile: outputDirectory + "/" + newest, encoding: .utf8),
               let counts = parse(text) {
                return counts
            }
            usleep(10_000)
        }
        throw Failure.failed("callgrind_control -d \(pid) answered but no readable dump appeared in \(outputDirectory)")
    }

    static func dumps(pid: Int32, in directory: String) -> Set<String> {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return Set(names.filter { $0.hasPrefix("callgrind.\(pid).") })
    }

    static func dumpNumber(_ name: String) -> Int { Int(name.split(separator: ".").last ?? "") ?? 0 }

    static let allocators: Set<String> = ["malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign",
                                          "__libc_malloc", "__libc_calloc", "__libc_realloc", "__libc_memalign"]

    /// An allocator entry point, or glibc's own machinery behind one: `posix_memalign` calls
    /// `malloc` through `_mid_memalign`, and that inner call is the same allocation, not a
    /// second one.
    static func isAllocator(_ name: String) -> Bool {
        allocators.contains(name) || name.hasPrefix("_mid_memalign") || name.hasPrefix("_int_") || name.hasPrefix("_libc_")
    }

    /// Reads a callgrind dump written with `--compress-strings=no`: the `summary:` line (or
    /// `totals:`) for instructions, and `calls=` lines under a `cfn=` naming an allocator, from
    /// a function that is not one, for allocations.
    static func parse(_ text: String) -> Counts? {
        var instructions: UInt64?
        var allocations: UInt64 = 0
        var function = ""
        var callee = ""
        func bare(_ name: Substring) -> String {
            // "malloc'2" is a recursion level of malloc.
            String(name.split(separator: "'").first ?? "")
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("fn=") {
                function = bare(line.dropFirst(3))
            } else if line.hasPrefix("cfn=") {
                callee = bare(line.dropFirst(4))
            } else if line.hasPrefix("calls=") {
                if isAllocator(callee) && !isAllocator(function),
                   let count = UInt64(line.dropFirst(6).split(separator: " ").first ?? "") {
                    allocations += count
                }
            } else if line.hasPrefix("summary:") {
                instructions = UInt64(line.dropFirst(8).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
            } else if line.hasPrefix("totals:"), instructions == nil {
                instructions = UInt64(line.dropFirst(7).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
            }
        }
        return instructions.map { Counts(instructions: $0, allocations: allocations) }
    }
}

extension Callgrind.Failure: HarnessError {}
