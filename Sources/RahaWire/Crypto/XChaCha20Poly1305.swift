import Crypto

/// AEAD_XChaCha20_Poly1305 as defined in draft-irtf-cfrg-xchacha-03: a 24-byte
/// nonce, built from HChaCha20 (implemented here) and the IETF
/// ChaCha20-Poly1305 AEAD of RFC 8439 (swift-crypto's `ChaChaPoly`).
///
/// - the subkey is HChaCha20(key, nonce[0..<16]);
/// - the ChaCha20-Poly1305 nonce is four zero bytes followed by nonce[16..<24].
///
/// Used by the 2022-blake3-chacha20-poly1305 UDP packets of Shadowsocks 2022.
public enum XChaCha20Poly1305 {
    public static let keyLength = 32
    public static let nonceLength = 24
    public static let tagLength = 16

    /// Returns ciphertext followed by the 16-byte tag. key: 32 bytes, nonce: 24 bytes; throws WireError(.malformed) on wrong sizes.
    public static func seal(_ plaintext: [UInt8], key: [UInt8], nonce: [UInt8], authenticating aad: [UInt8] = []) throws -> [UInt8] {
        let (subkey, innerNonce) = try derive(key: key, nonce: nonce)
        let box: ChaChaPoly.SealedBox
        do {
            box = try ChaChaPoly.seal(plaintext, using: subkey, nonce: innerNonce, authenticating: aad)
        } catch {
            // Sizes were checked above, so this does not happen in practice.
            throw WireError.malformed("XChaCha20-Poly1305 could not seal: \(error)")
        }
        var out = [UInt8]()
        out.reserveCapacity(plaintext.count + tagLength)
        out.append(contentsOf: box.ciphertext)
        out.append(contentsOf: box.tag)
        return out
    }

    /// Opens ciphertext||tag; throws WireError(.authentication, ...) when the tag does not verify.
    ///
    /// Input shorter than a tag throws `.malformed`; wrong key or nonce sizes throw `.malformed`.
    public static func open(_ sealed: [UInt8], key: [UInt8], nonce: [UInt8], authenticating aad: [UInt8] = []) throws -> [UInt8] {
        let (subkey, innerNonce) = try derive(key: key, nonce: nonce)
        guard sealed.count >= tagLength else {
            throw WireError.malformed("XChaCha20-Poly1305 sealed data is \(sealed.count) bytes, shorter than the \(tagLength)-byte tag")
        }
        let split = sealed.count - tagLength
        do {
            let box = try ChaChaPoly.SealedBox(nonce: innerNonce, ciphertext: sealed[..<split], tag: sealed[split...])
            return Array(try ChaChaPoly.open(box, using: subkey, authenticating: aad))
        } catch {
            throw WireError(.authentication, "XChaCha20-Poly1305 authentication failed: wrong key, or tampered or corrupted data")
        }
    }

    /// HChaCha20 (draft-irtf-cfrg-xchacha-03 section 2.2): the ChaCha20 block
    /// function on (constants, key, 16-byte nonce) without the final addition of
    /// the input state, returning state words 0...3 and 12...15 little-endian.
    /// key must be 32 bytes and nonce16 16 bytes (precondition).
    public static func hChaCha20(key: [UInt8], nonce16: [UInt8]) -> [UInt8] {
        precondition(key.count == 32, "HChaCha20 needs a 32-byte key, got \(key.count) bytes")
        precondition(nonce16.count == 16, "HChaCha20 needs a 16-byte nonce, got \(nonce16.count) bytes")
        func le(_ b: [UInt8], _ i: Int) -> UInt32 {
            UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24
        }
        // "expand 32-byte k"
        var x0: UInt32 = 0x6170_7865, x1: UInt32 = 0x3320_646E, x2: UInt32 = 0x7962_2D32, x3: UInt32 = 0x6B20_6574
        var x4 = le(key, 0), x5 = le(key, 4), x6 = le(key, 8), x7 = le(key, 12)
        var x8 = le(key, 16), x9 = le(key, 20), x10 = le(key, 24), x11 = le(key, 28)
        var x12 = le(nonce16, 0), x13 = le(nonce16, 4), x14 = le(nonce16, 8), x15 = le(nonce16, 12)
        for _ in 0..<10 {
            quarterRound(&x0, &x4, &x8, &x12)
            quarterRound(&x1, &x5, &x9, &x13)
            quarterRound(&x2, &x6, &x10, &x14)
            quarterRound(&x3, &x7, &x11, &x15)
            quarterRound(&x0, &x5, &x10, &x15)
            quarterRound(&x1, &x6, &x11, &x12)
            quarterRound(&x2, &x7, &x8, &x13)
            quarterRound(&x3, &x4, &x9, &x14)
        }
        var out = [UInt8]()
        out.reserveCapacity(32)
        for w in [x0, x1, x2, x3, x12, x13, x14, x15] {
            out.append(UInt8(truncatingIfNeeded: w))
            out.append(UInt8(truncatingIfNeeded: w >> 8))
            out.append(UInt8(truncatingIfNeeded: w >> 16))
            out.append(UInt8(truncatingIfNeeded: w >> 24))
        }
        return out
    }

    // MARK: - Internals

    @inline(__always)
    private static func rotl(_ x: UInt32, _ n: UInt32) -> UInt32 {
        (x &<< n) | (x &>> (32 &- n))
    }

    @inline(__always)
    private static func quarterRound(_ a: inout UInt32, _ b: inout UInt32, _ c: inout UInt32, _ d: inout UInt32) {
        a = a &+ b; d = rotl(d ^ a, 16)
        c = c &+ d; b = rotl(b ^ c, 12)
        a = a &+ b; d = rotl(d ^ a, 8)
        c = c &+ d; b = rotl(b ^ c, 7)
    }

    /// Checks sizes and derives the ChaCha20-Poly1305 key and 12-byte nonce.
    private static func derive(key: [UInt8], nonce: [UInt8]) throws -> (SymmetricKey, ChaChaPoly.Nonce) {
        guard key.count == keyLength else {
            throw WireError.malformed("XChaCha20-Poly1305 needs a \(keyLength)-byte key, got \(key.count) bytes")
        }
        guard nonce.count == nonceLength else {
            throw WireError.malformed("XChaCha20-Poly1305 needs a \(nonceLength)-byte nonce, got \(nonce.count) bytes")
        }
        let subkey = hChaCha20(key: key, nonce16: Array(nonce[0..<16]))
        let inner: [UInt8] = [0, 0, 0, 0] + nonce[16..<24]
        do {
            return (SymmetricKey(data: subkey), try ChaChaPoly.Nonce(data: inner))
        } catch {
            throw WireError.malformed("XChaCha20-Poly1305 could not form the inner nonce: \(error)")
        }
    }
}
