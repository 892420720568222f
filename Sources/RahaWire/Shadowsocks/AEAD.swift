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
struct AEADStreamCipher {
    static let tagLength = 16

    let isChaCha: Bool
    let key: SymmetricKey
    private var counter: (low: UInt64, high: UInt32) = (0, 0)

    init(method: ShadowsocksMethod, key: SymmetricKey) {
        self.isChaCha = method.isChaCha
        self.key = key
    }

    private mutating func nextNonce() -> [UInt8] {
        var nonce = [UInt8](repeating: 0, count: 12)
        var low = counter.low, high = counter.high
        for i in 0..<8 { nonce[i] = UInt8(truncatingIfNeeded: low); low >>= 8 }
        for i in 8..<12 { nonce[i] = UInt8(truncatingIfNeeded: high); high >>= 8 }
        let (next, overflow) = counter.low.addingReportingOverflow(1)
        counter.low = next
        if overflow { counter.high &+= 1 }
        return nonce
    }

    /// Seals `plaintext` and appends ciphertext and tag to `out`.
    mutating func seal<D: DataProtocol>(_ plaintext: D, into out: inout ByteBuffer) {
        let nonce = nextNonce()
        do {
            if isChaCha {
                let box = try ChaChaPoly.seal(plaintext, using: key, nonce: ChaChaPoly.Nonce(data: nonce))
                out.writeContiguousBytes(box.ciphertext)
                out.writeContiguousBytes(box.tag)
            } else {
                let box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(data: nonce))
                out.writeContiguousBytes(box.ciphertext)
                out.writeContiguousBytes(box.tag)
            }
        } catch {
            // Only reachable with a malformed nonce or key, which this type never builds.
            preconditionFailure("AEAD seal failed: \(error)")
        }
    }

    /// Opens ciphertext followed by its tag; throws `.authentication` when the tag does not verify.
    mutating func open(_ sealed: ByteBufferView) throws -> [UInt8] {
        let nonce = nextNonce()
        let split = sealed.index(sealed.endIndex, offsetBy: -Self.tagLength)
        do {
            if isChaCha {
                let box = try ChaChaPoly.SealedBox(nonce: ChaChaPoly.Nonce(data: nonce), ciphertext: sealed[..<split], tag: sealed[split...])
                return Array(try ChaChaPoly.open(box, using: key))
            } else {
                let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: nonce), ciphertext: sealed[..<split], tag: sealed[split...])
                return Array(try AES.GCM.open(box, using: key))
            }
        } catch {
            throw WireError(.authentication, "a chunk failed authentication: wrong key or tampered data")
        }
    }
}
