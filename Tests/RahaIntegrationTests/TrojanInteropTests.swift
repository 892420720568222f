import Foundation
import Testing

/// The TLS name the tests' Trojan bridges and v2ray servers answer to.
let trojanBridgeName = "bridge.raha.test"
/// The TLS name of the nginx "CDN" front.
let trojanCDNName = "cdn.raha.test"

/// How Trojan travels: directly inside TLS, or inside WebSocket inside TLS.
enum TrojanTransport: String, Sendable, CustomTestStringConvertible {
    case tls
    case webSocket
    var testDescription: String { self == .tls ? "TLS" : "WebSocket over TLS" }
}

/// How a client checks a self-signed server certificate.
enum CertificateCheck: String, Sendable, CustomTestStringConvertible {
    /// `allowInsecure=1`: not at all.
    case allowInsecure
    /// `pin=HEX`: the SHA-256 of the certificate.
    case pin
    var testDescription: String { self == .pin ? "pin=" : "allowInsecure=1" }
}

/// A random WebSocket path (the bridge's second secret).
func randomWebSocketPath() -> String { "/" + randomPassword(16) }

/// The listener for `raha bridge`: `trojan://PASSWORD@127.0.0.1:PORT?security=tls&sni=bridge.raha.test`,
/// plus `&type=ws&path=PATH` for WebSocket.
func trojanListener(password: String, port: UInt16, transport: TrojanTransport, path: String) -> String {
    trojanURI(password: password, port: port, [("security", "tls"), ("sni", trojanBridgeName)]
        + (transport == .webSocket ? [("type", "ws"), ("path", path)] : []))
}

/// The `pin=` value in a printed key, if any.
func pinParameter(of key: String) -> String? {
    guard let query = key.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
    let withoutTag = query.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
    for pair in withoutTag.split(separator: "&") where pair.lowercased().hasPrefix("pin=") {
        return String(pair.dropFirst(4)).removingPercentEncoding?.replacingOccurrences(of: ":", with: "").lowercased()
    }
    return nil
}

