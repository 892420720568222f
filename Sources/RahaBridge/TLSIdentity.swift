import Crypto
import Foundation
import NIOSSL
import RahaWire
import X509

/// A bridge's TLS identity: its certificate chain and private key, and the
/// SHA-256 of the leaf certificate, which a self-signed bridge puts in its
/// access keys (`pin=`) so clients verify it without a CA.
public struct TLSIdentity: @unchecked Sendable {
    public let chain: [NIOSSLCertificate]
    public let privateKey: NIOSSLPrivateKey
    /// SHA-256 of the leaf certificate's DER encoding.
    public let fingerprint: [UInt8]
    /// Made by the bridge itself: clients must pin it.
    public let selfSigned: Bool

    public struct LoadError: Error, CustomStringConvertible {
        public let description: String
    }

    init(chain: [NIOSSLCertificate], privateKey: NIOSSLPrivateKey, selfSigned: Bool) throws {
        guard let leaf = chain.first else { throw LoadError(description: "the certificate file holds no certificate") }
        self.chain = chain
        self.privateKey = privateKey
        self.fingerprint = Array(SHA256.hash(data: try leaf.toDERBytes()))
        self.selfSigned = selfSigned
    }

    /// The operator's own certificate chain and key, in PEM files. The key
    /// file must not be readable by other users.
    public static func load(certificateFile: String, keyFile: String) throws -> TLSIdentity {
        try DataDirectory.refuseIfReadableByOthers(keyFile)
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certificateFile) } catch {
            throw LoadError(description: "cannot read the certificate \(certificateFile) (\(error)): expected a PEM file, leaf certificate first")
        }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: keyFile, format: .pem) } catch {
            throw LoadError(description: "cannot read the private key \(keyFile) (\(error)): expected an unencrypted PEM key")
        }
        return try TLSIdentity(chain: chain, privateKey: key, selfSigned: false)
    }

    /// The self-signed certificate for `name` kept in the data directory,
    /// made on first use (ECDSA P-256, valid for ten years) so the pin in
    /// keys already handed out stays valid.
    public static func loadOrCreateSelfSigned(name: String, in directory: DataDirectory) throws -> (identity: TLSIdentity, created: Bool) {
        let base = "tls-" + String(name.lowercased().map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" })
        let certificateName = base + ".crt", keyName = base + ".key"
        if let certificatePEM = try directory.readSecret(certificateName), let keyPEM = try directory.readSecret(keyName) {
            do {
                let chain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8))
                let key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
                return (try TLSIdentity(chain: chain, privateKey: key, selfSigned: true), false)
            } catch {
                throw LoadError(description: "\(directory.path)/\(certificateName) or \(keyName) is damaged (\(error)): remove both to make a new certificate (clients will need the new key)")
            }
        }
        let (certificatePEM, keyPEM) = try makeSelfSigned(name: name)
        try directory.writeSecret(keyName, keyPEM)
        try directory.writeSecret(certificateName, certificatePEM)
        let chain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8))
        let key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
        return (try TLSIdentity(chain: chain, privateKey: key, selfSigned: true), true)
    }

    /// A self-signed server certificate for `name` (a DNS name or an IP
    /// address), shaped like an ordinary web server's: P-256, SAN, serverAuth.
    static func makeSelfSigned(name: String, now: Date = Date()) throws -> (certificate: String, key: String) {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName { CommonName(name) }
        let alternativeName: GeneralName
        switch (try? Endpoint(parsing: name, defaultPort: 443))?.host {
        case .ipv4(let bytes), .ipv6(let bytes): alternativeName = .ipAddress(.init(contentBytes: bytes[...]))
        default: alternativeName = .dnsName(name)
        }
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-86_400),
            notValidAfter: now.addingTimeInterval(10 * 365 * 86_400),
            issuer: subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames([alternativeName])
            },
            issuerPrivateKey: .init(key)
        )
        return (try certificate.serializeAsPEM().pemString, key.pemRepresentation)
    }
}
