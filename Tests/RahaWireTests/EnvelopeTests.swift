import Testing
@testable import RahaWire

@Suite struct EnvelopeTests {
    static let alice = EnvelopeIdentity()
    static let bob = EnvelopeIdentity()
    static let mallory = EnvelopeIdentity()

    @Test func sealsToOneRecipientAndSaysWhoSentIt() throws {
        let payload = Array("salam, this is Alice ".utf8) + Array(repeating: 0x41, count: 5000)
        let sealed = try Envelope.seal(payload, from: Self.alice, to: Self.bob.publicIdentity)
        #expect(sealed.count < payload.count, "compressed")
        #expect(sealed.count >= Envelope.overhead)
        let opened = try Envelope.open(sealed, with: Self.bob, maxSize: 1 << 20)
        #expect(opened.payload == payload)
        #expect(opened.sender == Self.alice.publicIdentity)
        // Every sealing is different: a fresh ephemeral key each time.
        #expect(try Envelope.seal(payload, from: Self.alice, to: Self.bob.publicIdentity) != sealed)
        // Someone else cannot open it.
        expectWireError("not for this identity", code: .authentication) { _ = try Envelope.open(sealed, with: Self.mallory, maxSize: 1 << 20) }
    }

    @Test func anyChangeIsCaught() throws {
        let sealed = try Envelope.seal(Array("x".utf8), from: Self.alice, to: Self.bob.publicIdentity)
        for index in [0, 1, 20, 33, 60, sealed.count - 1] {
            var changed = sealed
            changed[index] ^= 0x01
            #expect(throws: WireError.self) { try Envelope.open(changed, with: Self.bob, maxSize: 100) }
        }
        expectWireError("at least", code: .malformed) { _ = try Envelope.open(Array(sealed.prefix(100)), with: Self.bob, maxSize: 100) }
        var future = sealed
        future[0] = 2
        expectWireError("version 2 is not one this Raha reads", code: .unsupported) { _ = try Envelope.open(future, with: Self.bob, maxSize: 100) }
        let big = try Envelope.seal(Array(repeating: 0, count: 10_000), from: Self.alice, to: Self.bob.publicIdentity)
        expectWireError("more than 9999 bytes", code: .tooLarge) { _ = try Envelope.open(big, with: Self.bob, maxSize: 9999) }
    }

    @Test func identitiesStoreAndPrint() throws {
        let restored = try EnvelopeIdentity(storedBytes: Self.alice.storedBytes)
        #expect(restored.publicIdentity == Self.alice.publicIdentity)
        #expect(try PublicIdentity(bytes: Self.alice.publicIdentity.bytes) == Self.alice.publicIdentity)
        let fingerprint = Self.alice.publicIdentity.fingerprint
        #expect(fingerprint.split(separator: " ").map(\.count) == [4, 4, 4, 4, 4, 4], "\(fingerprint)")
        expectWireError("64 bytes; this one has 63", code: .badKey) { _ = try PublicIdentity(bytes: Array(repeating: 1, count: 63)) }
        expectWireError("64 bytes of private keys", code: .badKey) { _ = try EnvelopeIdentity(storedBytes: [1, 2]) }
    }

    @Test func chunksReassembleInAnyOrderWithDuplicates() throws {
        var generator = SeededGenerator(seed: 9)
        let envelope = (0..<10_000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let chunks = try EnvelopeChunk.split(envelope, size: 999)
        #expect(chunks.count == 11 && Set(chunks.map(\.id)).count == 1)
        var assembler = EnvelopeAssembler(maximumEnvelopeSize: 20_000)
        let other = try EnvelopeChunk.split(Array(repeating: 7, count: 3000), size: 1000)
        var arrivals = (chunks + chunks.prefix(3) + other.prefix(2)).map(\.serialized).shuffled(using: &generator)
        arrivals.removeAll { $0 == chunks[5].serialized }
        arrivals.append(chunks[5].serialized)
        var done: [[UInt8]] = []
        for bytes in arrivals {
            if let whole = try assembler.add(try EnvelopeChunk(parsing: bytes)) { done.append(whole) }
        }
        #expect(done == [envelope], "complete once, with the last piece")
        #expect(assembler.pendingCount == 1, "the other envelope waits for its third piece")
        #expect(try assembler.add(other[2]) == Array(repeating: 7, count: 3000))
        #expect(try EnvelopeChunk.split([], size: 10).count == 1, "an empty envelope is one empty piece")
    }

    @Test func chunksThatDoNotAddUpAreRefused() throws {
        expectWireError("at least 20 bytes", code: .malformed) { _ = try EnvelopeChunk(parsing: Array(repeating: 0, count: 19)) }
        expectWireError("piece 3 of 2", code: .malformed) { _ = try EnvelopeChunk(parsing: Array(repeating: 0, count: 16) + [0, 2, 0, 2]) }
        expectWireError("piece 1 of 0", code: .malformed) { _ = try EnvelopeChunk(parsing: Array(repeating: 0, count: 16) + [0, 0, 0, 0]) }
        var assembler = EnvelopeAssembler(maximumEnvelopeSize: 1500)
        let id = Array(repeating: UInt8(3), count: 16)
        _ = try assembler.add(EnvelopeChunk(id: id, index: 0, count: 3, bytes: [1]))
        expectWireError("says it has 4 pieces; earlier ones said 3", code: .malformed) {
            _ = try assembler.add(EnvelopeChunk(id: id, index: 1, count: 4, bytes: [1]))
        }
        expectWireError("grew beyond the 1500 bytes", code: .tooLarge) {
            _ = try assembler.add(EnvelopeChunk(id: id, index: 1, count: 3, bytes: Array(repeating: 0, count: 1500)))
        }
        #expect(assembler.pendingCount == 0)
        expectWireError("take 5001 pieces", code: .tooLarge) { _ = try EnvelopeChunk.split(Array(repeating: 0, count: 5001), size: 1) }
        var small = EnvelopeAssembler(maximumEnvelopeSize: 100, maximumPending: 2)
        for seed in 1...3 {
            _ = try small.add(EnvelopeChunk(id: Array(repeating: UInt8(seed), count: 16), index: 0, count: 2, bytes: [0]))
        }
        #expect(small.pendingCount == 2, "the oldest envelope in progress is dropped")
    }
}
