import Foundation
import Testing

extension RahaIntegration {
    /// UDP through SOCKS5 UDP ASSOCIATE and Shadowsocks UDP relays, to the
    /// Python echo fixture, checked by the Python SOCKS5 UDP client fixture
    /// (payloads byte for byte, reply header's source = the echo server).
    @Suite("UDP")
    struct UDP {
        static let datagrams = 12

        private func expectEchoes(proxyPort: UInt16, echoPort: UInt16, via: String, processes: [ManagedProcess]) throws {
            let result = try Peers.socksUDPClient(proxyPort: proxyPort, echoPort: echoPort, count: Self.datagrams)
            #expect(result.status == 0, "\(via): \(result.output)\(outputs(processes))")
            #expect(result.stdoutText.hasPrefix("OK: \(Self.datagrams) datagrams echoed"), "\(via): \(result.output)")
        }

        @Test("ss-local -u → raha bridge → UDP echo")
        func ssLocalToRahaBridge() throws {
            let running = Processes()
            defer { running.stopAll() }
            let (echo, echoPort) = try Peers.udpEcho()
            running.add(echo)
            let method = "chacha20-ietf-poly1305", password = randomPassword()
            let bridgePort = try Ports.free()
            let (bridge, _) = try Peers.bridge([ssURI(method: method, password: password, port: bridgePort)])
            running.add(bridge)
            let (local, localPort) = try Peers.ssLocal(method: method, password: password, serverPort: bridgePort, udp: true)
            running.add(local)
            try expectEchoes(proxyPort: localPort, echoPort: echoPort, via: "ss-local → raha bridge", processes: [bridge, local])
        }

        @Test("raha connect → ss-server -u → UDP echo")
        func rahaConnectToSSServer() throws {
            let running = Processes()
            defer { running.stopAll() }
            let (echo, echoPort) = try Peers.udpEcho()
            running.add(echo)
            let method = "aes-256-gcm", password = randomPassword()
            let (server, serverPort) = try Peers.ssServer(method: method, password: password, udp: true)
            running.add(server)
            let (connect, proxyPort) = try Peers.connect([ssURI(method: method, password: password, port: serverPort)])
            running.add(connect)
            try expectEchoes(proxyPort: proxyPort, echoPort: echoPort, via: "raha connect → ss-server", processes: [server, connect])
        }

        @Test("raha connect → raha bridge (2022-blake3-aes-256-gcm) → UDP echo")
        func rahaConnectToRahaBridge2022() throws {
            let running = Processes()
            defer { running.stopAll() }
            let (echo, echoPort) = try Peers.udpEcho()
            running.add(echo)
            let (bridge, keys) = try Peers.bridge([ssURI(method: "2022-blake3-aes-256-gcm", password: randomPSK(bytes: 32), port: try Ports.free())])
            running.add(bridge)
            let (connect, proxyPort) = try Peers.connect([try #require(keys.first)])
            running.add(connect)
            try expectEchoes(proxyPort: proxyPort, echoPort: echoPort, via: "raha connect → raha bridge 2022", processes: [bridge, connect])
        }
    }
}
