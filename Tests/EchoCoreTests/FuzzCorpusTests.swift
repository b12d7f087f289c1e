import EchoCore
import Foundation
import TestSupport
import Testing

/// The fuzz target's committed corpus (Fuzz/corpus/rpc), replayed as a regression test: every
/// input libFuzzer kept, and every crash ever fixed, runs through the same exercise here.
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus/rpc")

    static var inputs: [URL] {
        (try? FileManager.default.contentsOfDirectory(at: corpus, includingPropertiesForKeys: nil))?.sorted { $0.path < $1.path } ?? []
    }

    @Test func theCorpusIsThere() {
        #expect(Self.inputs.count >= 10, "no corpus at \(Self.corpus.path)")
    }

    @Test("every corpus input keeps every promise", arguments: inputs)
    func corpusInput(_ file: URL) throws {
        let data = try Data(contentsOf: file)
        let problem = data.withUnsafeBytes { RpcSessionExercise.run($0) }
        #expect(problem == nil, "\(file.lastPathComponent): \(problem ?? "")")
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
