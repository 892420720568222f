import Foundation
import RahaFuzz
import Testing

/// The fuzz targets, run without libFuzzer: every target over its seeds and
/// over every input that once crashed it or broke one of its properties
/// (Regressions/TARGET/, kept by hand from scripts/fuzz's finds). A target
/// traps on a broken property, so a regression brings the whole test run
/// down with the target's message, as it should.
@Suite struct FuzzTargetTests {
    static let regressions = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Regressions")

    @Test(arguments: FuzzTarget.all.map(\.name))
    func seedsKeepEveryProperty(_ name: String) throws {
        let target = try #require(FuzzTarget.named(name))
        #expect(!target.seeds.isEmpty, "every target starts from seeds")
        for seed in target.seeds { target.run(seed) }
    }

    @Test(arguments: FuzzTarget.all.map(\.name))
    func pastFindsStayFixed(_ name: String) throws {
        let target = try #require(FuzzTarget.named(name))
        let directory = Self.regressions.appendingPathComponent(name)
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        for file in files.sorted() {
            target.run(Array(try Data(contentsOf: directory.appendingPathComponent(file))))
        }
    }

    @Test func everyRegressionFolderNamesATarget() throws {
        let folders = (try? FileManager.default.contentsOfDirectory(atPath: Self.regressions.path)) ?? []
        for folder in folders where !folder.hasPrefix(".") && folder != "README.md" {
            #expect(FuzzTarget.named(folder) != nil, "Regressions/\(folder) names no fuzz target")
        }
    }
}
