import NIOCore
import Testing
@testable import RahaWire

@Suite struct ShadowsocksDatagramTests {
    let now: UInt64 = 1_800_000_000
    let dns = Endpoint(host: .ipv4([127, 0, 0, 1]), port: 53)

    /// Made with Python's `cryptography`: aes-128-gcm, password "raha-test",
    /// salt 00…0f, nonce zero, to 127.0.0.1:53, payload "dns?".
    @Test func legacyKnownAnswer() throws {
        let credential = try ShadowsocksCredential(method: .aes128GCM, password: "raha-test")
        var cache = ShadowsocksUDP.SubkeyCache()
        let d = try ShadowsocksUDP.open(hex("000102030405060708090a0b0c0d0e0f821825d3a29fc5edd7207c81a2fec3b0da26b94c01714f356b179f"),
                                        direction: .clientToServer, credential: credential, now: now, subkeyCache: &cache)
        #expect(d.endpoint == dns)
        #expect(d.payload == Array("dns?".utf8))
        #expect(d.salt == Array(0..<16))
    }

    @Test(arguments: ShadowsocksMethod.allCases)
    func roundTripBothDirections(method: ShadowsocksMethod) throws {
        let credential = try ShadowsocksCredential(method: method, password: method.is2022 ? Base64.encode(Array(repeating: 5, count: method.keyLength)) : "pw")
        var cache = ShadowsocksUDP.SubkeyCache()
        let request = ShadowsocksUDP.seal(ShadowsocksDatagram(endpoint: dns, payload: [1, 2, 3]), direction: .clientToServer,
                                          credential: credential, sessionID: 42, packetID: 7, now: now, subkeyCache: &cache)
        var serverCache = ShadowsocksUDP.SubkeyCache()
        let seen = try ShadowsocksUDP.open(request, direction: .clientToServer, credential: credential, now: now, subkeyCache: &serverCache)
        #expect(seen.endpoint == dns && seen.payload == [1, 2, 3])
        if method.is2022 {
            #expect(seen.sessionID == 42 && seen.packetID == 7)
        }
        let reply = ShadowsocksUDP.seal(ShadowsocksDatagram(endpoint: dns, payload: [9]), direction: .serverToClient, credential: credential,
                                        sessionID: 99, packetID: 0, clientSessionID: 42, now: now, subkeyCache: &serverCache)
        let back = try ShadowsocksUDP.open(reply, direction: .serverToClient, credential: credential, now: now, subkeyCache: &cache)
        #expect(back.endpoint == dns && back.payload == [9])
        if method.is2022 {
            #expect(back.clientSessionID == 42 && back.sessionID == 99)
            // A packet cannot be turned around: the type byte differs by direction.
            #expect(throws: WireError.self) { _ = try ShadowsocksUDP.open(request, direction: .serverToClient, credential: credential, now: now, subkeyCache: &cache) }
            let stale = ShadowsocksUDP.seal(ShadowsocksDatagram(endpoint: dns, payload: [1]), direction: .clientToServer,
                                            credential: credential, sessionID: 42, packetID: 8, now: now - 31, subkeyCache: &cache)
            let error = #expect(throws: WireError.self) { _ = try ShadowsocksUDP.open(stale, direction: .clientToServer, credential: credential, now: now, subkeyCache: &serverCache) }
            #expect(error?.code == .clock)
        }
        // Every single-byte change is rejected.
        for i in request.indices {
            var tampered = request
            tampered[i] ^= 0x40
            #expect(throws: WireError.self) { _ = try ShadowsocksUDP.open(tampered, direction: .clientToServer, credential: credential, now: now, subkeyCache: &serverCache) }
        }
        // Truncations and garbage too.
        var rng = SeededGenerator(seed: 7)
        for length in [0, 1, 15, 16, 31, 40, 100] {
            let garbage = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            #expect(throws: WireError.self) { _ = try ShadowsocksUDP.open(garbage, direction: .clientToServer, credential: credential, now: now, subkeyCache: &serverCache) }
            if length < request.count {
                #expect(throws: WireError.self) { _ = try ShadowsocksUDP.open(Array(request.prefix(length)), direction: .clientToServer, credential: credential, now: now, subkeyCache: &serverCache) }
            }
        }
    }

    @Test func packetWindowRefusesRepeatsAndTheTooOld() {
        var window = PacketWindow()
        func accept(_ id: UInt64) -> Bool { window.accept(id) }
        #expect(accept(10))
        #expect(!accept(10))
        #expect(accept(12))
        #expect(accept(11), "reordering within the window is fine")
        #expect(!accept(11))
        #expect(accept(10 + PacketWindow.size + 5))
        #expect(!accept(12), "fell out of the window")
        #expect(accept(10 + PacketWindow.size + 4))
        #expect(accept(UInt64.max - 1))
        #expect(!accept(UInt64.max - 1))
    }

    @Test func saltFilterIsExactAndRemembersForTheRetention() {
        var filter = SaltReplayFilter(capacity: 1000, retention: 60, now: 0)
        func insert(_ salt: [UInt8], now: UInt64) -> Bool { filter.insert(salt, now: now) }
        let a = Array(repeating: UInt8(1), count: 32), b = Array(repeating: UInt8(2), count: 32)
        #expect(insert(a, now: 0))
        #expect(!insert(a, now: 1))
        #expect(insert(b, now: 61), "rotates the sets")
        #expect(!insert(a, now: 62), "still remembered after one rotation")
        #expect(insert(Array(repeating: 3, count: 32), now: 125))
        #expect(insert(a, now: 126), "forgotten after two retention periods")
        // No false positives among many distinct salts.
        var exact = SaltReplayFilter(capacity: 100_000, retention: 60, now: 0)
        var rng = SeededGenerator(seed: 1)
        var fresh = 0
        for _ in 0..<20_000 where exact.insert((0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }, now: 0) { fresh += 1 }
        #expect(fresh == 20_000)
    }
}
