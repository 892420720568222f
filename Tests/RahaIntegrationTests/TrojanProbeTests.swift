import Foundation
import Testing

extension RahaIntegration {
    /// A Trojan bridge is a web site to everyone without the password: with
    /// `--fallback` it is nginx's site byte for byte (Date aside), reached
    /// by curl, by a raw TLS client, and by Trojan clients with a wrong
    /// password or WebSocket path; without, a small site of its own.
    @Suite("Trojan probe resistance")
    struct TrojanProbeResistance {
        /// curl -k (offering h2 and http/1.1 by ALPN, as browsers do) at the
        /// bridge, by IP (no SNI) and by name (SNI bridge.raha.test), gets for
        /// each path what plain curl gets from the site itself. `headers` go on
        /// both requests.
        static func expectBrowsersSeeTheSite(bridgePort: UInt16, site: Nginx, paths: [String], headers: [String] = [],
                                             processes: [ManagedProcess],
                                             sourceLocation: SourceLocation = #_sourceLocation) throws {
            let headerArguments = headers.flatMap { ["-H", $0] }
            for path in paths {
                let expected = try HTTPProbe.curl("http://127.0.0.1:\(site.port)\(path)", headerArguments)
                for named in [false, true] {
                    let url = named ? "https://\(trojanBridgeName):\(bridgePort)\(path)" : "https://127.0.0.1:\(bridgePort)\(path)"
                    let resolve = named ? ["--resolve", "\(trojanBridgeName):\(bridgePort):127.0.0.1"] : []
                    let got = try HTTPProbe.curl(url, ["-k"] + resolve + headerArguments)
                    expectSameResponse(got, expected,
                                       "curl -k \(url)\(headers.isEmpty ? "" : " with \(headers)") (an HTTP/2 status line would mean the bridge selected h2 by ALPN for an HTTP/1.1 site)",
                                       processes: processes + [site.process], sourceLocation: sourceLocation)
                }
            }
        }

        /// Raw requests over TLS (`openssl s_client`, no ALPN) at the bridge get
        /// what the same bytes get from the site over plain TCP.
        static func expectRawProbesSeeTheSite(bridgePort: UInt16, site: Nginx, probes: [(String, Data)],
                                              processes: [ManagedProcess],
                                              sourceLocation: SourceLocation = #_sourceLocation) throws {
            for (what, bytes) in probes {
                let expected = try HTTPProbe.plain(port: site.port, bytes)
                let got = try HTTPProbe.tls(port: bridgePort, serverName: trojanBridgeName, bytes)
                expectSameResponse(got.stdout, expected, "\(what), over TLS (openssl s_client: \(got.stderrText.suffix(300)))",
                                   processes: processes + [site.process], sourceLocation: sourceLocation)
            }
        }

        /// nginx's answer to anything that is not HTTP.
        static func expectBadRequest(_ response: Data, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(response.starts(with: Data("HTTP/1.1 400 Bad Request\r\n".utf8)),
                    "nginx itself answered \(what) with: \(String(decoding: response.prefix(200), as: UTF8.self))",
                    sourceLocation: sourceLocation)
        }

        @Test("TLS listener with --fallback to nginx: curl, a raw TLS client, bogus Trojan headers and v2ray with a wrong password all get nginx's own responses")
        func tlsFallbackIsTheSite() throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let site = try Nginx.website()
            running.add(site.process)
            let password = randomPassword(), port = try Ports.free()
            let (bridge, _) = try Peers.trojanBridge([trojanListener(password: password, port: port, transport: .tls, path: "/")],
                                                     fallbackPort: site.port)
            running.add(bridge)

            // The site is what we think it is.
            let index = try HTTPProbe.curl("http://127.0.0.1:\(site.port)/")
            #expect(index.starts(with: Data("HTTP/1.1 200 OK\r\n".utf8)) && index.suffix(Nginx.indexPage.utf8.count) == Data(Nginx.indexPage.utf8))

            try Self.expectBrowsersSeeTheSite(bridgePort: port, site: site, paths: ["/", "/missing"], processes: [bridge])

