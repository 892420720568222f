import Crypto
import Foundation

/// The public half of a Raha identity: an X25519 key that envelopes are
/// sealed to and an Ed25519 key that checks its signatures. 64 bytes on the
/// wire and in invites: agreement key, then signing key.
public struct PublicIdentity: Hashable, Sendable {
    public let agreementKey: [UInt8]
    public let signingKey: [UInt8]

    public static let length = 64

    public init(agreementKey: [UInt8], signingKey: [UInt8]) throws {
        guard agreementKey.count == 32, signingKey.count == 32,
              (try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: agreementKey)) != nil,
              (try? Curve25519.Signing.PublicKey(rawRepresentation: signingKey)) != nil else {
            throw WireError.badKey("a Raha identity is two 32-byte public keys (X25519 and Ed25519); these are not")
        }
        self.agreementKey = agreementKey
        self.signingKey = signingKey
    }

    public init(bytes: [UInt8]) throws {
        guard bytes.count == Self.length else {
            throw WireError.badKey("a Raha identity is \(Self.length) bytes; this one has \(bytes.count)")
        }
        try self.init(agreementKey: Array(bytes[0..<32]), signingKey: Array(bytes[32..<64]))
    }

    public var bytes: [UInt8] { agreementKey + signingKey }

    /// What two people compare to be sure they have each other's real keys:
    /// the first 15 bytes of SHA-256 of the identity, as 6 groups of 4 base32 characters.
    public var fingerprint: String {
        let digest = Array(SHA256.hash(data: bytes)).prefix(15)
        let text = DNSTunnelEncoding.base32.encode(Array(digest))
        return stride(from: 0, to: text.count, by: 4).map { String(decoding: text[$0..<min($0 + 4, text.count)], as: UTF8.self) }
            .joined(separator: " ")
    }
}

/// A Raha identity with its private keys (64 bytes when stored: the X25519
/// private key, then the Ed25519 seed).
public struct EnvelopeIdentity: Sendable {
    public let agreement: Curve25519.KeyAgreement.PrivateKey
    public let signing: Curve25519.Signing.PrivateKey

    public init() {
        agreement = Curve25519.KeyAgreement.PrivateKey()
        signing = Curve25519.Signing.PrivateKey()
    }

    public init(storedBytes bytes: [UInt8]) throws {
        guard bytes.count == 64,
              let agreement = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: bytes[0..<32]),
              let signing = try? Curve25519.Signing.PrivateKey(rawRepresentation: bytes[32..<64]) else {
            throw WireError.badKey("a stored Raha identity is 64 bytes of private keys; this one is not")
        }
        self.agreement = agreement
        self.signing = signing
    }

    public var storedBytes: [UInt8] { Array(agreement.rawRepresentation) + Array(signing.rawRepresentation) }

    public var publicIdentity: PublicIdentity {
        // Keys from swift-crypto are always valid.
        try! PublicIdentity(agreementKey: Array(agreement.publicKey.rawRepresentation), signingKey: Array(signing.publicKey.rawRepresentation))
    }
}

/// Sealed envelopes: end-to-end encrypted to one recipient, signed by the
/// sender, compressed. Whoever carries one (a mail server, a resolver, a
/// tunnel) learns only its size.
///
///     envelope := version (1) | ephemeral X25519 public key (32) | sealed
///     sealed   := ChaCha20-Poly1305(key, nonce 0, aad: version | ephemeral, inner)
///     inner    := sender identity (64) | Ed25519 signature (64) | DEFLATE(payload)
///     key      := HKDF-SHA256(X25519(ephemeral, recipient), salt: ephemeral | recipient's agreement key,
///                             info: "raha envelope v1")
///
/// The signature covers "raha envelope v1", the ephemeral key, the
/// recipient's identity and the compressed payload, so a signed envelope
/// cannot be re-sealed to someone else as if the sender had sent it to them.
/// The sender's identity is inside the encryption: the carrier does not see
/// who wrote to whom beyond the mail addresses it already has.
public enum Envelope {
    public static let version: UInt8 = 1
    static let label = Array("raha envelope v1".utf8)
    /// Bytes an envelope adds to the compressed payload.
    public static let overhead = 1 + 32 + PublicIdentity.length + 64 + 16

