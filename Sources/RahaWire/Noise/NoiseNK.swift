import Crypto

/// Noise_NK_25519_ChaChaPoly_SHA256 from the Noise Protocol Framework
/// (revision 34): the client knows the bridge's static X25519 public key (from
/// its access key), so one round trip gives server authentication and forward
/// secrecy.
///
/// ```
/// NK:
///   <- s
///   ...
///   -> e, es
///   <- e, ee
/// ```
///
/// Pure: bytes in, bytes out. `NoiseStream` frames it over a byte stream.
public enum Noise {
    /// The protocol name, hashed into the first handshake hash.
    public static let protocolName = "Noise_NK_25519_ChaChaPoly_SHA256"
    /// X25519 keys and DH results, and SHA-256 hashes (HASHLEN).
    public static let keyLength = 32
    /// The Poly1305 tag on every encrypted payload.
    public static let tagLength = 16
    /// The largest Noise message, handshake or transport.
    public static let maxMessageLength = 65535
    /// The largest plaintext in one transport message.
    public static let maxPlaintextLength = maxMessageLength - tagLength

    /// HMAC-SHA256(key, data).
    static func hmac(key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: key)))
    }

    /// Noise's HKDF (section 4.3) with two outputs: HMAC-SHA256 keyed by the
    /// chaining key.
    static func hkdf2(chainingKey: [UInt8], _ inputKeyMaterial: [UInt8]) -> ([UInt8], [UInt8]) {
        let temp = hmac(key: chainingKey, inputKeyMaterial)
        let first = hmac(key: temp, [0x01])
        let second = hmac(key: temp, first + [0x02])
        return (first, second)
    }

    /// X25519 of our private key and their public key; throws on an all-zero
    /// result (their key is a low-order point), as Noise section 12.1 allows.
    static func dh(_ privateKey: Curve25519.KeyAgreement.PrivateKey, _ publicKey: [UInt8]) throws -> [UInt8] {
        let shared: [UInt8]
        do {
            let theirs = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: publicKey)
            shared = try privateKey.sharedSecretFromKeyAgreement(with: theirs).withUnsafeBytes { Array($0) }
        } catch {
            throw WireError(.authentication, "the Noise peer's X25519 public key is unusable (a low-order point or wrong size): the peer is broken or hostile")
        }
        guard shared.contains(where: { $0 != 0 }) else {
            throw WireError(.authentication, "the Noise peer's X25519 public key is a low-order point (all-zero shared secret): the peer is broken or hostile")
        }
        return shared
    }
}

/// An X25519 key pair for Noise: the bridge's static key, or an ephemeral one.
public struct NoiseKeyPair: Sendable {
    public let privateKey: [UInt8]
    public let publicKey: [UInt8]

    /// A fresh key pair from the system's random number generator.
    public static func generate() -> NoiseKeyPair {
        let key = Curve25519.KeyAgreement.PrivateKey()
        return NoiseKeyPair(key)
    }

    /// The key pair of a stored 32-byte X25519 private key; throws
    /// WireError(.badKey) for any other length.
    public init(privateKey: [UInt8]) throws {
        guard privateKey.count == Noise.keyLength,
              let key = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: privateKey) else {
            throw WireError.badKey("a Noise private key is \(Noise.keyLength) bytes, this one is \(privateKey.count): check the stored bridge key")
        }
        self.init(key)
    }

    private init(_ key: Curve25519.KeyAgreement.PrivateKey) {
        self.privateKey = Array(key.rawRepresentation)
        self.publicKey = Array(key.publicKey.rawRepresentation)
    }

    /// The private key as swift-crypto's type, for DH.
    var agreementKey: Curve25519.KeyAgreement.PrivateKey {
        // The bytes came from a valid key (both initialisers check), so this cannot fail.
        try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: privateKey)
    }
}

/// Noise's CipherState (section 5.1): a ChaCha20-Poly1305 key and a 64-bit
/// counter nonce, sent as four zero bytes and the counter little-endian.
struct NoiseCipherState: Sendable {
    /// nil until the first MixKey: EncryptWithAd then passes plaintext through.
    var key: SymmetricKey?
    var nonce: UInt64 = 0

    init(key: [UInt8]? = nil) {
        self.key = key.map { SymmetricKey(data: $0) }
    }

    private func chachaNonce() -> ChaChaPoly.Nonce {
        var bytes = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { bytes[4 + i] = UInt8(truncatingIfNeeded: nonce >> (8 * UInt64(i))) }
        return try! ChaChaPoly.Nonce(data: bytes)
    }

