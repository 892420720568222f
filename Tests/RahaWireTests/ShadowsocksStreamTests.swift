import NIOCore
import Testing
@testable import RahaWire

/// Known-answer streams made with Python's `cryptography` package (an
/// independent AEAD/HKDF implementation): salt 00 01 02 …, password
/// "raha-test", target example.com:80, payload "GET / HTTP/1.0\r\n\r\n".
private let knownStreams: [(ShadowsocksMethod, String, String)] = [
    (.chacha20IETFPoly1305, "257f7cf11c750119cc9fcd3ed6042077ce691dfd78d0dcb67dc3ce90d1dac927",
     "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fe828e795ff4fdcc560976a15f618dcb8551a401715f41440ad5ea878eb4b61b0d0315b2c79dc50ac103ec3f8f7f692c5ab13dfbfa54cc9fc47c4b29a0a62b134c40859"),
    (.aes256GCM, "257f7cf11c750119cc9fcd3ed6042077ce691dfd78d0dcb67dc3ce90d1dac927",
     "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f5ccf5a43b92a6031a8e1738e3d024518cefae612c6a3d4ce8bd4b77d9da9f180017f7a096fbd4bf86ff97626d56b8125b4134f8e372bdb19da0e7f479bb23da8cc3360"),
    (.aes128GCM, "257f7cf11c750119cc9fcd3ed6042077",
     "000102030405060708090a0b0c0d0e0f8346e4f4560c930a1dbd357fe4c17f2ecbd0b86e12294642e3caca2e3523e234dc6d2d65c1b00adcbd1ffcabaaec45f54cbe8dcf60d7118d96e35d8ec4cc48c3b15b63"),
]


let target = Endpoint(host: .domain("example.com"), port: 80)
let request = Array("GET / HTTP/1.0\r\n\r\n".utf8)
let now: UInt64 = 1_800_000_000

func credential(_ method: ShadowsocksMethod) throws -> ShadowsocksCredential {
    if method.is2022 {
        return try ShadowsocksCredential(method: method, password: Base64.encode(Array(repeating: 7, count: method.keyLength)))
    }
    return try ShadowsocksCredential(method: method, password: "raha-test")
}

/// Feeds `bytes` to a fresh server session, in pieces of `piece` bytes.
func serverDecode(_ bytes: [UInt8], method: ShadowsocksMethod, piece: Int) throws -> (ShadowsocksRequest?, [UInt8]) {
    var server = ShadowsocksServerSession(credential: try credential(method))
    var request: ShadowsocksRequest?
    var payload = ByteBuffer()
    var i = 0
    while i < bytes.count {
        var input = ByteBuffer(bytes: bytes[i..<min(bytes.count, i + piece)])
        if let r = try server.receive(&input, payload: &payload, now: now) {
            #expect(request == nil, "the request is reported once")
            request = r
        }
        #expect(input.readableBytes == 0, "receive consumes all input")
        i += piece
    }
    return (request, Array(payload.readableBytesView))
}

@Suite struct ShadowsocksStreamTests {
    @Test(arguments: knownStreams)
    func legacyKnownAnswer(method: ShadowsocksMethod, key: String, stream: String) throws {
        let cred = try credential(method)
        #expect(cred.masterKey == hex(key), "EVP_BytesToKey(MD5)")
        // Decode the independent implementation's stream, whole and split at every byte.
        for piece in [stream.count, 1, 7] {
            let (req, payload) = try serverDecode(hex(stream), method: method, piece: piece)
            #expect(req?.target == target)
            #expect(req?.salt == Array(0..<UInt8(method.saltLength)))
            #expect(payload == request)
        }
        // And our encoder produces exactly those bytes from the same salt.
        var client = ShadowsocksClientSession(credential: cred, target: target, prefix: [], salt: Array(0..<UInt8(method.saltLength)))
        var out = ByteBuffer()
        client.seal(ByteBuffer(bytes: request).readableBytesView, into: &out, now: now)
        #expect(Array(out.readableBytesView) == hex(stream))
    }

    @Test(arguments: ShadowsocksMethod.allCases)
    func roundTripBothDirectionsSplitAtEveryByte(method: ShadowsocksMethod) throws {
        let cred = try credential(method)
        var client = ShadowsocksClientSession(credential: cred, target: target, prefix: Array("GET /".utf8))
        var wire = ByteBuffer()
        client.seal(ByteBuffer(bytes: request).readableBytesView, into: &wire, now: now)
        let big = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        client.seal(ByteBuffer(bytes: big).readableBytesView, into: &wire, now: now)
        let bytes = Array(wire.readableBytesView)
        #expect(bytes.starts(with: Array("GET /".utf8)), "the prefix opens the stream")

        for piece in [bytes.count, 1, 3, 1000] {
            let (req, payload) = try serverDecode(bytes, method: method, piece: piece)
            #expect(req?.target == target)
            #expect(req?.salt == client.requestSalt)
            #expect(payload == request + big)
        }

        // Response direction.
        var server = ShadowsocksServerSession(credential: cred)
        var sink = ByteBuffer()
        var input = ByteBuffer(bytes: bytes)
        _ = try server.receive(&input, payload: &sink, now: now)
        var response = ByteBuffer()
        server.seal(ByteBuffer(bytes: big).readableBytesView, into: &response, now: now)
        server.seal(ByteBuffer(bytes: request).readableBytesView, into: &response, now: now)
        let rbytes = Array(response.readableBytesView)
        for piece in [rbytes.count, 1, 5] {
            var c = client
            var plain = ByteBuffer()
            var i = 0
            while i < rbytes.count {
                var part = ByteBuffer(bytes: rbytes[i..<min(rbytes.count, i + piece)])
                try c.receive(&part, payload: &plain, now: now)
                i += piece
            }
            #expect(Array(plain.readableBytesView) == big + request)
        }
    }

