import Foundation
import Testing

extension RahaIntegration {
    /// UDP over Trojan (command UDP ASSOCIATE, then UDP frames both ways)
    /// against Debian's v2ray 4.34 in both directions and Raha to Raha, to
    /// the Python echo fixture, checked by the Python SOCKS5 UDP client
    /// (payloads byte for byte, reply header's source = the echo server).
    @Suite("Trojan UDP")
    struct TrojanUDP {
        /// Datagram sizes, each sent three times.
        static let sizes = [1, 512, 1400]
        static let datagrams = 9

        private func expectEchoes(proxyPort: UInt16, echoPort: UInt16, via: String, processes: [ManagedProcess],
                                  sequential: Bool = false) throws {
            let result = try Peers.socksUDPClient(proxyPort: proxyPort, echoPort: echoPort, count: Self.datagrams, sizes: Self.sizes,
                                                  sequential: sequential)
            #expect(result.status == 0, "\(via): \(result.output)\(outputs(processes))")
            #expect(result.stdoutText.hasPrefix("OK: \(Self.datagrams) datagrams echoed"), "\(via): \(result.output)")
        }

        /// One datagram at a time: v2ray 4.34's Trojan client packs the
        /// datagrams it finds queued together into one frame (its
        /// PacketWriter copies what it read into frames of up to 8192
        /// bytes), so a burst reaches the echo as one merged datagram.
        @Test("v2ray (Trojan client, SOCKS5 UDP ASSOCIATE) → raha bridge → UDP echo",
              arguments: [TrojanTransport.tls, .webSocket])
        func v2rayToRahaBridge(transport: TrojanTransport) throws {
            let running = Processes()
            defer { running.stopAll() }
            let (echo, echoPort) = try Peers.udpEcho()
            running.add(echo)
            let password = randomPassword(), path = randomWebSocketPath()
            let port = try Ports.free()
            let (bridge, _) = try Peers.trojanBridge([trojanListener(password: password, port: port, transport: transport, path: path)])
            running.add(bridge)
            let (v2ray, socksPort) = try V2Ray.trojanClient(
                serverPort: port, password: password, serverName: trojanBridgeName, allowInsecure: true,
                webSocket: transport == .webSocket ? V2Ray.WebSocket(path: path, host: trojanBridgeName) : nil, udp: true)
            running.add(v2ray)
            try expectEchoes(proxyPort: socksPort, echoPort: echoPort,
                             via: "v2ray → raha bridge (\(transport.testDescription))", processes: [bridge, v2ray], sequential: true)
        }

        @Test("raha connect → v2ray (Trojan server) → UDP echo", arguments: [TrojanTransport.tls, .webSocket])
        func rahaConnectToV2RayServer(transport: TrojanTransport) throws {
            let running = Processes()
            defer { running.stopAll() }
            let (echo, echoPort) = try Peers.udpEcho()
            running.add(echo)
            let password = randomPassword(), path = randomWebSocketPath()
            let certificate = try TestCertificate.make(for: trojanBridgeName)
            let (server, serverPort) = try V2Ray.trojanServer(password: password, certificate: certificate,
                                                              webSocketPath: transport == .webSocket ? path : nil)
            running.add(server)
            var parameters = [("security", "tls"), ("sni", trojanBridgeName), ("pin", certificate.sha256)]
            if transport == .webSocket { parameters += [("type", "ws"), ("path", path), ("host", trojanBridgeName)] }
            let (connect, proxyPort) = try Peers.connect([trojanURI(password: password, port: serverPort, parameters)])
            running.add(connect)
            try expectEchoes(proxyPort: proxyPort, echoPort: echoPort,
                             via: "raha connect → v2ray (\(transport.testDescription))", processes: [server, connect])
        }

        /// The key the bridge printed (mux=1: UDP still takes a Trojan
        /// connection of its own), and the same key without multiplexing.
        @Test("raha connect → raha bridge → UDP echo, with the bridge's printed key (mux=1) and without mux",
              arguments: [(TrojanTransport.tls, true), (.tls, false), (.webSocket, true), (.webSocket, false)])
        func rahaConnectToRahaBridge(transport: TrojanTransport, mux: Bool) throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let (echo, echoPort) = try Peers.udpEcho()
            running.add(echo)
            let port = try Ports.free()
            let (bridge, keys) = try Peers.trojanBridge([trojanListener(password: randomPassword(), port: port, transport: transport,
                                                                        path: randomWebSocketPath())])
            running.add(bridge)
            let printed = try #require(keys.first)
            #expect(printed.contains("mux=1"), "the bridge's key does not offer multiplexing: \(printed)")
            let key = mux ? printed : printed.replacingOccurrences(of: "&mux=1", with: "").replacingOccurrences(of: "mux=1&", with: "")
            #expect(mux || !key.contains("mux="), "could not take mux=1 out of \(printed)")
            let (connect, proxyPort) = try Peers.connect([key])
            running.add(connect)
            let via = "raha connect → raha bridge (\(transport.testDescription)\(mux ? ", mux=1" : ""))"
            try expectEchoes(proxyPort: proxyPort, echoPort: echoPort, via: via, processes: [bridge, connect])
            // Streams work alongside (on the mux with mux=1).
            let fetched = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(proxyPort)", origin.smallURL])
            #expect(fetched.status == 0 && fetched.body == origin.small, "\(via): curl \(fetched.status): \(fetched.stderr)\(outputs([bridge, connect]))")
        }

        /// A bridge started without --allow-private refuses Trojan UDP to
        /// loopback: the echo on 127.0.0.1 never receives a datagram, and the
        /// bridge's verbose log gives the exit policy as the reason.
        @Test("Exit policy: a bridge without --allow-private never delivers Trojan UDP to 127.0.0.1")
        func exitPolicyRefusesLoopback() throws {
            let running = Processes()
            defer { running.stopAll() }
            let (echo, echoPort) = try Peers.udpEcho(report: true)
            running.add(echo)
            let data = try Paths.temporaryDirectory("bridge-data")
            ProcessRegistry.shared.removeAtExit(data.path)
            let listener = trojanListener(password: randomPassword(), port: try Ports.free(), transport: .tls, path: "/")
            let (bridge, keys) = try Peers.bridge([listener], allowPrivate: false, extra: ["--data", data.path, "--verbose"])
            running.add(bridge)
            let (connect, proxyPort) = try Peers.connect([try #require(keys.first)])
            running.add(connect)

            let result = try Peers.socksUDPClient(proxyPort: proxyPort, echoPort: echoPort, count: 3, sizes: Self.sizes)
            #expect(result.status != 0, "datagrams came back from 127.0.0.1 through a bridge that must refuse it: \(result.output)")
            // The connectivity probe (to the loopback origin) fails through this bridge too, so the
            // proxy may refuse the association at once instead of relaying datagrams that never return.
            #expect(result.stdoutText.contains("never echoed") || result.stdoutText.contains("UDP ASSOCIATE was refused"),
                    "the client failed otherwise: \(result.output)\(outputs([bridge, connect]))")
            let logged = try bridge.waitForLine(description: "a log line giving the exit policy as the reason") { $0.contains("--allow-private") }
            #expect(logged.contains("refuse"), "unexpected log line: \(logged)")
            echo.stop()
            #expect(!echo.output.contains("echoed"), "the loopback echo received datagrams: \(echo.output)")
            #expect(bridge.isRunning && connect.isRunning, "a process died:\(outputs([bridge, connect]))")
        }
    }
}
