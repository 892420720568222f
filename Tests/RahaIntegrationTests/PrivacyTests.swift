import Foundation
import Testing

extension RahaIntegration {
    /// Even at the most verbose log level, neither end writes a destination
    /// (address, port, name or path) or a client address.
    @Suite("Privacy")
    struct Privacy {
        @Test("verbose logs of raha connect and raha bridge name no destination and no client address",
              arguments: ["Shadowsocks", "Trojan (TLS, multiplexed)", "Trojan (WebSocket)"])
        func logsNameNoDestination(transport: String) throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let closedPort = try Ports.free()
            func startBridge(allowPrivate: Bool) throws -> (ManagedProcess, [String]) {
                let port = try Ports.free()
                switch transport {
                case "Shadowsocks":
                    return try Peers.bridge([ssURI(method: "aes-256-gcm", password: randomPassword(), port: port)],
                                            allowPrivate: allowPrivate, extra: ["--verbose"])
                default:
                    let listener = trojanListener(password: randomPassword(), port: port,
                                                  transport: transport.contains("WebSocket") ? .webSocket : .tls, path: randomWebSocketPath())
                    return try Peers.trojanBridge([listener], allowPrivate: allowPrivate, extra: ["--verbose"])
                }
            }
            let (bridge, keys) = try startBridge(allowPrivate: true)
            running.add(bridge)
            let (refusing, refusingKeys) = try startBridge(allowPrivate: false)
            running.add(refusing)
            let (connect, proxyPort) = try Peers.connect([try #require(keys.first)], extra: ["--verbose"])
            running.add(connect)
            let (refusedConnect, refusedProxyPort) = try Peers.connect([try #require(refusingKeys.first)], extra: ["--verbose"])
            running.add(refusedConnect)

            let secretName = "localhost"
            let secretPath = "private-path-\(UUID().uuidString)"
            // A fetch that works, one to a closed port, one the exit policy refuses, one by name.
            _ = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(proxyPort)", origin.smallURL])
            _ = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(proxyPort)", "http://127.0.0.1:\(closedPort)/\(secretPath)"])
            _ = try Curl.fetch(["-x", "http://127.0.0.1:\(proxyPort)", "http://\(secretName):\(origin.port)/\(secretPath)"])
            _ = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(refusedProxyPort)", "http://\(secretName):\(origin.port)/\(secretPath)"])
            // A probe from a raw client: its own address must not be logged either.
            let probe = try RawTCP(port: proxyPort)
            try probe.send([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, UInt8(closedPort >> 8), UInt8(closedPort & 0xff)])
            _ = probe.readToEnd(timeout: 5)

            for process in [bridge, refusing, connect, refusedConnect] {
                process.stop()
                let log = process.output
                #expect(!log.contains(":\(origin.port)") && !log.contains(" \(origin.port)"), "\(process.name) logged the origin's port:\n\(log)")
                #expect(!log.contains(":\(closedPort)") && !log.contains(" \(closedPort)"), "\(process.name) logged a destination port:\n\(log)")
                #expect(!log.contains(secretName), "\(process.name) logged a destination name:\n\(log)")
                #expect(!log.contains(secretPath), "\(process.name) logged a path:\n\(log)")
            }
            // The verbose logs did record the failures, so the test looked at real log lines.
            #expect(refusing.output.contains("exit connection failed"))
        }
    }
}