            let hexOnly = Data(hex((0..<28).map { _ in UInt8.random(in: 0...255) }).utf8) + Data("\r\n".utf8) + HTTPProbe.get("/")
            let bogusTrojan = HTTPProbe.bogusTrojanRequest(port: origin.port, payload: HTTPProbe.get("/\(Origin.smallName)"))
            Self.expectBadRequest(try HTTPProbe.plain(port: site.port, hexOnly), "56 hex digits, CRLF, GET /")
            Self.expectBadRequest(try HTTPProbe.plain(port: site.port, bogusTrojan), "a Trojan request with a wrong password")
            try Self.expectRawProbesSeeTheSite(bridgePort: port, site: site, probes: [
                ("GET / (Connection: close)", HTTPProbe.get("/")),
                ("GET /missing (Connection: close)", HTTPProbe.get("/missing")),
                ("56 random hex digits, CRLF, then GET / HTTP/1.1", hexOnly),
                ("a whole Trojan request with a wrong password (hex, CRLF, CONNECT 127.0.0.1:origin, CRLF, GET)", bogusTrojan),
            ], processes: [bridge])

            // Not TLS at all (plain HTTP, garbage) on the TLS port: the site's own answer, not a TLS alert.
            // Its first byte has no high bit and is not 0x16: an HTTPS server reads such bytes
            // as HTTP (others go to its TLS stack, as TLSPortFirstBytesTests check).
            var noise = (0..<300).map { _ in UInt8.random(in: 0...255) }
            noise[0] = UInt8.random(in: 0x17...0x7f)
            let garbage = Data(noise)
            for (what, request) in [("plain HTTP GET / on the TLS port", HTTPProbe.get("/")),
                                    ("plain HTTP GET /missing on the TLS port", HTTPProbe.get("/missing")),
                                    ("300 random bytes on the TLS port", garbage)] {
                expectSameResponse(try HTTPProbe.plain(port: port, request), try HTTPProbe.plain(port: site.port, request), what,
                                   processes: [bridge, site.process])
            }

            // v2ray with a wrong password: its request goes to the site, which
            // answers 400, and that is what curl gets back through v2ray.
            let (liar, liarPort) = try V2Ray.trojanClient(serverPort: port, password: randomPassword(),
                                                          serverName: trojanBridgeName, allowInsecure: true)
            running.add(liar)
            let refused = try Curl.fetch(["-i", "--socks5-hostname", "127.0.0.1:\(liarPort)", origin.smallURL])
            #expect(refused.body.range(of: origin.small) == nil, "a wrong password reached the origin\(outputs([bridge, liar]))")
            expectSameResponse(refused.body, try HTTPProbe.plain(port: site.port, bogusTrojan),
                               "curl through v2ray with a wrong password (curl \(refused.status): \(refused.stderr))",
                               processes: [bridge, liar, site.process])

