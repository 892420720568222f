import Foundation
import Testing
@testable import RahaWire

/// BLAKE3 against the BLAKE3 team's official test vectors
/// (shared/vectors/blake3-test-vectors.json, beside the package checkout).
@Suite struct BLAKE3Tests {
    struct Vectors {
        var key: [UInt8]
        var context: String
        var cases: [(length: Int, hash: [UInt8], keyedHash: [UInt8], deriveKey: [UInt8])]
    }

    /// Where the vector file may live: next to the package checkout (CI and the
    /// usual layout), or the fixed shared path of this machine.
    static func vectorFileCandidates(filePath: String = #filePath) -> [URL] {
        let packageRoot = URL(fileURLWithPath: filePath)
            .deletingLastPathComponent() // RahaWireTests
            .deletingLastPathComponent() // Tests
            .deletingLastPathComponent() // package root
        return [
            packageRoot.appendingPathComponent("../shared/vectors/blake3-test-vectors.json").standardizedFileURL,
            URL(fileURLWithPath: "/work/shared/vectors/blake3-test-vectors.json"),
        ]
    }

    /// Loads the vectors; a missing or unreadable file is a test failure, not a skip.
    static func loadVectors() throws -> Vectors {
        let candidates = vectorFileCandidates()
        let url = try #require(
            candidates.first { FileManager.default.isReadableFile(atPath: $0.path) },
            "BLAKE3 test vectors not found; looked at \(candidates.map(\.path))"
        )
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url))
        let top = try #require(json as? [String: Any], "vector file is not a JSON object")
        let key = try #require(top["key"] as? String, "vector file has no key")
        let context = try #require(top["context_string"] as? String, "vector file has no context_string")
        let rawCases = try #require(top["cases"] as? [[String: Any]], "vector file has no cases")
        var cases: [(Int, [UInt8], [UInt8], [UInt8])] = []
        for raw in rawCases {
            let length = try #require(raw["input_len"] as? Int, "case without input_len")
            let hash = (raw["hash"] as? String).flatMap(hexBytes)
            let keyed = (raw["keyed_hash"] as? String).flatMap(hexBytes)
            let derive = (raw["derive_key"] as? String).flatMap(hexBytes)
            cases.append((
                length,
                try #require(hash, "case \(length): no hash"),
                try #require(keyed, "case \(length): no keyed_hash"),
                try #require(derive, "case \(length): no derive_key")
            ))
        }
        return Vectors(key: Array(key.utf8), context: context, cases: cases)
    }

    /// The vector input: 0, 1, ..., 250, 0, 1, ... of the given length.
    static func input(_ length: Int) -> [UInt8] {
        (0..<length).map { UInt8($0 % 251) }
    }

    @Test func officialVectors() throws {
        let vectors = try Self.loadVectors()
        #expect(vectors.key.count == 32)
        #expect(!vectors.cases.isEmpty)
        // The file covers empty input, partial blocks, chunk boundaries and a
        // multi-level tree; make sure we did not silently read a truncated file.
        #expect(vectors.cases.contains { $0.length == 0 })
        #expect(vectors.cases.contains { $0.length > 16 * 1024 })
        for c in vectors.cases {
            let data = Self.input(c.length)
            let n = c.hash.count
            #expect(n == 131, "case \(c.length): expected an extended 131-byte output")

            #expect(BLAKE3.hash(data, outputLength: n) == c.hash, "hash, input_len \(c.length)")
            #expect(BLAKE3.hash(data) == Array(c.hash.prefix(32)), "hash default length, input_len \(c.length)")

            #expect(BLAKE3.keyedHash(key: vectors.key, data, outputLength: c.keyedHash.count) == c.keyedHash,
                    "keyed_hash, input_len \(c.length)")
            #expect(BLAKE3.keyedHash(key: vectors.key, data) == Array(c.keyedHash.prefix(32)),
                    "keyed_hash default length, input_len \(c.length)")

            #expect(BLAKE3.deriveKey(context: vectors.context, material: data, outputLength: c.deriveKey.count) == c.deriveKey,
                    "derive_key, input_len \(c.length)")
            #expect(BLAKE3.deriveKey(context: vectors.context, material: data) == Array(c.deriveKey.prefix(32)),
                    "derive_key default length, input_len \(c.length)")
        }
    }

    @Test func collectionKindsAgree() {
        for length in [0, 1, 64, 1025, 5000] {
            let array = Self.input(length)
            let expected = BLAKE3.hash(array)
            // Non-contiguous collection (takes the copying path).
            let lazy = (0..<length).lazy.map { UInt8($0 % 251) }
            #expect(BLAKE3.hash(lazy) == expected)
            // A slice that does not start at index 0.
            let padded = [UInt8](repeating: 0xAA, count: 7) + array
            #expect(BLAKE3.hash(padded[7...]) == expected)
            #expect(BLAKE3.deriveKey(context: "ctx", material: padded.dropFirst(7)) == BLAKE3.deriveKey(context: "ctx", material: array))
        }
    }

    @Test func outputLengths() {
        let data = Self.input(100)
        #expect(BLAKE3.hash(data, outputLength: 0) == [])
        let long = BLAKE3.hash(data, outputLength: 1000)
        #expect(long.count == 1000)
        for n in [1, 31, 32, 33, 63, 64, 65, 128, 131, 999] {
            #expect(BLAKE3.hash(data, outputLength: n) == Array(long.prefix(n)), "prefix \(n)")
        }
        let key = [UInt8](repeating: 7, count: 32)
        #expect(BLAKE3.keyedHash(key: key, data, outputLength: 200).prefix(32).elementsEqual(BLAKE3.keyedHash(key: key, data)))
    }

    @Test func modesAreSeparated() {
        let data = Self.input(48)
        let zeroKey = [UInt8](repeating: 0, count: 32)
        let hash = BLAKE3.hash(data)
        #expect(BLAKE3.keyedHash(key: zeroKey, data) != hash)
        #expect(BLAKE3.deriveKey(context: "", material: data) != hash)
        #expect(BLAKE3.deriveKey(context: "shadowsocks 2022 session subkey", material: data)
            != BLAKE3.deriveKey(context: "shadowsocks 2022 session subkeY", material: data))
    }

    /// A single byte of difference anywhere in a large input changes the hash
    /// (guards against chunks being skipped or misordered in the tree).
    @Test func everyChunkMatters() {
        let base = Self.input(9 * 1024 + 17)
        let reference = BLAKE3.hash(base)
        var seen: Set<[UInt8]> = [reference]
        for position in stride(from: 0, to: base.count, by: 1000) {
            var changed = base
            changed[position] ^= 1
            let h = BLAKE3.hash(changed)
            #expect(!seen.contains(h), "flip at \(position)")
            seen.insert(h)
        }
    }
}

private func hexBytes(_ text: String) -> [UInt8]? {
    let digits = Array(text.utf8)
    guard digits.count % 2 == 0 else { return nil }
    var out = [UInt8]()
    out.reserveCapacity(digits.count / 2)
    var i = 0
    while i < digits.count {
        guard let hi = hexValue(digits[i]), let lo = hexValue(digits[i + 1]) else { return nil }
        out.append(hi << 4 | lo)
        i += 2
    }
    return out
}

private func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
}