    /// 2^64-1 is reserved (section 5.1): a key that reached it must not be used again.
    private func checkNonce() throws {
        guard nonce < UInt64.max else {
            throw WireError.tooLarge("the Noise nonce is exhausted (2^64-1 messages with one key): open a new connection")
        }
    }

    /// Returns ciphertext followed by the 16-byte tag (or the plaintext before a key is set).
    mutating func encrypt(ad: [UInt8], _ plaintext: [UInt8]) throws -> [UInt8] {
        guard let key else { return plaintext }
        try checkNonce()
        let box: ChaChaPoly.SealedBox
        do {
            box = try ChaChaPoly.seal(plaintext, using: key, nonce: chachaNonce(), authenticating: ad)
        } catch {
            // Key and nonce sizes are fixed, so this does not happen in practice.
            throw WireError.malformed("Noise could not seal a message: \(error)")
        }
        nonce += 1
        var out = [UInt8]()
        out.reserveCapacity(plaintext.count + Noise.tagLength)
        out.append(contentsOf: box.ciphertext)
        out.append(contentsOf: box.tag)
        return out
    }

    /// Opens ciphertext||tag; throws WireError(.authentication) when the tag does
    /// not verify. The nonce advances only on success.
    mutating func decrypt(ad: [UInt8], _ sealed: [UInt8]) throws -> [UInt8] {
        guard let key else { return sealed }
        try checkNonce()
        guard sealed.count >= Noise.tagLength else {
            throw WireError.malformed("a Noise message of \(sealed.count) bytes is shorter than its \(Noise.tagLength)-byte tag")
        }
        let split = sealed.count - Noise.tagLength
        let plaintext: [UInt8]
        do {
            let box = try ChaChaPoly.SealedBox(nonce: chachaNonce(), ciphertext: sealed[..<split], tag: sealed[split...])
            plaintext = Array(try ChaChaPoly.open(box, using: key, authenticating: ad))
        } catch {
            throw WireError(.authentication, "a Noise message failed authentication: wrong key, or tampered, replayed or reordered data")
        }
        nonce += 1
        return plaintext
    }
}

/// Noise's SymmetricState (section 5.2): the chaining key, the handshake hash
/// and the CipherState of the handshake.
struct NoiseSymmetricState: Sendable {
    var chainingKey: [UInt8]
    var hash: [UInt8]
    var cipher = NoiseCipherState()

    /// InitializeSymmetric(protocol_name).
    init(protocolName: String) {
        let name = Array(protocolName.utf8)
        if name.count <= Noise.keyLength {
            hash = name + [UInt8](repeating: 0, count: Noise.keyLength - name.count)
        } else {
            hash = Array(SHA256.hash(data: name))
        }
        chainingKey = hash
    }

    mutating func mixKey(_ inputKeyMaterial: [UInt8]) {
        let (ck, tempK) = Noise.hkdf2(chainingKey: chainingKey, inputKeyMaterial)
        chainingKey = ck
        cipher = NoiseCipherState(key: tempK)
    }

    mutating func mixHash(_ data: [UInt8]) {
        var sha = SHA256()
        sha.update(data: hash)
        sha.update(data: data)
        hash = Array(sha.finalize())
    }

    mutating func encryptAndHash(_ plaintext: [UInt8]) throws -> [UInt8] {
        let ciphertext = try cipher.encrypt(ad: hash, plaintext)
        mixHash(ciphertext)
        return ciphertext
    }

    mutating func decryptAndHash(_ ciphertext: [UInt8]) throws -> [UInt8] {
        let plaintext = try cipher.decrypt(ad: hash, ciphertext)
        mixHash(ciphertext)
        return plaintext
    }

    /// Split(): the initiator-to-responder and the responder-to-initiator CipherStates.
    func split() -> (NoiseCipherState, NoiseCipherState) {
        let (k1, k2) = Noise.hkdf2(chainingKey: chainingKey, [])
        return (NoiseCipherState(key: k1), NoiseCipherState(key: k2))
    }

