import Foundation
import Testing
import RahaWire

extension RahaIntegration {
    /// A real OpenSSL server accepts the ClientHello however Raha re-frames it.
    @Suite("ClientHello fragmentation")
    struct ClientHelloFragmentation {
        @Test("OpenSSL (Python's ssl) answers a record-fragmented ClientHello with a ServerHello")
        func openSSLAcceptsFragmentedRecords() throws {
            let python = try Paths.tool("python3", package: "python3")
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("raha-tls-\(getpid())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let cert = directory.appendingPathComponent("cert.pem").path, key = directory.appendingPathComponent("key.pem").path
            let made = try runCommand("openssl req", try Paths.tool("openssl", package: "openssl"),
                                      ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                       "-subj", "/CN=www.example.com", "-days", "1", "-keyout", key, "-out", cert])
            #expect(made.status == 0, "\(made.stderrText)")

            // A fresh ClientHello from OpenSSL itself (Python's ssl module, in memory).
            let hello = try runCommand("make ClientHello", python, ["-c", """
                import ssl
                c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE
                i, o = ssl.MemoryBIO(), ssl.MemoryBIO(); s = c.wrap_bio(i, o, server_hostname="www.example.com")
                try: s.do_handshake()
                except ssl.SSLWantReadError: pass
                print(o.read().hex())
                """])
            let record = hexBytes(hello.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(ClientHelloFragmenter.serverNameRange(in: record) != nil)

            let fixture = Paths.fixtures.appendingPathComponent("tls_server_accepts.py").path
            for sizes in [[], [1], [3, 7, 11], [100, 100, 100]] {
                let fragmented = ClientHelloFragmenter.splitRecords(record, sizes: sizes)
                #expect(fragmented != record)
                let verdict = try runCommand("tls_server_accepts.py", python, [fixture, cert, key, hexString(fragmented)])
                #expect(verdict.status == 0 && verdict.stdoutText.hasPrefix("accepted"), "sizes \(sizes): \(verdict.stdoutText)\(verdict.stderrText)")
            }
            // The check can fail: a record cut short is refused.
            let broken = Array(ClientHelloFragmenter.splitRecords(record, sizes: [10]).prefix(12)) + [0x15, 3, 3, 0, 2, 2, 40]
            let refused = try runCommand("tls_server_accepts.py", python, [fixture, cert, key, hexString(broken)])
            #expect(refused.status != 0)
        }

        func hexBytes(_ text: String) -> [UInt8] {
            var out: [UInt8] = []
            var iterator = text.makeIterator()
            while let a = iterator.next(), let b = iterator.next() { out.append(UInt8(String([a, b]), radix: 16) ?? 0) }
            return out
        }

        func hexString(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
    }
}
