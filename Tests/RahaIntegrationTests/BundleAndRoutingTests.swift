import Foundation
import NIOPosix
import NIOSSL
import RahaTransport
import RahaWire
import Testing

extension RahaIntegration {
    /// `raha connect` given bundles, SIP008 documents (a file, a URL) and `--rules`.
    @Suite("Bundles, online configs and split routing")
    struct BundlesAndRouting {
        private func bridgeKey(_ running: Processes) throws -> (ManagedProcess, String) {
            let (bridge, keys) = try Peers.bridge([ssURI(method: "chacha20-ietf-poly1305", password: randomPassword(), port: try Ports.free())])
            running.add(bridge)
            return (bridge, try #require(keys.first))
        }

        /// A SIP008 document for one loopback Shadowsocks server.
        private func sip008(port: UInt16, password: String, method: String) -> String {
            """
            {"version": 1, "servers": [{"id": "a", "remarks": "loopback", "server": "127.0.0.1",
              "server_port": \(port), "password": "\(password)", "method": "\(method)"}]}
            """
        }

        private func writeTemporary(_ text: String, name: String) throws -> String {
            let directory = try Paths.temporaryDirectory("config")
            ProcessRegistry.shared.removeAtExit(directory.path)
            let file = directory.appendingPathComponent(name)
            try Data(text.utf8).write(to: file)
            return file.path
        }

        @Test("a raha: bundle made by `raha key bundle` (a dead key first, then the bridge's) works with curl")
        func bundle() throws {
            let running = Processes()
            defer { running.stopAll() }
            let (bridge, key) = try bridgeKey(running)
            let dead = ssURI(method: "aes-128-gcm", password: randomPassword(), port: try Ports.free())
            let made = try runCommand("raha key bundle", try Paths.rahaBinary(), ["key", "bundle", dead, key])
            #expect(made.status == 0, "raha key bundle: \(made.output)")
            let bundle = made.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(bundle.hasPrefix("raha:1.") && !bundle.contains("\n"), "\(bundle)")
            let shown = try runCommand("raha key show", try Paths.rahaBinary(), ["key", "show", bundle])
            #expect(shown.status == 0 && shown.stdoutText.components(separatedBy: "\n").filter { $0.hasPrefix("1. ss, 127.0.0.1:") || $0.hasPrefix("2. ss, 127.0.0.1:") }.count == 2,
                    "raha key show: \(shown.output)")
            #expect(!shown.output.contains(bridgeKeyPassword(key)), "raha key show printed a password")
            let (connect, port) = try Peers.connect([bundle])
            running.add(connect)
            #expect(connect.output.contains("through 2 access keys"), "\(connect.output)")
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(port)"], via: "a bundle", processes: [bridge, connect])
        }

        /// The password of `ss://METHOD:PASSWORD@…` as `ssURI` writes it.
        private func bridgeKeyPassword(_ key: String) -> String {
            let userinfo = key.dropFirst("ss://".count).prefix { $0 != "@" }
            return String(userinfo.drop { $0 != ":" }.dropFirst())
        }

        @Test("a SIP008 file, and a SIP008 document served over loopback HTTP, work with curl")
        func sip008FileAndURL() throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let method = "aes-256-gcm", password = randomPassword()
            let (server, serverPort) = try Peers.ssServer(method: method, password: password)
            running.add(server)
            let document = sip008(port: serverPort, password: password, method: method)
            let file = try writeTemporary(document, name: "servers.json")
            let (fromFile, filePort) = try Peers.connect([file])
            running.add(fromFile)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(filePort)"], via: "a SIP008 file", processes: [server, fromFile])

            let name = "sip008-\(randomPassword(8)).json"
            try Data(document.utf8).write(to: origin.directory.appendingPathComponent(name))
            let (fromURL, urlPort) = try Peers.connect([origin.url(name)])
            running.add(fromURL)
            try expectFetchesBoth(["-x", "http://127.0.0.1:\(urlPort)"], via: "a SIP008 URL", processes: [server, fromURL])
            #expect(!fromURL.output.contains(name), "raha connect printed the online config's path")

            let missing = try runCommand("raha connect", try Paths.rahaBinary(), ["connect", origin.url("no-such-\(name)"), "--listen", "127.0.0.1:\(try Ports.free())"])
            #expect(missing.status != 0)
            #expect(missing.stderrText.contains("online config http://127.0.0.1:\(origin.port)/…: HTTP 404"), "\(missing.output)")
            #expect(!missing.output.contains("no-such"), "the error showed the URL's path")
        }

        @Test("--rules: block → SOCKS5 0x02 and HTTP 403; direct reaches a loopback origin with no bridge running; other destinations still go through the tunnel")
        func rules() throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let rules = try writeTemporary("""
                # test rules
                block 127.0.0.2
                block blocked.example
                direct localhost
                direct 127.0.0.0/8
                """, name: "rules.txt")

