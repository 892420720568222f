import Crypto
import Foundation
import NIOSSL
import NIOCore
import Testing
import RahaWire
@testable import RahaBridge

@Suite struct TLSIdentityTests {
    func temporaryDirectory() -> DataDirectory {
        DataDirectory(path: FileManager.default.temporaryDirectory.appendingPathComponent("raha-tls-\(UUID().uuidString)").path)
    }

    @Test func aSelfSignedCertificateIsMadeOnceAndKeptPrivate() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory.path) }
        let (first, created) = try TLSIdentity.loadOrCreateSelfSigned(name: "www.example.org", in: directory)
        #expect(created && first.selfSigned)
        let (again, createdAgain) = try TLSIdentity.loadOrCreateSelfSigned(name: "www.example.org", in: directory)
        #expect(!createdAgain)
        #expect(again.fingerprint == first.fingerprint, "the pin in keys already handed out must stay valid")
        #expect(first.fingerprint == Array(SHA256.hash(data: try first.chain[0].toDERBytes())))
        for file in try FileManager.default.contentsOfDirectory(atPath: directory.path) {
            let mode = try FileManager.default.attributesOfItem(atPath: directory.path + "/" + file)[.posixPermissions] as! Int
            #expect(mode == 0o600, "\(file)")
        }
        // Another name gets its own certificate.
        let (other, _) = try TLSIdentity.loadOrCreateSelfSigned(name: "203.0.113.7", in: directory)
        #expect(other.fingerprint != first.fingerprint)
    }

    @Test func theCertificateLooksLikeAnOrdinaryServerCertificate() throws {
        let (pem, _) = try TLSIdentity.makeSelfSigned(name: "www.example.org")
        let certificate = try NIOSSLCertificate(bytes: Array(pem.utf8), format: .pem)
        let names = certificate._subjectAlternativeNames().compactMap { name -> String? in
            guard name.nameType == .dnsName else { return nil }
            return String(decoding: name.contents, as: UTF8.self)
        }
        #expect(names == ["www.example.org"])
        #expect(certificate.notValidAfter > Int(Date().timeIntervalSince1970) + 365 * 86_400)
    }

    @Test func operatorKeysReadableByOthersAreRefused() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory.path) }
        try directory.ensureExists()
        let (certificate, key) = try TLSIdentity.makeSelfSigned(name: "site.example")
        let certificateFile = directory.path + "/cert.pem", keyFile = directory.path + "/key.pem"
        try certificate.write(toFile: certificateFile, atomically: true, encoding: .utf8)
        try key.write(toFile: keyFile, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: keyFile)
        #expect(throws: DataDirectory.StorageError.self) { try TLSIdentity.load(certificateFile: certificateFile, keyFile: keyFile) }
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: keyFile)
        let identity = try TLSIdentity.load(certificateFile: certificateFile, keyFile: keyFile)
        #expect(!identity.selfSigned)
        // A file that is not PEM gets a message naming it.
        do {
            _ = try TLSIdentity.load(certificateFile: keyFile, keyFile: keyFile)
            Issue.record("a key file is not a certificate")
        } catch {
            #expect("\(error)".contains(keyFile))
        }
    }
}

@Suite struct StaticSiteTests {
    func head(_ text: String) throws -> HTTPRequestHead? {
        var buffer = ByteBuffer(string: text)
        return try HTTPRequestHead.read(from: &buffer)
    }

    @Test func answersLikeAnOrdinaryWebServer() throws {
        let index = StaticSite.response(to: try head("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(index.keepAlive && index.bytes.hasPrefix("HTTP/1.1 200 OK\r\nServer: nginx\r\n") && index.bytes.contains("<title>"))
        let head = StaticSite.response(to: try self.head("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(head.bytes.hasSuffix("\r\n\r\n") && head.bytes.contains("Content-Length: \(StaticSite.index.utf8.count)"))
        let missing = StaticSite.response(to: try self.head("GET /admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        #expect(missing.bytes.hasPrefix("HTTP/1.1 404 Not Found\r\n") && !missing.keepAlive)
        let post = StaticSite.response(to: try self.head("POST / HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(post.bytes.hasPrefix("HTTP/1.1 405 Not Allowed\r\n") && !post.keepAlive)
        let garbage = StaticSite.response(to: nil)
        #expect(garbage.bytes.hasPrefix("HTTP/1.1 400 Bad Request\r\n") && !garbage.keepAlive)
    }

    @Test func anIncompleteLineIsRefusedOnceItCannotBeARequestAsNginxDoes() {
        func refused(_ bytes: [UInt8]) -> Bool { StaticSite.cannotStartARequest(ByteBuffer(bytes: bytes).readableBytesView) }
        for prefix in ["", "G", "GET", "GET ", "GET /ind", "\r\nPOST / HTTP/1.1\r\nHo", "M-SEARCH", "_X"] {
            #expect(!refused(Array(prefix.utf8)), "\(prefix.debugDescription) may still become a request")
        }
        for garbage: [UInt8] in [[0x00], [0x47, 0x65], Array("get /".utf8), [0x41, 0x7f, 0x20], Array("GE\tT".utf8), [0x0d, 0x0a, 0x31]] {
            #expect(refused(garbage), "\(garbage) cannot start a request")
        }
    }
}
