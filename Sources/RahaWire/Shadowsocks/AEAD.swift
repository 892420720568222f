import CLibCrypto
import Crypto
import Foundation
import NIOFoundationCompat
import NIOCore

/// Key material for one access key: the method and its master key (derived
/// from the password for legacy methods, the decoded PSK for 2022 methods).
public struct ShadowsocksCredential: Sendable {
    public let method: ShadowsocksMethod
    public let masterKey: [UInt8]

    public init(method: ShadowsocksMethod, password: String) throws {
        self.method = method
        if method.is2022 {
            guard let psk = Base64.decode(password) else {
                throw WireError.badKey("the \(method.rawValue) key must be base64 (e.g. from `openssl rand -base64 \(method.keyLength)`), and this one does not decode")
            }
            guard psk.count == method.keyLength else {
                throw WireError.badKey("the \(method.rawValue) key must be base64 of exactly \(method.keyLength) bytes, this one decodes to \(psk.count)")
            }
            masterKey = psk
        } else {
            guard !password.isEmpty else { throw WireError.badKey("the password is empty") }
            masterKey = Self.bytesToKey(Array(password.utf8), length: method.keyLength)
        }
    }

    /// OpenSSL's EVP_BytesToKey with MD5 and one iteration, as legacy Shadowsocks uses.
    static func bytesToKey(_ password: [UInt8], length: Int) -> [UInt8] {
        var key: [UInt8] = []
        var previous: [UInt8] = []
        while key.count < length {
            var md5 = Insecure.MD5()
            md5.update(data: previous)
            md5.update(data: password)
            previous = Array(md5.finalize())
            key += previous
        }
        return Array(key.prefix(length))
    }

    /// The per-stream subkey for a salt (or a 2022 UDP session ID).
    public func subkey(salt: some Collection<UInt8>) -> SymmetricKey {
        if method.is2022 {
            return SymmetricKey(data: BLAKE3.deriveKey(context: "shadowsocks 2022 session subkey", material: masterKey + salt, outputLength: method.keyLength))
        }
        return HKDF<Insecure.SHA1>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: masterKey), salt: Array(salt),
            info: Array("ss-subkey".utf8), outputByteCount: method.keyLength)
    }
}

/// One direction of a Shadowsocks stream: a subkey and the 96-bit
/// little-endian counter used as nonce, incremented after every operation.
///
/// This is the hot path of every proxied byte, so it runs on OpenSSL's
/// libcrypto with one context per direction (key set once), reading and
/// writing ByteBuffer memory in place: no allocation or copy per chunk.
struct AEADStreamCipher {
    static let tagLength = 16

    private let context: AEADContext
    private var counter: (low: UInt64, high: UInt32) = (0, 0)

    init(method: ShadowsocksMethod, key: SymmetricKey) {
        context = AEADContext(method: method, key: key)
    }

    private mutating func nextNonce() -> (UInt64, UInt32) {
        defer {
            let (next, overflow) = counter.low.addingReportingOverflow(1)
            counter.low = next
            if overflow { counter.high &+= 1 }
        }
        return (counter.low.littleEndian, counter.high.littleEndian)
    }

    /// Seals `plaintext` and appends ciphertext and tag to `out`.
    mutating func seal(_ plaintext: UnsafeRawBufferPointer, into out: inout ByteBuffer) {
        var nonce = nextNonce()
        let context = self.context
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: plaintext.count + Self.tagLength) { target in
            withUnsafeBytes(of: &nonce) { context.seal(plaintext, nonce: $0.baseAddress!, into: target) }
            return plaintext.count + Self.tagLength
        }
    }

    mutating func seal<C: Collection>(_ plaintext: C, into out: inout ByteBuffer) where C.Element == UInt8 {
        if let done: Void = plaintext.withContiguousStorageIfAvailable({ seal(UnsafeRawBufferPointer($0), into: &out) }) {
            return done
        }
        let copy = Array(plaintext)
        copy.withUnsafeBytes { seal($0, into: &out) }
    }

    /// Opens ciphertext followed by its tag, appending the plaintext to `out`;
    /// throws `.authentication` (and writes nothing) when the tag does not verify.
    mutating func open(_ sealed: UnsafeRawBufferPointer, into out: inout ByteBuffer) throws {
        precondition(sealed.count >= Self.tagLength)
        var nonce = nextNonce()
        let context = self.context
        let length = sealed.count - Self.tagLength
        var verified = false
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { target -> Int in
            verified = withUnsafeBytes(of: &nonce) { context.open(sealed, nonce: $0.baseAddress!, into: target) }
            return verified ? length : 0
        }
        guard verified else {
            throw WireError(.authentication, "a chunk failed authentication: wrong key or tampered data")
        }
    }

    /// Opens a sealed chunk into a new array (headers and length chunks).
    mutating func open(_ sealed: ByteBufferView) throws -> [UInt8] {
        var out = ByteBuffer()
        try sealed.withContiguousStorageIfAvailable { try open(UnsafeRawBufferPointer($0), into: &out) }!
        return Array(out.readableBytesView)
    }
}

