import Testing
@testable import RahaWire

/// Known-answer vectors for Noise_NK_25519_ChaChaPoly_SHA256, captured from
/// the Python `noiseprotocol` package, version 0.3.1 (an independent
/// implementation, on the `cryptography` package): responder static private
/// key 00 01 … 1f, initiator ephemeral 20 21 … 3f, responder ephemeral
/// 40 41 … 5f, prologue "raha-noise-test", handshake payloads "hello bridge"
/// and "hello client", then two transport messages each way.
private enum NKVector {
    static let responderStaticPrivate = Array(UInt8(0x00)..<0x20)
    static let initiatorEphemeral = Array(UInt8(0x20)..<0x40)
    static let responderEphemeral = Array(UInt8(0x40)..<0x60)
    static let prologue = Array("raha-noise-test".utf8)
    static let responderStaticPublic = hex("8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f")
    static let payload1 = Array("hello bridge".utf8)
    static let payload2 = Array("hello client".utf8)
    static let message1 = hex("358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254b57abf0664a73b6210c60e4c0253e049bda2f21e20a67f839022d74d")
    static let message2 = hex("79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a6d764e2ccd195a44b1e2aa320bdc0d19c35d7fc57b70c40a8767ffd3")
    static let handshakeHash = hex("b40242e67625375561bfa8ad01491df97cdfaf50fc819477ac9c1135db117a17")
    static let initiatorToResponder: [(String, String)] = [
        ("first from initiator", "d69128378097918b418d0c3fdd5c76650deea15819c93837eff014b23112dc26eef86a29"),
        ("second from initiator", "c66a3ef905303af02d56ec2bfc411202d4a0494c8d6ea6150a4174df8ad09fbd6ac9e7c1d8"),
    ]
    static let responderToInitiator: [(String, String)] = [
        ("first from responder", "77e37ea435d57f27aa277e7135e69bcf4cca4953e2d069ce9c1275c3b730d8df858bb6c7"),
        ("second from responder", "223a589942f12d3a8b18a1e1a386789f8c879e2e3de55544632d7a9a05ed78e166b58d04f1"),
    ]
}

/// A completed handshake between fresh parties.
private func handshake(prologue: [UInt8] = []) throws -> (initiator: NoiseSession, responder: NoiseSession) {
    let bridge = NoiseKeyPair.generate()
    var initiator = try NoiseNKInitiator(responderStatic: bridge.publicKey, prologue: prologue)
    var responder = NoiseNKResponder(staticKey: bridge, prologue: prologue)
    _ = try responder.readMessage(try initiator.writeMessage())
    let (reply, responderSession) = try responder.writeMessage()
    let (_, initiatorSession) = try initiator.readMessage(reply)
    return (initiatorSession, responderSession)
}

/// Moves every outbound byte between two streams, in chunks from `split`,
/// until neither has anything more to say; returns what each side read.
private func pump(_ a: inout NoiseStream, _ b: inout NoiseStream, split: (Int) -> Int) throws -> (aRead: [UInt8], bRead: [UInt8]) {
    var aRead: [UInt8] = [], bRead: [UInt8] = []
    while true {
        let fromA = a.takeOutbound(), fromB = b.takeOutbound()
        if fromA.isEmpty && fromB.isEmpty { return (aRead, bRead) }
        var i = 0
        while i < fromA.count {
            let n = min(fromA.count - i, max(1, split(fromA.count - i)))
            bRead += try b.receive(Array(fromA[i..<(i + n)]))
            i += n
        }
        i = 0
        while i < fromB.count {
            let n = min(fromB.count - i, max(1, split(fromB.count - i)))
            aRead += try a.receive(Array(fromB[i..<(i + n)]))
            i += n
        }
    }
}

/// Runs the handshake between two fresh streams, in whole frames.
private func establish(_ client: inout NoiseStream, _ server: inout NoiseStream) throws {
    #expect(try server.receive(client.takeOutbound()).isEmpty)
    #expect(try client.receive(server.takeOutbound()).isEmpty)
    #expect(client.isEstablished && server.isEstablished)
}

@Suite struct NoiseTests {
    // MARK: Known answers