    /// Writes the tokens `e` then a DH of `e` with `remote`, then `payload`
    /// encrypted: the initiator's `e, es` or the responder's `e, ee`.
    mutating func writeEphemeral(_ e: NoiseKeyPair, mixingDHWith remote: [UInt8], payload: [UInt8]) throws -> [UInt8] {
        guard Noise.keyLength + payload.count + Noise.tagLength <= Noise.maxMessageLength else {
            throw WireError.tooLarge("a Noise handshake payload of \(payload.count) bytes does not fit in one message")
        }
        mixHash(e.publicKey)
        mixKey(try Noise.dh(e.agreementKey, remote))
        return try e.publicKey + encryptAndHash(payload)
    }

    /// Reads the peer's `e`, mixes a DH of `local` with it and decrypts the
    /// payload: the responder's side of `e, es`, the initiator's of `e, ee`.
    /// `what` and `peer` name the message and its sender in the error.
    mutating func readEphemeral(_ message: [UInt8], mixingDHWith local: NoiseKeyPair,
                                what: String, peer: String) throws -> (remoteEphemeral: [UInt8], payload: [UInt8]) {
        guard message.count >= Noise.keyLength + Noise.tagLength, message.count <= Noise.maxMessageLength else {
            throw WireError.handshakeFailed("the Noise \(what) is \(message.count) bytes, outside \(Noise.keyLength + Noise.tagLength)...\(Noise.maxMessageLength): the peer is not \(peer) or the data was damaged")
        }
        let re = Array(message[..<Noise.keyLength])
        mixHash(re)
        mixKey(try Noise.dh(local.agreementKey, re))
        return (re, try decryptAndHash(Array(message[Noise.keyLength...])))
    }

    /// The state after the `<- s` pre-message of NK: protocol name, prologue, responder's static key.
    static func nk(prologue: [UInt8], responderStatic: [UInt8]) -> NoiseSymmetricState {
        var state = NoiseSymmetricState(protocolName: Noise.protocolName)
        state.mixHash(prologue)
        state.mixHash(responderStatic)
        return state
    }
}

/// Transport keys after the handshake: one CipherState each way.
public struct NoiseSession: Sendable {
    var sender: NoiseCipherState
    var receiver: NoiseCipherState
    /// The final handshake hash: the same on both ends, unique to this
    /// handshake (channel binding).
    public let handshakeHash: [UInt8]

    init(sender: NoiseCipherState, receiver: NoiseCipherState, handshakeHash: [UInt8]) {
        self.sender = sender
        self.receiver = receiver
        self.handshakeHash = handshakeHash
    }

    /// Seals the next message to the peer: ciphertext followed by a 16-byte tag.
    /// Throws WireError(.tooLarge) for plaintext over `Noise.maxPlaintextLength`
    /// bytes or when the nonce is exhausted.
    public mutating func encrypt(_ plaintext: [UInt8]) throws -> [UInt8] {
        guard plaintext.count <= Noise.maxPlaintextLength else {
            throw WireError.tooLarge("a Noise transport message holds at most \(Noise.maxPlaintextLength) bytes of plaintext, got \(plaintext.count): split it")
        }
        return try sender.encrypt(ad: [], plaintext)
    }

    /// Opens the next message from the peer; throws WireError on a bad tag,
    /// which includes a replayed, dropped or reordered message.
    public mutating func decrypt(_ ciphertext: [UInt8]) throws -> [UInt8] {
        guard ciphertext.count <= Noise.maxMessageLength else {
            throw WireError.tooLarge("a Noise transport message is at most \(Noise.maxMessageLength) bytes, got \(ciphertext.count)")
        }
        return try receiver.decrypt(ad: [], ciphertext)
    }
}

/// The client's side of the NK handshake: it knows the responder's static key.
///
/// `writeMessage` once, then `readMessage` once with the reply, which gives
/// the session. Any error is final: the handshake cannot continue.
public struct NoiseNKInitiator: Sendable {
    private enum Step: Sendable { case start, awaitingReply, done, failed }

    private var symmetric: NoiseSymmetricState
    private let responderStatic: [UInt8]
    private var ephemeral: NoiseKeyPair?
    private var step = Step.start

    /// - Parameters:
    ///   - responderStatic: the bridge's 32-byte X25519 public key; any other
    ///     length throws WireError(.badKey).
    ///   - prologue: bytes both ends must agree on, bound into the handshake.
    public init(responderStatic: [UInt8], prologue: [UInt8] = []) throws {
        guard responderStatic.count == Noise.keyLength else {
            throw WireError.badKey("the bridge's Noise public key is \(Noise.keyLength) bytes, this one is \(responderStatic.count): check the access key")
        }
        self.responderStatic = responderStatic
        self.symmetric = .nk(prologue: prologue, responderStatic: responderStatic)
    }

