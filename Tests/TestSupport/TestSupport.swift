import ServerKit
import Protocols
import BackendKit
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// Helpers shared by the test targets that drive the real iobench executable.

/// The `iobench` executable built next to this test bundle.
public let iobenchPath: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("iobench").path
}()

/// Runs the CLI to completion (bounded) and returns its exit status and output.
public func runCLI(_ arguments: [String], timeout: Double = 60) throws -> (status: Int32, stdout: String, stderr: String) {
    try runProcess(iobenchPath, arguments, timeout: timeout)
}

/// Runs a program to completion (bounded) and returns its exit status and output.
public func runProcess(_ executable: String, _ arguments: [String], timeout: Double = 60) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    // Drain both pipes while it runs, so a chatty child never blocks on a full pipe.
    let collected = Mutex<(Data, Data)>((Data(), Data()))
    let readers = [out, err].enumerated().map { index, pipe in
        try? OSThread(name: "test-drain") {
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            collected.withLock { if index == 0 { $0.0 = data } else { $0.1 = data } }
        }
    }
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(2000) }
    if process.isRunning { process.terminate() }
    process.waitUntilExit()
    readers.forEach { $0?.join() }
    let (stdout, stderr) = collected.withLock { $0 }
    return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
}

/// Polls `condition` until it holds or `timeout` passes.
public func eventually(timeout: Double = 10, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        usleep(10_000)
    }
    return try condition()
}

/// Builds frames by the specification (docs/PROTOCOL.md), independently of the server's code.
public enum Wire {
    public static func u32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) } }
    public static func u64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * $0)) } }
    public static func frame(_ type: UInt8, _ body: [UInt8]) -> [UInt8] { u32(UInt32(body.count)) + [type] + body }
    public static func request(id: UInt64, work: UInt32 = 0, _ payload: [UInt8]) -> [UInt8] {
        frame(0x01, u64(id) + u32(work) + payload)
    }
    public static func response(id: UInt64, _ payload: [UInt8]) -> [UInt8] { frame(0x02, u64(id) + payload) }
    public static func error(_ code: UInt16, _ reason: String) -> [UInt8] {
        frame(0x7F, [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8))
    }
}

