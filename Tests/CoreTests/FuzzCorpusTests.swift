import ServerKit
import Protocols
import ProtocolTesting
import BackendKit
import Foundation
import TestSupport
import Testing

/// The fuzz targets' committed corpora (Fuzz/corpus/rpc, Fuzz/corpus/notify), replayed as
/// regression tests: every input libFuzzer kept, and every crash ever fixed, runs through the
/// same exercise here.
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus/rpc")
    static let notifyCorpus = corpus.deletingLastPathComponent().appendingPathComponent("notify")

    static var inputs: [URL] { files(corpus) }
    static var notifyInputs: [URL] { files(notifyCorpus) }

    static func files(_ directory: URL) -> [URL] {
        (try? FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil))?.sorted { $0.path < $1.path } ?? []
    }

    @Test func theCorporaAreThere() {
        #expect(Self.inputs.count >= 10, "no corpus at \(Self.corpus.path)")
        #expect(Self.notifyInputs.count >= 10, "no corpus at \(Self.notifyCorpus.path)")
    }

    @Test("every push and poll corpus input keeps every promise")
    func notifyCorpus() throws {
        // One test over all of them: the corpus holds hundreds of small inputs.
        for file in Self.notifyInputs {
            let data = try Data(contentsOf: file)
            let problem = data.withUnsafeBytes { NotificationSessionExercise.run($0) }
            #expect(problem == nil, "\(file.lastPathComponent): \(problem ?? "")")
        }
    }

    @Test("every corpus input keeps every promise", arguments: inputs)
    func corpusInput(_ file: URL) throws {
        let data = try Data(contentsOf: file)
        let problem = data.withUnsafeBytes { RpcSessionExercise.run($0) }
        #expect(problem == nil, "\(file.lastPathComponent): \(problem ?? "")")
    }

    @Test func theNotifyChecksCatchALostOrCorruptedEvent() throws {
        // Two subscribers and a publisher on one topic, each event read at once.
        func frame(_ kind: UInt8, _ body: [UInt8]) -> [UInt8] { Wire.u32(UInt32(body.count)) + [kind] + body }
        func feed(_ connection: UInt8, _ bytes: [UInt8]) -> [UInt8] { [connection, UInt8(bytes.count - 1)] + bytes }
        var input: [UInt8] = [0x7F << 1, 0]
        input += feed(0, frame(0x10, Wire.u32(1))) + feed(1, frame(0x10, Wire.u32(1)))
        for n in 0..<4 as Range<UInt8> {
            input += feed(2, frame(0x11, Wire.u32(1) + Wire.u64(0) + [n, n, n])) + [0 + 3 * 2, 1 + 3 * 2, 0 + 3, 1 + 3]
        }
        let clean = input.withUnsafeBytes { NotificationSessionExercise.run($0) }
        #expect(clean == nil, "\(clean ?? "")")
        let corrupted = input.withUnsafeBytes { NotificationSessionExercise.run($0, fault: .corruptEventPayload) }
        #expect(corrupted?.contains("payload") == true, "\(corrupted ?? "nothing caught")")
        let lost = input.withUnsafeBytes { NotificationSessionExercise.run($0, fault: .loseEvent) }
        #expect(lost?.contains("nothing dropped") == true, "\(lost ?? "nothing caught")")
    }

    @Test func theCheckCatchesAWrongAnswer() {
        let stream = Wire.request(id: 1, [1, 2, 3]) + Wire.frame(0x42, [9])
        let right = Wire.response(id: 1, [1, 2, 3]) + Wire.error(2, "unknown_type")
        var wrong = right
        wrong[14] ^= 1  // one payload bit
        stream.withUnsafeBytes { bytes in
            #expect(RpcSessionExercise.check(answers: right, to: bytes, ended: false) == nil)
            #expect(RpcSessionExercise.check(answers: wrong, to: bytes, ended: false) != nil)
            #expect(RpcSessionExercise.check(answers: Array(right.dropLast()), to: bytes, ended: false) != nil)
        }
    }
}