    @Test func knownAnswerVectorsFromNoiseprotocol() throws {
        let staticKey = try NoiseKeyPair(privateKey: NKVector.responderStaticPrivate)
        #expect(staticKey.publicKey == NKVector.responderStaticPublic)

        var initiator = try NoiseNKInitiator(
            responderStatic: staticKey.publicKey, prologue: NKVector.prologue,
            ephemeral: try NoiseKeyPair(privateKey: NKVector.initiatorEphemeral))
        var responder = NoiseNKResponder(
            staticKey: staticKey, prologue: NKVector.prologue,
            ephemeral: try NoiseKeyPair(privateKey: NKVector.responderEphemeral))

        let m1 = try initiator.writeMessage(payload: NKVector.payload1)
        #expect(m1 == NKVector.message1)
        #expect(try responder.readMessage(NKVector.message1) == NKVector.payload1)
        let (m2, responderSessionStart) = try responder.writeMessage(payload: NKVector.payload2)
        #expect(m2 == NKVector.message2)
        let (p2, initiatorSessionStart) = try initiator.readMessage(NKVector.message2)
        #expect(p2 == NKVector.payload2)
        var initiatorSession = initiatorSessionStart, responderSession = responderSessionStart
        #expect(initiatorSession.handshakeHash == NKVector.handshakeHash)
        #expect(responderSession.handshakeHash == NKVector.handshakeHash)

        for (text, sealed) in NKVector.initiatorToResponder {
            #expect(try initiatorSession.encrypt(Array(text.utf8)) == hex(sealed))
            #expect(try responderSession.decrypt(hex(sealed)) == Array(text.utf8))
        }
        for (text, sealed) in NKVector.responderToInitiator {
            #expect(try responderSession.encrypt(Array(text.utf8)) == hex(sealed))
            #expect(try initiatorSession.decrypt(hex(sealed)) == Array(text.utf8))
        }
    }

    @Test func noiseHKDFMatchesItsDefinition() {
        // Noise section 4.3: temp = HMAC(ck, ikm); out1 = HMAC(temp, 0x01); out2 = HMAC(temp, out1 || 0x02).
        let ck = [UInt8](repeating: 0x0b, count: 32)
        let (o1, o2) = Noise.hkdf2(chainingKey: ck, [1, 2, 3])
        let temp = Noise.hmac(key: ck, [1, 2, 3])
        #expect(o1 == Noise.hmac(key: temp, [1]))
        #expect(o2 == Noise.hmac(key: temp, o1 + [2]))
        #expect(o1 != o2)
    }

    // MARK: Keys

    @Test func keyPairs() throws {
        let a = NoiseKeyPair.generate(), b = NoiseKeyPair.generate()
        #expect(a.privateKey.count == 32 && a.publicKey.count == 32)
        #expect(a.publicKey != b.publicKey)
        #expect(try NoiseKeyPair(privateKey: a.privateKey).publicKey == a.publicKey)
        for n in [0, 31, 33, 64] {
            #expect(throws: WireError.self) { try NoiseKeyPair(privateKey: [UInt8](repeating: 1, count: n)) }
        }
        do {
            _ = try NoiseKeyPair(privateKey: [1, 2, 3])
            Issue.record("a 3-byte key was accepted")
        } catch let error as WireError {
            #expect(error.code == .badKey)
            #expect(error.reason.contains("32 bytes"))
        }
        #expect(throws: WireError.self) { try NoiseNKInitiator(responderStatic: [1, 2, 3]) }
    }

    // MARK: Handshake

    @Test func roundTrip() throws {
        var (i, r) = try handshake(prologue: Array("raha".utf8))
        #expect(i.handshakeHash == r.handshakeHash)
        #expect(i.handshakeHash.count == 32)
        for n in [0, 1, 100, Noise.maxPlaintextLength] {
            let data = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let sealed = try i.encrypt(data)
            #expect(sealed.count == n + 16)
            #expect(try r.decrypt(sealed) == data)
            #expect(try i.decrypt(try r.encrypt(data)) == data)
        }
        #expect(throws: WireError.self) { try i.encrypt([UInt8](repeating: 0, count: Noise.maxPlaintextLength + 1)) }
    }

