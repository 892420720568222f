import Foundation
import Testing

extension RahaIntegration {
    /// Even at the most verbose log level, neither end writes a destination
    /// (address, port, name or path), a client address or a password (only
    /// the access keys the bridge prints for its operator carry one).
    @Suite("Privacy")
    struct Privacy {
        @Test("verbose logs of raha connect and raha bridge name no destination, no client address and no password",
              arguments: ["Shadowsocks", "Trojan (TLS, multiplexed)", "Trojan (WebSocket)"])
        func logsNameNoDestination(transport: String) throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let closedPort = try Ports.free()
            var passwords: [String] = []
            func startBridge(allowPrivate: Bool) throws -> (ManagedProcess, [String]) {
                let port = try Ports.free()
                let password = randomPassword()
                passwords.append(password)
                switch transport {
                case "Shadowsocks":
                    return try Peers.bridge([ssURI(method: "aes-256-gcm", password: password, port: port)],
                                            allowPrivate: allowPrivate, extra: ["--verbose"])
                default:
                    let listener = trojanListener(password: password, port: port,
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
            let clientPort = probe.localPort
            try probe.send([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, UInt8(closedPort >> 8), UInt8(closedPort & 0xff)])
            _ = probe.readToEnd(timeout: 5)
            // And a stranger's garbage at each bridge, from a port of its own.
            var strangerPorts: [UInt16] = []
            for port in [keys, refusingKeys].compactMap({ $0.first.flatMap(Self.port(of:)) }) {
                let stranger = try RawTCP(port: port)
                strangerPorts.append(stranger.localPort)
                try stranger.send(Array("GET / HTTP/1.1\r\nHost: bridge\r\n\r\n".utf8) + [UInt8](repeating: 0xa5, count: 300))
                _ = stranger.readToEnd(timeout: 1)
            }
            #expect(strangerPorts.count == 2, "the bridges' ports were not found in their keys \(keys) \(refusingKeys)")

            for process in [bridge, refusing, connect, refusedConnect] {
                process.stop()
                let log = process.output
                #expect(!log.contains(":\(origin.port)") && !log.contains(" \(origin.port)"), "\(process.name) logged the origin's port:\n\(log)")
                #expect(!log.contains(":\(closedPort)") && !log.contains(" \(closedPort)"), "\(process.name) logged a destination port:\n\(log)")
                #expect(!log.contains(secretName), "\(process.name) logged a destination name:\n\(log)")
                #expect(!log.contains(secretPath), "\(process.name) logged a path:\n\(log)")
                for port in [clientPort] + strangerPorts {
                    #expect(!log.contains(":\(port)") && !log.contains("port \(port)"), "\(process.name) logged a client's port \(port):\n\(log)")
                }
                for password in passwords {
                    let lines = log.split(separator: "\n").filter { $0.contains(password) }
                    #expect(lines.allSatisfy { $0.hasPrefix("ss://") || $0.hasPrefix("trojan://") },
                            "\(process.name) wrote a password outside the access keys it prints:\n\(lines.joined(separator: "\n"))")
                }
            }
            // The verbose logs did record the failures, so the test looked at real log lines.
            #expect(refusing.output.contains("exit connection failed"))
        }

        /// The port of an access key's server (the text after the last colon, before any query).
        static func port(of key: String) -> UInt16? {
            let beforeQuery = key.split(separator: "?").first.map(String.init) ?? key
            let beforeFragment = beforeQuery.split(separator: "#").first.map(String.init) ?? beforeQuery
            return beforeFragment.split(separator: ":").last.flatMap { UInt16($0.filter(\.isNumber)) }
        }
    }
}
