import Foundation
import Testing

/// Whole HTTP responses as bytes, fetched plainly, over TLS or through
/// curl, for comparing what a prober sees at a bridge with what the real
/// web site says.
enum HTTPProbe {
    /// The response without its `Date:` header line: the one header that
    /// may differ between two otherwise identical responses.
    static func withoutDate(_ response: Data) -> Data {
        let separator = Data("\r\n\r\n".utf8)
        guard let end = response.range(of: separator) else { return response }
        let head = String(decoding: response[..<end.lowerBound], as: UTF8.self)
        let kept = head.components(separatedBy: "\r\n").filter { !$0.lowercased().hasPrefix("date:") }
        return Data(kept.joined(separator: "\r\n").utf8) + response[end.lowerBound...]
    }

    /// `curl -sS -i [extra] URL`: the status line, headers and body exactly
    /// as received (fails when curl does). No proxy unless `extra` names one.
    static func curl(_ url: String, _ extra: [String] = []) throws -> Data {
        let result = try Curl.fetch(["-i"] + extra + [url])
        guard result.status == 0 else {
            throw TestFailure("curl -i \(extra.joined(separator: " ")) \(url) exited \(result.status): \(result.stderr)")
        }
        return result.body
    }

    /// Sends `request` on a plain TCP connection to 127.0.0.1:port and reads
    /// until the server closes (so ask for `Connection: close`, or send
    /// something the server closes on). Fails unless it ends with EOF.
    static func plain(port: UInt16, _ request: Data) throws -> Data {
        let socket = try RawTCP(port: port)
        defer { socket.close() }
        try socket.send([UInt8](request))
        let (bytes, ending) = socket.readToEnd()
        guard ending == .eof else {
            throw TestFailure("127.0.0.1:\(port) answered \(bytes.count) bytes and then \(ending), not EOF:\n\(String(decoding: bytes, as: UTF8.self))")
        }
        return Data(bytes)
    }

    /// Sends `request` over TLS to 127.0.0.1:port with `openssl s_client
    /// -quiet` (SNI `serverName`, no ALPN, certificate not checked) and
    /// returns every byte the server sent until it closed the connection.
    /// Like `plain`, the request must make the server close; with
    /// `requireClose: false` a server still silent after `listenFor` seconds
    /// (a bound on how long to listen, not a speed assertion) is not an
    /// error: what it sent so far is returned (status -1).
    static func tls(port: UInt16, serverName: String, _ request: Data,
                    requireClose: Bool = true, listenFor: TimeInterval = ManagedProcess.hangGuard) throws -> CommandResult {
        let client = try ManagedProcess("openssl s_client", try TestCertificate.openssl(),
            ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", serverName, "-quiet", "-nocommands"])
        defer { client.stop() }
        try client.writeToStandardInput(request)
        // -quiet implies -ign_eof: s_client keeps reading until the server closes.
        let status: Int32
        do {
            status = try client.waitForExit(timeout: listenFor)
        } catch where !requireClose {
            status = -1
        }
        return CommandResult(status: status, stdout: client.standardOutput, stderrText: client.standardErrorText)
    }

    /// `GET PATH HTTP/1.1` for 127.0.0.1 that asks the server to close afterwards.
    static func get(_ path: String, headers: [String] = []) -> Data {
        Data((["GET \(path) HTTP/1.1", "Host: 127.0.0.1", "User-Agent: raha-probe", "Accept: */*"] + headers
              + ["Connection: close", "", ""]).joined(separator: "\r\n").utf8)
    }

    /// What a Trojan request with a wrong password looks like: 56 random hex
    /// digits (not the SHA-224 of the password), CRLF, CONNECT to an IPv4
    /// address (127.0.0.1:port), CRLF, then `payload`.
    static func bogusTrojanRequest(port: UInt16, payload: Data) -> Data {
        let digits = hex((0..<28).map { _ in UInt8.random(in: 0...255) })
        var bytes = Data(digits.utf8) + Data("\r\n".utf8)
        bytes += Data([1, 1, 127, 0, 0, 1, UInt8(port >> 8), UInt8(port & 0xff)]) + Data("\r\n".utf8)
        return bytes + payload
    }
}

/// Expects two HTTP responses to be byte for byte the same except for their
/// Date headers, showing both when they are not.
func expectSameResponse(_ got: Data, _ expected: Data, _ what: String, processes: [ManagedProcess] = [],
                        sourceLocation: SourceLocation = #_sourceLocation) {
    let a = HTTPProbe.withoutDate(got), b = HTTPProbe.withoutDate(expected)
    let identical = a == b
    #expect(identical, """
        \(what): the responses differ\(firstDifference(a, b)) (Date headers left out).
        --- got (\(got.count) bytes):
        \(String(decoding: got.prefix(2048), as: UTF8.self))
        --- expected, from the web site directly (\(expected.count) bytes):
        \(String(decoding: expected.prefix(2048), as: UTF8.self))\(outputs(processes))
        """, sourceLocation: sourceLocation)
}

/// The status, headers and body of one HTTP/1.x (or HTTP/2 as curl -i shows it) response.
struct HTTPHead {
    let status: Int?
    let headers: [(String, String)]
    let body: Data

    init(_ response: Data) {
        let separator = Data("\r\n\r\n".utf8)
        let end = response.range(of: separator)
        let head = String(decoding: end.map { response[..<$0.lowerBound] } ?? response, as: UTF8.self)
        body = end.map { Data(response[$0.upperBound...]) } ?? Data()
        let lines = head.components(separatedBy: "\r\n")
        status = lines.first.flatMap { line in line.split(separator: " ").dropFirst().first.flatMap { Int($0) } }
        headers = lines.dropFirst().compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
    }

    func header(_ name: String) -> String? { headers.first { $0.0 == name.lowercased() }?.1 }
}