    @Test func handshakePayloadsArrive() throws {
        let bridge = NoiseKeyPair.generate()
        var initiator = try NoiseNKInitiator(responderStatic: bridge.publicKey)
        var responder = NoiseNKResponder(staticKey: bridge)
        #expect(try responder.readMessage(try initiator.writeMessage(payload: [1, 2, 3])) == [1, 2, 3])
        let (reply, _) = try responder.writeMessage(payload: [4, 5])
        #expect(try initiator.readMessage(reply).payload == [4, 5])
    }

    @Test func wrongResponderKeyFails() throws {
        let bridge = NoiseKeyPair.generate(), impostor = NoiseKeyPair.generate()
        // The client has the wrong key: the real bridge cannot read its message.
        var initiator = try NoiseNKInitiator(responderStatic: impostor.publicKey)
        var responder = NoiseNKResponder(staticKey: bridge)
        let m1 = try initiator.writeMessage()
        #expect(throws: WireError.self) { try responder.readMessage(m1) }
        #expect(throws: WireError.self) { try responder.writeMessage() }

        // An impostor cannot read the client's message, so it answers with a reply
        // from a handshake of its own: the client rejects it.
        var initiator2 = try NoiseNKInitiator(responderStatic: bridge.publicKey)
        _ = try initiator2.writeMessage()
        var impostorResponder = NoiseNKResponder(staticKey: impostor)
        _ = try impostorResponder.readMessage(try NoiseNKInitiator(responderStatic: impostor.publicKey).writeMessageOnce())
        let (forgedReply, _) = try impostorResponder.writeMessage()
        #expect(throws: WireError.self) { try initiator2.readMessage(forgedReply) }

        // Different prologues also fail.
        var i3 = try NoiseNKInitiator(responderStatic: bridge.publicKey, prologue: [1])
        var r3 = NoiseNKResponder(staticKey: bridge, prologue: [2])
        #expect(throws: WireError.self) { try r3.readMessage(try i3.writeMessage()) }
    }

    @Test func tamperedHandshakeMessagesAreRejected() throws {
        let bridge = NoiseKeyPair.generate()
        var initiator = try NoiseNKInitiator(responderStatic: bridge.publicKey)
        let m1 = try initiator.writeMessage(payload: [9, 9])
        for index in [0, 31, 32, m1.count - 1] {
            var bad = m1
            bad[index] ^= 0x01
            var responder = NoiseNKResponder(staticKey: bridge)
            #expect(throws: WireError.self) { try responder.readMessage(bad) }
        }
        for bad in [[], Array(m1.prefix(47)), Array(m1.dropLast())] {
            var responder = NoiseNKResponder(staticKey: bridge)
            #expect(throws: WireError.self) { try responder.readMessage(bad) }
        }

        var responder = NoiseNKResponder(staticKey: bridge)
        _ = try responder.readMessage(m1)
        let (m2, _) = try responder.writeMessage()
        for index in [0, 31, 32, m2.count - 1] {
            var bad = m2
            bad[index] ^= 0x80
            var copy = initiator
            #expect(throws: WireError.self) { try copy.readMessage(bad) }
        }
        // The untouched reply still completes (failed attempts were on copies).
        _ = try initiator.readMessage(m2)
        // And the handshake is one-shot.
        #expect(throws: WireError.self) { try initiator.readMessage(m2) }
        #expect(throws: WireError.self) { try initiator.writeMessage() }
    }

    @Test func lowOrderKeysAreRejected() throws {
        // The all-zero point gives an all-zero shared secret.
        var initiator = try NoiseNKInitiator(responderStatic: [UInt8](repeating: 0, count: 32))
        #expect(throws: WireError.self) { try initiator.writeMessage() }

        let bridge = NoiseKeyPair.generate()
        var responder = NoiseNKResponder(staticKey: bridge)
        #expect(throws: WireError.self) { try responder.readMessage([UInt8](repeating: 0, count: 48)) }
        // Another low-order point (order 8): 0xe0eb7a7c...
        let order8 = hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
        var responder2 = NoiseNKResponder(staticKey: bridge)
        #expect(throws: WireError.self) { try responder2.readMessage(order8 + [UInt8](repeating: 0, count: 16)) }
    }

    // MARK: Transport