/// An OpenSSL EVP cipher context with its key set, for one direction.
final class AEADContext: @unchecked Sendable {
    private let cipher: OpaquePointer
    private let key: [UInt8]
    // Each stream direction only seals or only opens: make just the context it uses.
    private var encryptContext: OpaquePointer?
    private var decryptContext: OpaquePointer?

    init(method: ShadowsocksMethod, key: SymmetricKey) {
        let cipher: OpaquePointer?
        switch (method.isChaCha, method.keyLength) {
        case (true, _): cipher = Self.chacha20Poly1305
        case (false, 16): cipher = Self.aes128GCM
        default: cipher = Self.aes256GCM
        }
        guard let cipher else { preconditionFailure("OpenSSL has no \(method.rawValue) cipher") }
        self.cipher = cipher
        self.key = key.withUnsafeBytes { Array($0) }
    }

    private var encrypt: OpaquePointer {
        if let encryptContext { return encryptContext }
        guard let context = EVP_CIPHER_CTX_new() else { preconditionFailure("OpenSSL could not make a cipher context") }
        precondition(EVP_EncryptInit_ex(context, cipher, nil, key, nil) == 1)
        encryptContext = context
        return context
    }

    private var decrypt: OpaquePointer {
        if let decryptContext { return decryptContext }
        guard let context = EVP_CIPHER_CTX_new() else { preconditionFailure("OpenSSL could not make a cipher context") }
        precondition(EVP_DecryptInit_ex(context, cipher, nil, key, nil) == 1)
        decryptContext = context
        return context
    }

    // Fetched once: OpenSSL 3's implicit fetch on every context costs more
    // than a whole small request.
    private static let chacha20Poly1305 = EVP_CIPHER_fetch(nil, "ChaCha20-Poly1305", nil)
    private static let aes128GCM = EVP_CIPHER_fetch(nil, "AES-128-GCM", nil)
    private static let aes256GCM = EVP_CIPHER_fetch(nil, "AES-256-GCM", nil)

    deinit {
        if let encryptContext { EVP_CIPHER_CTX_free(encryptContext) }
        if let decryptContext { EVP_CIPHER_CTX_free(decryptContext) }
    }

    /// Writes ciphertext then tag to `target` (at least plaintext.count + 16 bytes).
    func seal(_ plaintext: UnsafeRawBufferPointer, nonce: UnsafeRawPointer, into target: UnsafeMutableRawBufferPointer) {
        let encrypt = self.encrypt
        let out = target.bindMemory(to: UInt8.self).baseAddress!
        var length: Int32 = 0
        precondition(EVP_EncryptInit_ex(encrypt, nil, nil, nil, nonce.assumingMemoryBound(to: UInt8.self)) == 1)
        if plaintext.count > 0 {
            precondition(EVP_EncryptUpdate(encrypt, out, &length, plaintext.bindMemory(to: UInt8.self).baseAddress, Int32(plaintext.count)) == 1)
        }
        var final: Int32 = 0
        precondition(EVP_EncryptFinal_ex(encrypt, out + Int(length), &final) == 1)
        precondition(EVP_CIPHER_CTX_ctrl(encrypt, EVP_CTRL_AEAD_GET_TAG, 16, out + plaintext.count) == 1)
    }

    /// Writes the plaintext to `target`; false when the tag does not verify.
    func open(_ sealed: UnsafeRawBufferPointer, nonce: UnsafeRawPointer, into target: UnsafeMutableRawBufferPointer) -> Bool {
        let decrypt = self.decrypt
        let count = sealed.count - 16
        let input = sealed.bindMemory(to: UInt8.self).baseAddress!
        let out = target.bindMemory(to: UInt8.self).baseAddress
        var length: Int32 = 0
        guard EVP_DecryptInit_ex(decrypt, nil, nil, nil, nonce.assumingMemoryBound(to: UInt8.self)) == 1 else { return false }
        if count > 0 {
            guard EVP_DecryptUpdate(decrypt, out, &length, input, Int32(count)) == 1 else { return false }
        }
        guard EVP_CIPHER_CTX_ctrl(decrypt, EVP_CTRL_AEAD_SET_TAG, 16, UnsafeMutableRawPointer(mutating: input + count)) == 1 else { return false }
        var final: Int32 = 0
        var scratch: UInt8 = 0
        return withUnsafeMutablePointer(to: &scratch) { s in
            EVP_DecryptFinal_ex(decrypt, out.map { $0 + Int(length) } ?? s, &final) == 1
        }
    }
}
