/// The Shadowsocks AEAD methods Raha speaks.
///
/// Legacy AEAD methods (shadowsocks-org aead.md) derive the key from a
/// password and are what Outline apps and servers use. The 2022 methods
/// (SIP022) take a base64 pre-shared key of exactly `keyLength` bytes.
public enum ShadowsocksMethod: String, CaseIterable, Sendable {
    case chacha20IETFPoly1305 = "chacha20-ietf-poly1305"
    case aes256GCM = "aes-256-gcm"
    case aes128GCM = "aes-128-gcm"
    case blake3AES128GCM = "2022-blake3-aes-128-gcm"
    case blake3AES256GCM = "2022-blake3-aes-256-gcm"
    case blake3ChaCha20Poly1305 = "2022-blake3-chacha20-poly1305"

    /// Key length in bytes; the salt has the same length.
    public var keyLength: Int {
        switch self {
        case .aes128GCM, .blake3AES128GCM: return 16
        default: return 32
        }
    }

    public var saltLength: Int { keyLength }

    /// True for the SIP022 ("2022-blake3-…") methods.
    public var is2022: Bool {
        switch self {
        case .blake3AES128GCM, .blake3AES256GCM, .blake3ChaCha20Poly1305: return true
        default: return false
        }
    }

    /// True when the AEAD is ChaCha20-Poly1305 rather than AES-GCM.
    public var isChaCha: Bool { self == .chacha20IETFPoly1305 || self == .blake3ChaCha20Poly1305 }

    /// Parses a method name case-insensitively, with a message listing the valid names.
    public init(name: String) throws {
        guard let m = ShadowsocksMethod(rawValue: name.lowercased()) else {
            let valid = ShadowsocksMethod.allCases.map(\.rawValue).joined(separator: ", ")
            throw WireError.badKey("unknown Shadowsocks method “\(name.prefix(40))”: use one of \(valid)")
        }
        self = m
    }
}