    @Test func tamperedTransportMessagesAreRejected() throws {
        var (i, r) = try handshake()
        let sealed = try i.encrypt(Array("payload".utf8))
        for index in sealed.indices {
            var bad = sealed
            bad[index] ^= 0x01
            var copy = r
            #expect(throws: WireError.self) { try copy.decrypt(bad) }
        }
        var copy = r
        #expect(throws: WireError.self) { try copy.decrypt(Array(sealed.prefix(15))) }
        #expect(throws: WireError.self) { try copy.decrypt(Array(sealed.dropLast())) }
        // A failed decrypt does not advance the nonce: the genuine message still opens.
        #expect(try copy.decrypt(sealed) == Array("payload".utf8))
        #expect(try r.decrypt(sealed) == Array("payload".utf8))
    }

    @Test func nonceOrderingRejectsReplayAndReorder() throws {
        var (i, r) = try handshake()
        let a = try i.encrypt([1]), b = try i.encrypt([2]), c = try i.encrypt([3])
        var reordered = r
        #expect(throws: WireError.self) { try reordered.decrypt(b) }
        #expect(try r.decrypt(a) == [1])
        #expect(throws: WireError.self) { try r.decrypt(a) }  // replay
        #expect(try r.decrypt(b) == [2])
        #expect(try r.decrypt(c) == [3])
        // Messages of one direction do not open in the other.
        #expect(throws: WireError.self) { try i.decrypt(a) }
    }

    @Test func nonceExhaustionThrows() throws {
        var (i, r) = try handshake()
        i.sender.nonce = UInt64.max - 1
        r.receiver.nonce = UInt64.max - 1
        let last = try i.encrypt([7])
        #expect(try r.decrypt(last) == [7])
        do {
            _ = try i.encrypt([8])
            Issue.record("a nonce of 2^64-1 was used")
        } catch let error as WireError {
            #expect(error.code == .tooLarge)
        }
        #expect(throws: WireError.self) { try r.decrypt(last) }
    }

    // MARK: Stream

    @Test func streamHandshakeAndData() throws {
        let bridge = NoiseKeyPair.generate()
        var client = try NoiseStream(role: .initiator(responderStatic: bridge.publicKey), prologue: [5])
        var server = try NoiseStream(role: .responder(bridge), prologue: [5])
        // Written before the handshake: held.
        client.write(Array("early".utf8))
        #expect(client.pendingPlaintextCount == 5)
        let first = client.takeOutbound()
        #expect(first.count == 2 + 48)
        #expect(first[0] == 0 && first[1] == 48)
        #expect(client.takeOutbound().isEmpty)
        #expect(!client.isEstablished && !server.isEstablished)
        #expect(server.takeOutbound().isEmpty)

        #expect(try server.receive(first).isEmpty)
        #expect(server.isEstablished)
        server.write(Array("hi".utf8))
        let reply = server.takeOutbound()
        #expect(reply.count == (2 + 48) + (2 + 2 + 16))
        #expect(try client.receive(reply) == Array("hi".utf8))
        #expect(client.isEstablished)
        #expect(client.pendingPlaintextCount == 5)
        let data = client.takeOutbound()
        #expect(client.pendingPlaintextCount == 0)
        #expect(try server.receive(data) == Array("early".utf8))
    }

