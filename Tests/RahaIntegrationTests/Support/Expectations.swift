import Foundation
import Testing

/// Fetches the origin's small and big files through a proxy with curl and
/// expects both to arrive byte for byte.
func expectFetchesBoth(_ proxyArguments: [String], via: String, processes: [ManagedProcess] = [],
                       sourceLocation: SourceLocation = #_sourceLocation) throws {
    let origin = try Origin.shared()
    for (url, expected) in [(origin.smallURL, origin.small), (origin.bigURL, origin.big)] {
        let result = try Curl.fetch(proxyArguments + [url])
        #expect(result.status == 0, "\(via): curl \(url) exited \(result.status): \(result.stderr)\(outputs(processes))",
                sourceLocation: sourceLocation)
        // Compared as a Bool: a failed == on megabytes makes the test library compute a diff for ages.
        let identical = result.body == expected
        #expect(identical,
                "\(via): \(url) arrived as \(result.body.count) bytes\(firstDifference(result.body, expected)), expected \(expected.count) bytes exactly",
                sourceLocation: sourceLocation)
    }
}

/// Fetches a random file of `bytes` bytes that the origin serves as `name`
/// (made on first use) through `proxyArguments` and checks it byte for byte.
func expectFetchesFile(_ name: String, bytes: Int, _ proxyArguments: [String], via: String, processes: [ManagedProcess] = [],
                       maxTime: Int = 60, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let origin = try Origin.shared()
    let expected = try origin.randomFile(name, bytes: bytes)
    let result = try Curl.fetch(proxyArguments + [origin.url(name)], maxTime: maxTime)
    #expect(result.status == 0, "\(via): curl exited \(result.status): \(result.stderr)\(outputs(processes))", sourceLocation: sourceLocation)
    let identical = result.body == expected
    #expect(identical, "\(via): \(name) arrived as \(result.body.count) bytes\(firstDifference(result.body, expected)), expected \(bytes) exactly\(outputs(processes))",
            sourceLocation: sourceLocation)
}

/// Where two byte strings first differ, for messages.
func firstDifference(_ a: Data, _ b: Data) -> String {
    let x = [UInt8](a), y = [UInt8](b)
    let index = (0..<min(x.count, y.count)).first { x[$0] != y[$0] } ?? min(x.count, y.count)
    return index == a.count && index == b.count ? "" : " (first difference at byte \(index))"
}

/// The output of processes, for failure messages.
func outputs(_ processes: [ManagedProcess]) -> String {
    processes.map { "\n--- \($0.name) output:\n\($0.output)" }.joined()
}

func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