    /// With a chosen ephemeral key: for known-answer tests only.
    init(responderStatic: [UInt8], prologue: [UInt8], ephemeral: NoiseKeyPair) throws {
        try self.init(responderStatic: responderStatic, prologue: prologue)
        self.ephemeral = ephemeral
    }

    /// `-> e, es`: the first handshake message, carrying `payload` encrypted
    /// (to the responder's static key, without forward secrecy and replayable:
    /// keep it empty unless that is acceptable).
    public mutating func writeMessage(payload: [UInt8] = []) throws -> [UInt8] {
        guard step == .start else {
            throw WireError.malformed("the Noise initiator writes its handshake message once, before reading the reply")
        }
        step = .failed
        let e = ephemeral ?? NoiseKeyPair.generate()
        ephemeral = e
        let message = try symmetric.writeEphemeral(e, mixingDHWith: responderStatic, payload: payload)
        step = .awaitingReply
        return message
    }

    /// `<- e, ee`: reads the responder's reply; returns its payload and the
    /// transport session. Throws WireError on a malformed or unauthenticated
    /// reply (a wrong responder key shows up here or at the responder).
    public mutating func readMessage(_ message: [UInt8]) throws -> (payload: [UInt8], session: NoiseSession) {
        guard step == .awaitingReply, let e = ephemeral else {
            throw WireError.malformed("the Noise initiator reads one reply, after writing its handshake message")
        }
        step = .failed
        let (_, payload) = try symmetric.readEphemeral(message, mixingDHWith: e, what: "handshake reply", peer: "a Raha bridge")
        let (toResponder, toInitiator) = symmetric.split()
        step = .done
        return (payload, NoiseSession(sender: toResponder, receiver: toInitiator, handshakeHash: symmetric.hash))
    }
}

/// The bridge's side of the NK handshake: it holds the static key pair.
///
/// `readMessage` once with the initiator's message, then `writeMessage` once,
/// which gives the session. Any error is final: the handshake cannot continue.
public struct NoiseNKResponder: Sendable {
    private enum Step: Sendable { case start, readFirst, done, failed }

    private var symmetric: NoiseSymmetricState
    private let staticKey: NoiseKeyPair
    private var ephemeral: NoiseKeyPair?
    private var remoteEphemeral: [UInt8] = []
    private var step = Step.start

    /// - Parameters:
    ///   - staticKey: the bridge's static key pair.
    ///   - prologue: bytes both ends must agree on, bound into the handshake.
    public init(staticKey: NoiseKeyPair, prologue: [UInt8] = []) {
        self.staticKey = staticKey
        self.symmetric = .nk(prologue: prologue, responderStatic: staticKey.publicKey)
    }

    /// With a chosen ephemeral key: for known-answer tests only.
    init(staticKey: NoiseKeyPair, prologue: [UInt8], ephemeral: NoiseKeyPair) {
        self.init(staticKey: staticKey, prologue: prologue)
        self.ephemeral = ephemeral
    }

    /// `-> e, es`: reads the initiator's message and returns its payload.
    /// Throws WireError on a malformed message or one not made for this
    /// static key.
    public mutating func readMessage(_ message: [UInt8]) throws -> [UInt8] {
        guard step == .start else {
            throw WireError.malformed("the Noise responder reads the initiator's handshake message once, first")
        }
        step = .failed
        let (re, payload) = try symmetric.readEphemeral(message, mixingDHWith: staticKey, what: "handshake message", peer: "a Raha client")
        remoteEphemeral = re
        step = .readFirst
        return payload
    }

    /// `<- e, ee`: the reply, carrying `payload` encrypted with forward
    /// secrecy, and the transport session.
    public mutating func writeMessage(payload: [UInt8] = []) throws -> (message: [UInt8], session: NoiseSession) {
        guard step == .readFirst else {
            throw WireError.malformed("the Noise responder writes its reply once, after reading the initiator's message")
        }
        step = .failed
        let e = ephemeral ?? NoiseKeyPair.generate()
        let message = try symmetric.writeEphemeral(e, mixingDHWith: remoteEphemeral, payload: payload)
        let (toResponder, toInitiator) = symmetric.split()
        step = .done
        return (message, NoiseSession(sender: toInitiator, receiver: toResponder, handshakeHash: symmetric.hash))
    }
}
