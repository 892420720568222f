import Testing
@testable import RahaWire

/// XChaCha20-Poly1305 against draft-irtf-cfrg-xchacha-03, plus round trips and
/// failure cases.
@Suite struct XChaCha20Poly1305Tests {
    // draft-irtf-cfrg-xchacha-03, appendix A.3.1.
    static let aeadKey = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
    static let aeadNonce = hex("404142434445464748494a4b4c4d4e4f5051525354555657")
    static let aeadAAD = hex("50515253c0c1c2c3c4c5c6c7")
    static let aeadPlaintext = Array(
        "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".utf8
    )
    static let aeadCiphertext = hex(
        "bd6d179d3e83d43b9576579493c0e939" +
        "572a1700252bfaccbed2902c21396cbb" +
        "731c7f1b0b4aa6440bf3a82f4eda7e39" +
        "ae64c6708c54c216cb96b72e1213b452" +
        "2f8c9ba40db5d945b11b69b982c1bb9e" +
        "3f3fac2bc369488f76b2383565d3fff9" +
        "21f9664c97637da9768812f615c68b13" +
        "b52e"
    )
    static let aeadTag = hex("c0875924c1c7987947deafd8780acf49")

    @Test func hChaCha20DraftVector() {
        // draft-irtf-cfrg-xchacha-03, section 2.2.1.
        let key = hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
        let nonce = hex("000000090000004a0000000031415927")
        let subkey = XChaCha20Poly1305.hChaCha20(key: key, nonce16: nonce)
        #expect(subkey == hex("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"))
    }

    @Test func aeadDraftVectorSeals() throws {
        #expect(Self.aeadPlaintext.count == 114)
        #expect(Self.aeadCiphertext.count == 114)
        let sealed = try XChaCha20Poly1305.seal(Self.aeadPlaintext, key: Self.aeadKey, nonce: Self.aeadNonce, authenticating: Self.aeadAAD)
        #expect(sealed == Self.aeadCiphertext + Self.aeadTag)
    }

    @Test func aeadDraftVectorOpens() throws {
        let opened = try XChaCha20Poly1305.open(Self.aeadCiphertext + Self.aeadTag, key: Self.aeadKey, nonce: Self.aeadNonce, authenticating: Self.aeadAAD)
        #expect(opened == Self.aeadPlaintext)
    }

    @Test(arguments: [0, 1, 15, 16, 17, 63, 64, 65, 1000, 65_535])
    func roundTrip(length: Int) throws {
        let key = (0..<32).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ length) }
        let nonce = (0..<24).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 1) }
        let plaintext = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        for aad in [[], [1, 2, 3]] as [[UInt8]] {
            let sealed = try XChaCha20Poly1305.seal(plaintext, key: key, nonce: nonce, authenticating: aad)
            #expect(sealed.count == length + 16)
            #expect(try XChaCha20Poly1305.open(sealed, key: key, nonce: nonce, authenticating: aad) == plaintext)
        }
        // The default AAD is empty.
        let sealed = try XChaCha20Poly1305.seal(plaintext, key: key, nonce: nonce)
        #expect(try XChaCha20Poly1305.open(sealed, key: key, nonce: nonce, authenticating: []) == plaintext)
    }

    /// Only the first 16 nonce bytes go to HChaCha20; the last 8 go to the inner
    /// nonce. A change in either part must change the output.
    @Test func everyNonceByteMatters() throws {
        let plaintext = Array("attack at dawn".utf8)
        let base = try XChaCha20Poly1305.seal(plaintext, key: Self.aeadKey, nonce: Self.aeadNonce)
        for i in 0..<24 {
            var nonce = Self.aeadNonce
            nonce[i] ^= 0x80
            #expect(try XChaCha20Poly1305.seal(plaintext, key: Self.aeadKey, nonce: nonce) != base, "nonce byte \(i)")
        }
    }

    @Test func tamperingFailsAuthentication() throws {
        let sealed = Self.aeadCiphertext + Self.aeadTag
        func expectAuthFailure(_ data: [UInt8], key: [UInt8] = Self.aeadKey, nonce: [UInt8] = Self.aeadNonce,
                               aad: [UInt8] = Self.aeadAAD, _ comment: Comment) {
            let error = #expect(throws: WireError.self, comment) {
                try XChaCha20Poly1305.open(data, key: key, nonce: nonce, authenticating: aad)
            }
            #expect(error?.code == .authentication, comment)
        }
        for i in [0, 57, 113] {
            var t = sealed
            t[i] ^= 1
            expectAuthFailure(t, "ciphertext byte \(i) flipped")
        }
        for i in [114, 120, 129] {
            var t = sealed
            t[i] ^= 0x40
            expectAuthFailure(t, "tag byte \(i - 114) flipped")
        }
        var aad = Self.aeadAAD
        aad[0] ^= 1
        expectAuthFailure(sealed, aad: aad, "aad changed")
        expectAuthFailure(sealed, aad: [], "aad dropped")
        expectAuthFailure(sealed, aad: Self.aeadAAD + [0], "aad extended")
        var key = Self.aeadKey
        key[31] ^= 1
        expectAuthFailure(sealed, key: key, "wrong key")
        var nonce = Self.aeadNonce
        nonce[23] ^= 1
        expectAuthFailure(sealed, nonce: nonce, "wrong nonce")
        expectAuthFailure(Array(sealed.dropLast()), "truncated")
        expectAuthFailure(Array(sealed.dropFirst()), "first byte dropped")
        expectAuthFailure(Self.aeadTag, "tag alone")
    }

    @Test func wrongSizesAreMalformed() {
        func expectMalformed(_ comment: Comment, _ body: () throws -> [UInt8]) {
            let error = #expect(throws: WireError.self, comment) { _ = try body() }
            #expect(error?.code == .malformed, comment)
        }
        let key = Self.aeadKey
        let nonce = Self.aeadNonce
        let sealed = Self.aeadCiphertext + Self.aeadTag
        for badKey in [[], Array(key.prefix(31)), key + [0], Array(key.prefix(16))] {
            expectMalformed("seal, key of \(badKey.count) bytes") { try XChaCha20Poly1305.seal([1], key: badKey, nonce: nonce) }
            expectMalformed("open, key of \(badKey.count) bytes") { try XChaCha20Poly1305.open(sealed, key: badKey, nonce: nonce) }
        }
        for badNonce in [[], Array(nonce.prefix(12)), Array(nonce.prefix(23)), nonce + [0]] {
            expectMalformed("seal, nonce of \(badNonce.count) bytes") { try XChaCha20Poly1305.seal([1], key: key, nonce: badNonce) }
            expectMalformed("open, nonce of \(badNonce.count) bytes") { try XChaCha20Poly1305.open(sealed, key: key, nonce: badNonce) }
        }
        expectMalformed("open, shorter than a tag") { try XChaCha20Poly1305.open(Array(Self.aeadTag.prefix(15)), key: key, nonce: nonce) }
        expectMalformed("open, empty") { try XChaCha20Poly1305.open([], key: key, nonce: nonce) }
    }
}
