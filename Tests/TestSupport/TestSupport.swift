import EchoCore
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
    let process = Process()
    process.executableURL = URL(fileURLWithPath: iobenchPath)
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