    @Test(arguments: [UInt64(1), 2, 3])
    func streamOverArbitrarySplits(seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed)
        let bridge = NoiseKeyPair.generate()
        let up = (0..<200_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let down = (0..<70_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        // Byte by byte, then random chunks.
        for byteByByte in [true, false] {
            var client = try NoiseStream(role: .initiator(responderStatic: bridge.publicKey))
            var server = try NoiseStream(role: .responder(bridge))
            client.write(Array(up[..<1000]))
            server.write(Array(down[..<10]))
            var split: (Int) -> Int
            if byteByByte {
                split = { _ in 1 }
            } else {
                var chunkRNG = SeededGenerator(seed: seed &* 31)
                split = { _ in Int.random(in: 1...5000, using: &chunkRNG) }
            }
            var (clientRead, serverRead) = try pump(&client, &server, split: split)
            #expect(client.isEstablished && server.isEstablished)
            client.write(Array(up[1000...]))
            server.write(Array(down[10...]))
            let more = try pump(&client, &server, split: split)
            clientRead += more.aRead
            serverRead += more.bRead
            #expect(serverRead == up)
            #expect(clientRead == down)
        }
    }

    @Test func largeWritesAreSplitIntoFrames() throws {
        let bridge = NoiseKeyPair.generate()
        var client = try NoiseStream(role: .initiator(responderStatic: bridge.publicKey))
        var server = try NoiseStream(role: .responder(bridge))
        try establish(&client, &server)
        let big = [UInt8](repeating: 0xab, count: 2 * Noise.maxPlaintextLength + 100)
        client.write(big)
        #expect(client.pendingPlaintextCount == big.count)
        let wire = client.takeOutbound()
        #expect(client.pendingPlaintextCount == 0)
        // Three frames: two full, one of 100 bytes.
        var lengths: [Int] = []
        var i = 0
        while i < wire.count {
            let n = Int(wire[i]) << 8 | Int(wire[i + 1])
            lengths.append(n)
            i += 2 + n
        }
        #expect(lengths == [65535, 65535, 116])
        #expect(try server.receive(wire) == big)
    }

    @Test func garbageInputThrows() throws {
        var rng = SeededGenerator(seed: 99)
        let bridge = NoiseKeyPair.generate()
        for _ in 0..<50 {
            var server = try NoiseStream(role: .responder(bridge))
            let n = Int.random(in: 50...400, using: &rng)
            var garbage = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            garbage[0] = 0
            garbage[1] = UInt8(Int.random(in: 0...min(n - 2, 255), using: &rng))
            #expect(throws: WireError.self) { try server.receive(garbage) }
            // A failed stream stays failed.
            #expect(throws: WireError.self) { try server.receive([]) }
            #expect(!server.isEstablished)
        }
        // A too-short first frame, and an empty frame once established.
        var server = try NoiseStream(role: .responder(bridge))
        #expect(throws: WireError.self) { try server.receive([0, 3, 1, 2, 3]) }
        var client = try NoiseStream(role: .initiator(responderStatic: bridge.publicKey))
        var server2 = try NoiseStream(role: .responder(bridge))
        try establish(&client, &server2)
        #expect(throws: WireError.self) { try client.receive([0, 0]) }
        // A tampered transport frame.
        var client3 = try NoiseStream(role: .initiator(responderStatic: bridge.publicKey))
        var server3 = try NoiseStream(role: .responder(bridge))
        try establish(&client3, &server3)
        client3.write([1, 2, 3])
        var frame = client3.takeOutbound()
        frame[3] ^= 1
        #expect(throws: WireError.self) { try server3.receive(frame) }
        // A wrong bridge key: the bridge's stream rejects the client's first message.
        var lost = try NoiseStream(role: .initiator(responderStatic: NoiseKeyPair.generate().publicKey))
        var server4 = try NoiseStream(role: .responder(bridge))
        #expect(throws: WireError.self) { try server4.receive(lost.takeOutbound()) }
        #expect(!server4.isEstablished && server4.takeOutbound().isEmpty)
    }

    @Test func replayedFrameIsRejectedByStream() throws {
        let bridge = NoiseKeyPair.generate()
        var client = try NoiseStream(role: .initiator(responderStatic: bridge.publicKey))
        var server = try NoiseStream(role: .responder(bridge))
        try establish(&client, &server)
        client.write([1])
        let frame = client.takeOutbound()
        #expect(try server.receive(frame) == [1])
        #expect(throws: WireError.self) { try server.receive(frame) }
    }

    @Test func streamNonceExhaustionFailsTheStream() throws {
        let bridge = NoiseKeyPair.generate()
        let initiator = try NoiseNKInitiator(responderStatic: bridge.publicKey)
        var client = try NoiseStream(initiator: initiator)
        var server = try NoiseStream(role: .responder(bridge))
        try establish(&client, &server)
        client.exhaustSendNonceForTesting()
        client.write([1, 2])
        #expect(client.takeOutbound().isEmpty)
        #expect(client.pendingPlaintextCount == 2)
        #expect(throws: WireError.self) { try client.receive([]) }
    }
}

private extension NoiseNKInitiator {
    /// The first message from a fresh copy.
    func writeMessageOnce() throws -> [UInt8] {
        var copy = self
        return try copy.writeMessage()
    }
}
