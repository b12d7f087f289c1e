// libFuzzer entry point for the push and poll sessions: every input is run through
// NotificationSessionExercise (three connections sharing one hub), and a broken promise is a
// crash. Built by `make fuzz` with swiftc directly, like the rpc target.
import ServerKit
import Protocols
import ProtocolTesting

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    if let problem = NotificationSessionExercise.run(UnsafeRawBufferPointer(start: data, count: size)) {
        fatalError("notification sessions: \(problem)")
    }
    return 0
}
