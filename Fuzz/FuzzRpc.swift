// libFuzzer entry point for the frame decoder and the rpc session: every input is run through
// RpcSessionExercise, and a broken promise is a crash. Built by `make fuzz` with swiftc
// directly (SwiftPM renames an executable's `main`, which libFuzzer provides).
import ServerKit
import Protocols
import ProtocolTesting

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    if let problem = RpcSessionExercise.run(UnsafeRawBufferPointer(start: data, count: size)) {
        fatalError("rpc session: \(problem)")
    }
    return 0
}