extension RahaIntegration {
    /// Raha's Trojan (over TLS, and over WebSocket over TLS) against
    /// Debian's v2ray 4.34 in both directions, against itself, and through
    /// nginx standing in for a CDN.
    @Suite("Trojan interop")
    struct TrojanInterop {
        @Test("v2ray (Trojan client) → raha bridge: curl --socks5-hostname through v2ray fetches both files byte for byte",
              arguments: [(TrojanTransport.tls, false), (.tls, true), (.webSocket, false), (.webSocket, true)])
        func v2rayToRahaBridge(transport: TrojanTransport, verified: Bool) throws {
            let running = Processes()
            defer { running.stopAll() }
            let password = randomPassword(), path = randomWebSocketPath()
            let port = try Ports.free()
            // verified: the bridge serves a certificate we made (--cert/--key) and
            // v2ray checks it; otherwise the bridge makes its own and v2ray skips the check.
            let certificate = verified ? try TestCertificate.make(for: trojanBridgeName) : nil
            let (bridge, keys) = try Peers.trojanBridge([trojanListener(password: password, port: port, transport: transport, path: path)],
                                                        certificate: certificate)
            running.add(bridge)
            #expect(keys.count == 1, "the bridge printed \(keys.count) keys for one listener: \(keys)")
            if let certificate {
                #expect(try TestCertificate.servedFingerprint(port: port, serverName: trojanBridgeName) == certificate.sha256,
                        "the bridge does not serve the certificate given with --cert\(outputs([bridge]))")
            }
            let (v2ray, socksPort) = try V2Ray.trojanClient(
                serverPort: port, password: password, serverName: trojanBridgeName,
                allowInsecure: !verified, trustedCertificate: certificate?.certificateFile,
                webSocket: transport == .webSocket ? V2Ray.WebSocket(path: path, host: trojanBridgeName) : nil)
            running.add(v2ray)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(socksPort)"],
                                  via: "v2ray → raha bridge (\(transport.testDescription), \(verified ? "verified certificate" : "allowInsecure"))",
                                  processes: [bridge, v2ray])
        }

        @Test("raha connect → v2ray (Trojan server): SOCKS5 and HTTP forwarding fetch both files byte for byte",
              arguments: [(TrojanTransport.tls, CertificateCheck.allowInsecure), (.tls, .pin), (.webSocket, .pin), (.webSocket, .allowInsecure)])
        func rahaConnectToV2RayServer(transport: TrojanTransport, check: CertificateCheck) throws {
            let running = Processes()
            defer { running.stopAll() }
            let password = randomPassword(), path = randomWebSocketPath()
            let certificate = try TestCertificate.make(for: trojanBridgeName)
            // v2ray's defaults otherwise (its TLS server may select h2 or http/1.1).
            let (server, serverPort) = try V2Ray.trojanServer(password: password, certificate: certificate,
                                                              webSocketPath: transport == .webSocket ? path : nil)
            running.add(server)
            var parameters = [("security", "tls"), ("sni", trojanBridgeName)]
            parameters.append(check == .pin ? ("pin", certificate.sha256) : ("allowInsecure", "1"))
            if transport == .webSocket { parameters += [("type", "ws"), ("path", path), ("host", trojanBridgeName)] }
            let key = trojanURI(password: password, port: serverPort, parameters)
            let (connect, proxyPort) = try Peers.connect([key])
            running.add(connect)
            let via = "raha connect → v2ray (\(transport.testDescription), \(check.testDescription))"
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(proxyPort)"], via: "\(via) (SOCKS5)", processes: [server, connect])
            try expectFetchesBoth(["-x", "http://127.0.0.1:\(proxyPort)"], via: "\(via) (HTTP forwarding)", processes: [server, connect])
        }

        @Test("raha connect will not use a Trojan server it cannot verify: a pin of another certificate, or neither pin nor allowInsecure",
              arguments: [TrojanTransport.tls, .webSocket])
        func rahaConnectRefusesUnverifiedServer(transport: TrojanTransport) throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let password = randomPassword(), path = randomWebSocketPath()
            let certificate = try TestCertificate.make(for: trojanBridgeName)
            let other = try TestCertificate.make(for: trojanBridgeName)
            let (server, serverPort) = try V2Ray.trojanServer(password: password, certificate: certificate,
                                                              webSocketPath: transport == .webSocket ? path : nil)
            running.add(server)
            let ws: [(String, String)] = transport == .webSocket ? [("type", "ws"), ("path", path), ("host", trojanBridgeName)] : []
            let keys = [
                ("a pin of another certificate", trojanURI(password: password, port: serverPort,
                    [("security", "tls"), ("sni", trojanBridgeName), ("pin", other.sha256)] + ws)),
                ("no pin and no allowInsecure", trojanURI(password: password, port: serverPort,
                    [("security", "tls"), ("sni", trojanBridgeName)] + ws)),
            ]
            for (what, key) in keys {
                let (connect, proxyPort) = try Peers.connect([key])
                running.add(connect)
                let result = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(proxyPort)", origin.smallURL], maxTime: 15)
                #expect(result.status != 0 && result.body != origin.small,
                        "\(transport.testDescription), \(what): raha connect fetched through a server whose certificate it should have refused (curl \(result.status))\(outputs([server, connect]))")
                connect.stop()
            }
            // The control: the same server with the right pin works.
            let good = trojanURI(password: password, port: serverPort,
                                 [("security", "tls"), ("sni", trojanBridgeName), ("pin", certificate.sha256)] + ws)
            let (connect, proxyPort) = try Peers.connect([good])
            running.add(connect)
            let result = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(proxyPort)", origin.smallURL])
            #expect(result.status == 0 && result.body == origin.small,
                    "\(transport.testDescription): with the right pin, curl \(result.status): \(result.stderr)\(outputs([server, connect]))")
        }

        @Test("raha connect → raha bridge with the key the bridge printed (self-signed, pin=): both files and 8 MiB byte for byte, SOCKS5 and HTTP CONNECT",
              arguments: [TrojanTransport.tls, .webSocket])
        func rahaConnectToRahaBridge(transport: TrojanTransport) throws {
            let running = Processes()
            defer { running.stopAll() }
            let password = randomPassword(), path = randomWebSocketPath()
            let port = try Ports.free()
            let (bridge, keys) = try Peers.trojanBridge([trojanListener(password: password, port: port, transport: transport, path: path)])
            running.add(bridge)
            let key = try #require(keys.first)
            #expect(keys.count == 1, "the bridge printed \(keys.count) keys for one listener: \(keys)")
            #expect(key.hasPrefix("trojan://") && key.contains("@127.0.0.1:\(port)"), "the printed key names another address: \(key)")
            // The bridge made its own certificate, so the key pins it: the pin is what the bridge serves.
            let pin = try #require(pinParameter(of: key), "the bridge's key for its self-signed certificate has no pin=: \(key)")
            let served = try TestCertificate.servedFingerprint(port: port, serverName: trojanBridgeName)
            #expect(pin == served, "the key pins \(pin), the bridge serves a certificate with SHA-256 \(served)")
            if transport == .webSocket {
                #expect(key.contains("type=ws") && key.contains(String(path.dropFirst())),
                        "the WebSocket listener's key lacks type=ws or its path \(path): \(key)")
            }

            let (connect, proxyPort) = try Peers.connect([key])
            running.add(connect)
            let via = "raha connect → raha bridge (\(transport.testDescription))"
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(proxyPort)"], via: "\(via) (SOCKS5)", processes: [bridge, connect])
            for proxy in [["--socks5-hostname", "127.0.0.1:\(proxyPort)"], ["-p", "-x", "http://127.0.0.1:\(proxyPort)"]] {
                try expectFetchesFile("large-8MiB.bin", bytes: 8 * 1024 * 1024, proxy, via: "\(via) \(proxy[0])", processes: [bridge, connect])
            }
        }

        @Test("ClientHello fragmentation (fragment=MIN-MAX): Go's TLS in v2ray and BoringSSL in raha bridge both accept the re-framed, re-segmented ClientHello")
        func fragmentedClientHelloIsAccepted() throws {
            let running = Processes()
            defer { running.stopAll() }
            let password = randomPassword()
            let certificate = try TestCertificate.make(for: trojanBridgeName)
            let (v2ray, v2rayPort) = try V2Ray.trojanServer(password: password, certificate: certificate)
            running.add(v2ray)
            let bridgePort = try Ports.free()
            let (bridge, keys) = try Peers.trojanBridge([trojanListener(password: password, port: bridgePort, transport: .tls, path: "/")])
            running.add(bridge)
            let bridgeKey = try #require(keys.first)
            let v2rayKey = trojanURI(password: password, port: v2rayPort,
                                     [("security", "tls"), ("sni", trojanBridgeName), ("pin", certificate.sha256)])
            for (name, key, server) in [("v2ray", v2rayKey, v2ray), ("raha bridge", bridgeKey, bridge)] {
                for sizes in ["1-1", "3-9", "20-60"] {
                    let (connect, proxyPort) = try Peers.connect([key + "&fragment=\(sizes)"])
                    running.add(connect)
                    try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(proxyPort)"],
                                          via: "raha connect (fragment=\(sizes)) → \(name)", processes: [server, connect])
                    connect.stop()
                }
            }
        }

        @Test("Multiplexing: with the bridge's key (mux=1) sequential and parallel streams all share one TLS connection",
              arguments: [TrojanTransport.tls, .webSocket])
        func streamsShareOneConnection(transport: TrojanTransport) throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let port = try Ports.free()
            let (bridge, keys) = try Peers.trojanBridge([trojanListener(password: randomPassword(), port: port, transport: transport,
                                                                        path: randomWebSocketPath())])
            running.add(bridge)
            let key = try #require(keys.first)
            #expect(key.contains("mux=1"), "the bridge's key does not offer multiplexing: \(key)")
            // One event loop, so one multiplexed connection.
            let (connect, proxyPort) = try Peers.connect([key], extra: ["--threads", "1"])
            running.add(connect)
            for round in 0..<12 {
                let result = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(proxyPort)", origin.smallURL])
                #expect(result.status == 0 && result.body == origin.small,
                        "fetch \(round + 1): curl \(result.status): \(result.stderr)\(outputs([bridge, connect]))")
            }
            // Several at once, in one curl (each URL its own proxied stream).
            let urls = (0..<6).map { _ in origin.smallURL }
            let parallel = try Curl.fetch(["--parallel", "--parallel-max", "6", "--socks5-hostname", "127.0.0.1:\(proxyPort)"] + urls)
            let expected = Data(Array(repeating: origin.small, count: 6).joined())
            #expect(parallel.status == 0 && parallel.body == expected, "parallel fetches: curl \(parallel.status): \(parallel.stderr)")
            let open = try establishedConnections(to: port)
            #expect(open == 1, "18 streams left \(open) connections to the bridge open, expected the one they all shared")
        }

        @Test("CDN: raha connect → nginx (TLS, cdn.raha.test, WebSocket proxied on one path) → raha bridge (plain WebSocket) → origin",
              arguments: [CertificateCheck.pin, .allowInsecure])
        func throughNginxFront(check: CertificateCheck) throws {
            let running = Processes()
            defer { running.stopAll() }
            let password = randomPassword(), path = randomWebSocketPath()
            let bridgePort = try Ports.free()
            let listener = trojanURI(password: password, port: bridgePort, [("security", "none"), ("type", "ws"), ("path", path)])
            let (bridge, _) = try Peers.trojanBridge([listener])
            running.add(bridge)
            let certificate = try TestCertificate.make(for: trojanCDNName)
            let front = try Nginx.cdnFront(certificate: certificate, path: path, backendPort: bridgePort)
            running.add(front.process)

            // The front is an ordinary web site everywhere else.
            let page = try Curl.fetch(["-k", "https://127.0.0.1:\(front.port)/"])
            #expect(page.status == 0 && page.body == Data(Nginx.frontPage.utf8), "the CDN front's own page: curl \(page.status): \(page.stderr)")

            // Connect to 127.0.0.1 (the "CDN edge"), name the front in SNI and Host.
            var parameters = [("security", "tls"), ("sni", trojanCDNName)]
            parameters.append(check == .pin ? ("pin", certificate.sha256) : ("allowInsecure", "1"))
            parameters += [("type", "ws"), ("path", path), ("host", trojanCDNName)]
            let (connect, proxyPort) = try Peers.connect([trojanURI(password: password, port: front.port, parameters)])
            running.add(connect)
            let via = "raha connect → nginx → raha bridge (\(check.testDescription))"
            let processes = [bridge, front.process, connect]
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(proxyPort)"], via: "\(via) (SOCKS5)", processes: processes)
            try expectFetchesBoth(["-x", "http://127.0.0.1:\(proxyPort)"], via: "\(via) (HTTP forwarding)", processes: processes)
            #expect(front.process.isRunning && bridge.isRunning, "nginx or the bridge died:\n\(front.errorLog)\(outputs(processes))")
        }
    }
}

/// Established TCP connections from this machine to 127.0.0.1:port (client side), per `ss`.
func establishedConnections(to port: UInt16) throws -> Int {
    let ss = try Paths.tool("ss", package: "iproute2")
    let listed = try runCommand("ss", ss, ["-Htn", "state", "established", "dst", "127.0.0.1:\(port)"])
    return listed.stdoutText.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }.count
}