            // Nothing listens behind this key: only direct destinations can work.
            let dead = ssURI(method: "aes-128-gcm", password: randomPassword(), port: try Ports.free())
            let (connect, port) = try Peers.connect([dead], extra: ["--rules", rules])
            running.add(connect)
            for target in ["127.0.0.2", "blocked.example"] {
                let socket = try RawTCP(port: port)
                try socket.send([5, 1, 0])
                #expect(try socket.read(exactly: 2) == [5, 0])
                let host = Array(target.utf8)
                try socket.send([5, 1, 0, 3, UInt8(host.count)] + host + [0, 80])
                let reply = try socket.read(exactly: 2)
                #expect(reply == [5, 0x02], "SOCKS5 CONNECT to a blocked \(target) got \(hex(reply)), expected 0502")
                _ = socket.readToEnd(timeout: 10)
            }
            for request in ["GET http://blocked.example/ HTTP/1.1\r\nHost: blocked.example\r\n\r\n",
                            "CONNECT 127.0.0.2:443 HTTP/1.1\r\nHost: 127.0.0.2:443\r\n\r\n"] {
                let socket = try RawTCP(port: port)
                try socket.send(request)
                let text = String(decoding: socket.readToEnd(timeout: 10).0, as: UTF8.self)
                #expect(text.hasPrefix("HTTP/1.1 403 "), "\(request.prefix(8))… got “\(text)”")
                #expect(text.contains("routing rule"), "the 403 does not say a rule blocked it: “\(text)”")
            }
            let localhostURL = "http://localhost:\(origin.port)/\(Origin.smallName)"
            for (proxy, url) in [(["--socks5-hostname", "127.0.0.1:\(port)"], origin.smallURL), (["-x", "http://127.0.0.1:\(port)"], origin.smallURL),
                                 (["--socks5-hostname", "127.0.0.1:\(port)"], localhostURL), (["-x", "http://127.0.0.1:\(port)"], localhostURL)] {
                let result = try Curl.fetch(proxy + [url])
                #expect(result.status == 0 && result.body == origin.small, "direct \(url) via \(proxy): \(result.stderr)\(outputs([connect]))")
            }
            #expect(!connect.output.contains("blocked.example") && !connect.output.contains("127.0.0.2"), "raha connect logged a destination")

            // The default is the tunnel: with the bridge down, an unmatched destination fails…
            let otherRules = try writeTemporary("direct localhost\n", name: "rules2.txt")
            let (viaDead, deadPort) = try Peers.connect([dead], extra: ["--rules", otherRules])
            running.add(viaDead)
            #expect(try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(deadPort)", origin.smallURL]).status != 0,
                    "127.0.0.1 is not in the rules, so it must go through the (dead) tunnel")
            // …and with a bridge it goes through.
            let (bridge, key) = try bridgeKey(running)
            let (viaBridge, bridgePort) = try Peers.connect([key], extra: ["--rules", otherRules])
            running.add(viaBridge)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(bridgePort)"], via: "the tunnel with rules", processes: [bridge, viaBridge])

            let broken = try writeTemporary("direct .ir\nsend .com\n", name: "broken.txt")
            let refused = try runCommand("raha connect", try Paths.rahaBinary(), ["connect", dead, "--rules", broken, "--listen", "127.0.0.1:\(try Ports.free())"])
            #expect(refused.status != 0 && refused.stderrText.contains("line 2: “send” is not an action"), "\(refused.output)")
        }

        @Test("Online configs over HTTPS (nginx): fetched when the certificate is trusted and names the host; refused, saying why, when it is not")
        func sip008OverHTTPS() async throws {
            let certificate = try TestCertificate.make(for: "localhost")
            let site = try Nginx.httpsWebsite(certificate: certificate)
            defer { site.stop() }
            let document = sip008(port: 8388, password: randomPassword(), method: "aes-256-gcm")
            try Data(document.utf8).write(to: site.prefix.appendingPathComponent("html/servers.json"))
            let url = try WebURL(parsing: "https://localhost:\(site.port)/servers.json")
            let trusting = WebFetcher(deadline: .seconds(10), trustRoots: .file(certificate.certificateFile))
            let body = try await trusting.get(url, group: MultiThreadedEventLoopGroup.singleton)
            #expect(body == Array(document.utf8))
            #expect(try SIP008.decode(body).count == 1)

            // The machine's CAs do not know the test certificate; nor does it name 127.0.0.1.
            await #expect { try await WebFetcher().get(url, group: MultiThreadedEventLoopGroup.singleton) } throws: { error in
                "\(error)".contains("the TLS handshake failed") && !"\(error)".contains("servers.json")
            }
            let byAddress = try WebURL(parsing: "https://127.0.0.1:\(site.port)/servers.json")
            await #expect { try await trusting.get(byAddress, group: MultiThreadedEventLoopGroup.singleton) } throws: { error in
                "\(error)".contains("the TLS handshake failed")
            }
        }
    }
}