            // The control: the right password through the same bridge reaches the origin.
            let (client, clientPort) = try V2Ray.trojanClient(serverPort: port, password: password,
                                                              serverName: trojanBridgeName, allowInsecure: true)
            running.add(client)
            let fetched = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(clientPort)", origin.smallURL])
            #expect(fetched.status == 0 && fetched.body == origin.small,
                    "the right password after the probes: curl \(fetched.status): \(fetched.stderr)\(outputs([bridge, client]))")
            #expect(bridge.isRunning, "the bridge died during the probes (\(bridge.termination)):\n\(bridge.output)")
        }

        @Test("WebSocket listener with --fallback to nginx: a wrong path (plain or as a WebSocket upgrade) gets nginx's 404, / its page; v2ray on a wrong path gets nowhere")
        func webSocketFallbackIsTheSite() throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let site = try Nginx.website()
            running.add(site.process)
            let password = randomPassword(), path = randomWebSocketPath(), port = try Ports.free()
            let (bridge, _) = try Peers.trojanBridge([trojanListener(password: password, port: port, transport: .webSocket, path: path)],
                                                     fallbackPort: site.port)
            running.add(bridge)

            try Self.expectBrowsersSeeTheSite(bridgePort: port, site: site, paths: ["/", "/wrong"], processes: [bridge])
            let upgrade = ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
            try Self.expectBrowsersSeeTheSite(bridgePort: port, site: site, paths: ["/wrong"], headers: upgrade, processes: [bridge])
            try Self.expectRawProbesSeeTheSite(bridgePort: port, site: site, probes: [
                ("GET /wrong (Connection: close)", HTTPProbe.get("/wrong")),
                ("GET / (Connection: close)", HTTPProbe.get("/")),
            ], processes: [bridge])

            // v2ray with the right password on a wrong path: the upgrade gets the site's 404, so no tunnel.
            let (lost, lostPort) = try V2Ray.trojanClient(serverPort: port, password: password, serverName: trojanBridgeName,
                                                          allowInsecure: true, webSocket: V2Ray.WebSocket(path: "/wrong", host: trojanBridgeName))
            running.add(lost)
            let refused = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(lostPort)", origin.smallURL], maxTime: 15)
            #expect(refused.status != 0 && refused.body.range(of: origin.small) == nil,
                    "v2ray on a wrong WebSocket path reached the origin (curl \(refused.status))\(outputs([bridge, lost]))")

            // The control: the right path works.
            let (client, clientPort) = try V2Ray.trojanClient(serverPort: port, password: password, serverName: trojanBridgeName,
                                                              allowInsecure: true, webSocket: V2Ray.WebSocket(path: path, host: trojanBridgeName))
            running.add(client)
            let fetched = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(clientPort)", origin.smallURL])
            #expect(fetched.status == 0 && fetched.body == origin.small,
                    "the right path after the probes: curl \(fetched.status): \(fetched.stderr)\(outputs([bridge, client]))")
            #expect(bridge.isRunning, "the bridge died during the probes (\(bridge.termination)):\n\(bridge.output)")
        }

        @Test("Without --fallback the bridge is a small web site of its own: / is a 200 HTML page, /missing a 404, garbage never reaches the origin",
              arguments: [TrojanTransport.tls, .webSocket])
        func ownSite(transport: TrojanTransport) throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let password = randomPassword(), path = randomWebSocketPath(), port = try Ports.free()
            let (bridge, _) = try Peers.trojanBridge([trojanListener(password: password, port: port, transport: transport, path: path)])
            running.add(bridge)
            for (requestPath, status) in [("/", 200), ("/missing", 404)] {
                let response = try HTTPProbe.curl("https://127.0.0.1:\(port)\(requestPath)", ["-k"])
                let head = HTTPHead(response)
                #expect(head.status == status, "\(transport.testDescription) \(requestPath): status \(head.status.map(String.init) ?? "none"), expected \(status):\n\(String(decoding: response.prefix(1024), as: UTF8.self))\(outputs([bridge]))")
                if status == 200 {
                    #expect(head.header("content-type")?.lowercased().hasPrefix("text/html") == true,
                            "\(transport.testDescription) /: Content-Type \(head.header("content-type") ?? "none"), expected text/html")
                    #expect(String(decoding: head.body, as: UTF8.self).lowercased().contains("<html"),
                            "\(transport.testDescription) /: the body is not an HTML page:\n\(String(decoding: head.body.prefix(1024), as: UTF8.self))")
                }
            }
            // A wrong-password Trojan request gets at most an HTTP answer, never the origin.
            let bogus = HTTPProbe.bogusTrojanRequest(port: origin.port, payload: HTTPProbe.get("/\(Origin.smallName)"))
            let answer = try HTTPProbe.tls(port: port, serverName: trojanBridgeName, bogus, requireClose: false, listenFor: 5)
            #expect(answer.stdout.isEmpty || answer.stdout.starts(with: Data("HTTP/1.".utf8)),
                    "a bogus Trojan request got a non-HTTP answer: \(String(decoding: answer.stdout.prefix(300), as: UTF8.self))")
            #expect(answer.stdout.range(of: origin.small) == nil, "a bogus Trojan request reached the origin")
            #expect(bridge.isRunning, "the bridge died (\(bridge.termination)):\n\(bridge.output)")
        }
    }
}