    /// HKDF-SHA256 of the X25519 result, salted with both public keys.
    static func symmetricKey(_ shared: SharedSecret, ephemeral: [UInt8], recipient: [UInt8]) -> SymmetricKey {
        shared.hkdfDerivedSymmetricKey(using: SHA256.self, salt: ephemeral + recipient, sharedInfo: label, outputByteCount: 32)
    }

    /// Each key seals one envelope only (the ephemeral key is fresh), so the nonce can be zero.
    static let nonce = try! ChaChaPoly.Nonce(data: [UInt8](repeating: 0, count: 12))

    public static func seal(_ payload: [UInt8], from sender: EnvelopeIdentity, to recipient: PublicIdentity) throws -> [UInt8] {
        let ephemeral = Curve25519.KeyAgreement.PrivateKey()
        let ephemeralPublic = Array(ephemeral.publicKey.rawRepresentation)
        let recipientKey = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: recipient.agreementKey)
        let key = symmetricKey(try ephemeral.sharedSecretFromKeyAgreement(with: recipientKey),
                               ephemeral: ephemeralPublic, recipient: recipient.agreementKey)
        let compressed = Deflate.deflate(payload)
        let signature = try sender.signing.signature(for: label + ephemeralPublic + recipient.bytes + compressed)
        let inner = sender.publicIdentity.bytes + Array(signature) + compressed
        let header = [version] + ephemeralPublic
        let box = try ChaChaPoly.seal(inner, using: key, nonce: nonce,
                                      authenticating: header)
        return header + Array(box.ciphertext) + Array(box.tag)
    }

    /// The sender and the payload. Throws WireError(.authentication) for an
    /// envelope not sealed to `identity`, tampered with or badly signed,
    /// (.unsupported) for another version, (.malformed) for bytes too short
    /// to be one, (.tooLarge) for a payload beyond `maxSize`.
    public static func open(_ envelope: [UInt8], with identity: EnvelopeIdentity, maxSize: Int) throws -> (sender: PublicIdentity, payload: [UInt8]) {
        guard envelope.count >= overhead else {
            throw WireError(.malformed, "an envelope is at least \(overhead) bytes; this one has \(envelope.count)")
        }
        guard envelope[0] == version else {
            throw WireError(.unsupported, "envelope version \(envelope[0]) is not one this Raha reads (\(version)): update Raha")
        }
        let ephemeralPublic = Array(envelope[1..<33])
        let inner: [UInt8]
        do {
            let ephemeral = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: ephemeralPublic)
            let own = identity.publicIdentity
            let key = symmetricKey(try identity.agreement.sharedSecretFromKeyAgreement(with: ephemeral),
                                   ephemeral: ephemeralPublic, recipient: own.agreementKey)
            let box = try ChaChaPoly.SealedBox(nonce: nonce,
                                               ciphertext: envelope[33..<(envelope.count - 16)], tag: envelope[(envelope.count - 16)...])
            inner = Array(try ChaChaPoly.open(box, using: key, authenticating: envelope[0..<33]))
        } catch {
            throw WireError(.authentication, "the envelope is not for this identity, or was changed on the way")
        }
        let sender = try PublicIdentity(bytes: Array(inner[0..<64]))
        let signature = inner[64..<128]
        let compressed = Array(inner[128...])
        let signingKey = try Curve25519.Signing.PublicKey(rawRepresentation: sender.signingKey)
        guard signingKey.isValidSignature(signature, for: label + ephemeralPublic + identity.publicIdentity.bytes + compressed) else {
            throw WireError(.authentication, "the envelope's signature does not match its sender")
        }
        return (sender, try Deflate.inflate(compressed, maxSize: maxSize))
    }
}
