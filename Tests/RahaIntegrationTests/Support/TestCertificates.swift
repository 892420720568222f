import Foundation

/// A self-signed certificate (ECDSA P-256) and its key, made with openssl
/// for one DNS name, in a temporary directory of its own (deleted when the
/// test process exits).
struct TestCertificate: Sendable {
    /// The DNS name: the subject CN and the only subjectAltName.
    let name: String
    /// PEM files.
    let certificateFile: String
    let keyFile: String
    /// SHA-256 of the DER certificate, lowercase hex without colons: what a `pin=` holds.
    let sha256: String

    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes
    /// -subj /CN=NAME -addext subjectAltName=DNS:NAME`, valid for 30 days.
    static func make(for name: String) throws -> TestCertificate {
        let directory = try Paths.temporaryDirectory("cert-\(name)")
        ProcessRegistry.shared.removeAtExit(directory.path)
        let certificate = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        let made = try runCommand("openssl req", try openssl(), [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "30", "-keyout", key, "-out", certificate,
            "-subj", "/CN=\(name)", "-addext", "subjectAltName=DNS:\(name)",
        ])
        guard made.status == 0, FileManager.default.fileExists(atPath: certificate),
              FileManager.default.fileExists(atPath: key) else {
            throw TestFailure("openssl req could not make a certificate for \(name) (status \(made.status)):\n\(made.output)")
        }
        return TestCertificate(name: name, certificateFile: certificate, keyFile: key,
                               sha256: try fingerprint(ofPEMFile: certificate))
    }

    /// SHA-256 of the DER form of the (first) certificate in a PEM file, lowercase hex:
    /// `openssl x509 -noout -fingerprint -sha256` without its colons.
    static func fingerprint(ofPEMFile path: String) throws -> String {
        let result = try runCommand("openssl x509", try openssl(), ["x509", "-in", path, "-noout", "-fingerprint", "-sha256"])
        // "sha256 Fingerprint=9D:C8:…" (OpenSSL 3) or "SHA256 Fingerprint=…" (1.1).
        let text = result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        guard result.status == 0, let equals = text.firstIndex(of: "=") else {
            throw TestFailure("openssl x509 -fingerprint failed for \(path) (status \(result.status)):\n\(result.output)")
        }
        let digits = text[text.index(after: equals)...].filter { $0 != ":" }.lowercased()
        guard digits.count == 64, digits.allSatisfy(\.isHexDigit) else {
            throw TestFailure("openssl x509 -fingerprint said “\(text)”, not a SHA-256")
        }
        return digits
    }

    /// The SHA-256 (lowercase hex) of the certificate a TLS server on
    /// 127.0.0.1:port presents for `serverName` (`openssl s_client`, which
    /// prints the server's certificate in PEM; the handshake is all it does).
    static func servedFingerprint(port: UInt16, serverName: String) throws -> String {
        let client = try ManagedProcess("openssl s_client (certificate)", try openssl(),
            ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", serverName, "-nocommands"])
        defer { client.stop() }
        client.closeStandardInput() // end of input: s_client shuts down after the handshake
        try client.waitForExit()
        let text = client.standardOutputText
        guard let begin = text.range(of: "-----BEGIN CERTIFICATE-----"),
              let end = text.range(of: "-----END CERTIFICATE-----", range: begin.upperBound..<text.endIndex) else {
            throw TestFailure("openssl s_client showed no certificate from 127.0.0.1:\(port) (\(serverName)):\n\(client.output)")
        }
        let directory = try Paths.temporaryDirectory("served-cert")
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("served.pem")
        try (String(text[begin.lowerBound..<end.upperBound]) + "\n").write(to: file, atomically: true, encoding: .utf8)
        return try fingerprint(ofPEMFile: file.path)
    }

    static func openssl() throws -> String { try Paths.tool("openssl", package: "openssl") }
}