    @Test(arguments: ShadowsocksMethod.allCases)
    func headerAloneIsAcceptedAndPadded(method: ShadowsocksMethod) throws {
        var client = ShadowsocksClientSession(credential: try credential(method), target: target)
        var wire = ByteBuffer()
        client.seal(ByteBuffer().readableBytesView, into: &wire, now: now)
        let (req, payload) = try serverDecode(Array(wire.readableBytesView), method: method, piece: 1)
        #expect(req?.target == target)
        #expect(payload.isEmpty)
    }

    @Test(arguments: ShadowsocksMethod.allCases)
    func wrongKeyTamperingAndGarbageFailWithoutOutput(method: ShadowsocksMethod) throws {
        var client = ShadowsocksClientSession(credential: try credential(method), target: target)
        var wire = ByteBuffer()
        client.seal(ByteBuffer(bytes: request).readableBytesView, into: &wire, now: now)
        let bytes = Array(wire.readableBytesView)

        let other = method.is2022
            ? try ShadowsocksCredential(method: method, password: Base64.encode(Array(repeating: 9, count: method.keyLength)))
            : try ShadowsocksCredential(method: method, password: "another")
        var wrong = ShadowsocksServerSession(credential: other)
        var sink = ByteBuffer()
        var input = ByteBuffer(bytes: bytes)
        #expect(throws: WireError.self) { try wrong.receive(&input, payload: &sink, now: now) }
        #expect(sink.readableBytes == 0)

        for position in [0, method.saltLength, method.saltLength + 3, bytes.count - 1] {
            var tampered = bytes
            tampered[position] ^= 0x01
            if position < method.saltLength {
                // A changed salt derives another subkey: authentication fails.
            }
            #expect(throws: WireError.self) { _ = try serverDecode(tampered, method: method, piece: tampered.count) }
        }

        var rng = SeededGenerator(seed: 42)
        for length in [1, 17, 50, 51, 100, 1000] {
            let garbage = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            var server = ShadowsocksServerSession(credential: try credential(method))
            var g = ByteBuffer(bytes: garbage)
            var out = ByteBuffer()
            let result = try? server.receive(&g, payload: &out, now: now)
            #expect(result == nil, "garbage never yields a request")
            #expect(out.readableBytes == 0)
        }
    }

    @Test func staleTimestampIsRejectedFor2022() throws {
        let method = ShadowsocksMethod.blake3AES128GCM
        var client = ShadowsocksClientSession(credential: try credential(method), target: target)
        var wire = ByteBuffer()
        client.seal(ByteBuffer(bytes: request).readableBytesView, into: &wire, now: now - 31)
        let error = #expect(throws: WireError.self) { _ = try serverDecode(Array(wire.readableBytesView), method: method, piece: 10_000) }
        #expect(error?.code == .clock)
        var ok = ShadowsocksClientSession(credential: try credential(method), target: target)
        var wire2 = ByteBuffer()
        ok.seal(ByteBuffer(bytes: request).readableBytesView, into: &wire2, now: now - 30)
        #expect(try serverDecode(Array(wire2.readableBytesView), method: method, piece: 10_000).0 != nil)
    }

    @Test func responseToAnotherRequestIsRejectedFor2022() throws {
        let method = ShadowsocksMethod.blake3AES256GCM
        let cred = try credential(method)
        var a = ShadowsocksClientSession(credential: cred, target: target)
        var b = ShadowsocksClientSession(credential: cred, target: target)
        var wire = ByteBuffer()
        a.seal(ByteBuffer(bytes: request).readableBytesView, into: &wire, now: now)
        var server = ShadowsocksServerSession(credential: cred)
        var sink = ByteBuffer()
        _ = try server.receive(&wire, payload: &sink, now: now)
        var response = ByteBuffer()
        server.seal(ByteBuffer(bytes: request).readableBytesView, into: &response, now: now)
        var plain = ByteBuffer()
        var r1 = response
        try a.receive(&r1, payload: &plain, now: now)
        #expect(Array(plain.readableBytesView) == request)
        var ignored = ByteBuffer()
        #expect(throws: WireError.self) { try b.receive(&response, payload: &ignored, now: now) }
    }
}

