import NIOCore
import RahaWire

/// One libFuzzer target: a name for `scripts/fuzz`, and a function that must
/// return for any bytes at all. Beyond not crashing, each target checks
/// properties of the code it drives (a message read whole and read in
/// dribbles gives the same result; what is written is read back the same);
/// a broken property traps, which libFuzzer reports like any crash.
///
/// The same functions replay the seed corpora and every crash found so far
/// in the test suite (Tests/RahaFuzzTests), without sanitizers.
public struct FuzzTarget: Sendable {
    public let name: String
    /// What it reads, for `scripts/fuzz --list`.
    public let summary: String
    public let run: @Sendable ([UInt8]) -> Void
    private let makeSeeds: @Sendable () -> [[UInt8]]

    /// - Parameter seeds: the inputs fuzzing starts from (see Seeds.swift).
    init(_ name: String, _ summary: String, seeds: @escaping @Sendable () -> [[UInt8]], _ run: @escaping @Sendable ([UInt8]) -> Void) {
        self.name = name
        self.summary = summary
        self.makeSeeds = seeds
        self.run = run
    }

    /// Well-formed inputs in the target's format, shaped like the unit tests' messages.
    public var seeds: [[UInt8]] { makeSeeds() }

    public static func named(_ name: String) -> FuzzTarget? {
        all.first { $0.name == name }
    }

    public static let all: [FuzzTarget] = [
        socks5, httpProxy, httpResponse,
        shadowsocksStream, shadowsocksPacket, trojan, mux, webSocket,
        dnsMessage, dnsTunnel, arq,
        smtp, imap, mail,
        accessKey, html,
    ]
}

/// Traps with `message` when a property the target checks does not hold.
func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("property broken: " + message()) }
}

/// The fuzzer's bytes read front to back as a series of choices. Reading past
/// the end gives zeros, so that every input means something.
struct FuzzInput {
    private var bytes: ArraySlice<UInt8>

    init(_ bytes: [UInt8]) { self.bytes = bytes[...] }

    var isEmpty: Bool { bytes.isEmpty }

    mutating func byte() -> UInt8 { bytes.popFirst() ?? 0 }

    mutating func uint16() -> Int { Int(byte()) << 8 | Int(byte()) }

    /// Up to `count` bytes.
    mutating func take(_ count: Int) -> [UInt8] {
        let taken = bytes.prefix(count)
        bytes = bytes.dropFirst(count)
        return Array(taken)
    }

    /// A length-prefixed piece (one byte of length): the way targets let the
    /// fuzzer build a message out of parts.
    mutating func piece() -> [UInt8] { take(Int(byte())) }

    mutating func rest() -> [UInt8] {
        defer { bytes = [] }
        return Array(bytes)
    }
}

/// `bytes` cut into pieces of 1 to 16 bytes, their sizes drawn from `seed`:
/// the same bytes arriving a few at a time, as a slow or hostile peer sends
/// them.
func dribbled(_ bytes: [UInt8], seed: UInt8) -> [[UInt8]] {
    var state = UInt32(seed) | 0x100
    var pieces: [[UInt8]] = []
    var start = 0
    while start < bytes.count {
        state = state &* 1_103_515_245 &+ 12345
        let size = 1 + Int((state >> 16) % 16)
        let end = min(bytes.count, start + size)
        pieces.append(Array(bytes[start..<end]))
        start = end
    }
    return pieces
}

/// What `outcome` makes of `bytes` read whole, which must be what it makes
/// of them read in dribbles (see `dribbled`); `what` names the bytes in the
/// message when it is not.
@discardableResult
func sameInDribbles<Outcome: Equatable>(_ bytes: [UInt8], seed: UInt8, _ what: String,
                                        _ outcome: ([[UInt8]]) -> Outcome) -> Outcome {
    let whole = outcome([bytes])
    let inDribbles = outcome(dribbled(bytes, seed: seed))
    check(whole == inDribbles, "\(what) read whole gave \(whole), in dribbles \(inDribbles)")
    return whole
}

/// Everything an incremental parser yields, and the error that ended it, if one did.
struct Parsed<Item: Equatable>: Equatable {
    var items: [Item] = []
    var error: String?
}

/// What an incremental parser yields from `pieces` arriving in turn (each
/// fed, then `next` until it wants more).
func parseAll<Parser, Item>(_ pieces: [[UInt8]], _ parser: Parser, feed: (inout Parser, [UInt8]) -> Void,
                            next: (inout Parser) throws -> Item?) -> Parsed<Item> {
    var parser = parser
    var parsed = Parsed<Item>()
    do {
        for piece in pieces {
            feed(&parser, piece)
            while let item = try next(&parser) { parsed.items.append(item) }
        }
    } catch {
        parsed.error = "\(error)"
    }
    return parsed
}

/// The keys and clock the targets and their seeds share, so that a seed
/// always opens under the key its target tries.
enum Fixtures {
    /// One Shadowsocks credential per method family: legacy AEAD (ChaCha and
    /// AES-GCM) and 2022 (AES-GCM and ChaCha), in the order targets pick them.
    static let shadowsocks: [ShadowsocksCredential] = [
        try! ShadowsocksCredential(method: .chacha20IETFPoly1305, password: "fuzz"),
        try! ShadowsocksCredential(method: .aes256GCM, password: "fuzz"),
        try! ShadowsocksCredential(method: .blake3AES256GCM, password: Base64.encode([UInt8](repeating: 7, count: 32))),
        try! ShadowsocksCredential(method: .blake3ChaCha20Poly1305, password: Base64.encode([UInt8](repeating: 9, count: 32))),
    ]
    /// The clock (Unix seconds) 2022 streams and packets are stamped and checked at.
    static let now: UInt64 = 1_750_000_000
    /// The DNS tunnel's zone and the bridge's Noise key.
    static let zone = try! DNSName("t.example.org")
    static let bridgeKey = try! NoiseKeyPair(privateKey: [UInt8](repeating: 0x42, count: 32))
}
