import Foundation
import Testing

extension RahaIntegration {
    /// Raha against Debian's shadowsocks-libev 3.3.5 in both directions,
    /// and against itself, for every method each side speaks.
    @Suite("Interop")
    struct Interop {
        @Test("ss-local (shadowsocks-libev) → raha bridge: curl --socks5-hostname fetches both files byte for byte",
              arguments: legacyMethods)
        func ssLocalToRahaBridge(method: String) throws {
            let running = Processes()
            defer { running.stopAll() }
            let password = randomPassword()
            let bridgePort = try Ports.free()
            let (bridge, keys) = try Peers.bridge([ssURI(method: method, password: password, port: bridgePort)])
            running.add(bridge)
            #expect(keys.count == 1)
            let (local, localPort) = try Peers.ssLocal(method: method, password: password, serverPort: bridgePort)
            running.add(local)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(localPort)"],
                                  via: "ss-local \(method) → raha bridge", processes: [bridge, local])
        }

        @Test("raha connect → ss-server (shadowsocks-libev): SOCKS5, HTTP forwarding with keep-alive, HTTP CONNECT",
              arguments: legacyMethods)
        func rahaConnectToSSServer(method: String) throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let password = randomPassword()
            let (server, serverPort) = try Peers.ssServer(method: method, password: password)
            running.add(server)
            let (connect, proxyPort) = try Peers.connect([ssURI(method: method, password: password, port: serverPort)])
            running.add(connect)
            let processes = [server, connect]
            let via = "raha connect → ss-server \(method)"

            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(proxyPort)"], via: "\(via) (SOCKS5)", processes: processes)

            // Absolute-URI forwarding: two URLs in one curl call share one proxy connection.
            let forwarded = try Curl.fetch(["-v", "-x", "http://127.0.0.1:\(proxyPort)", origin.smallURL, origin.bigURL])
            #expect(forwarded.status == 0, "\(via) (HTTP forwarding): curl exited \(forwarded.status): \(forwarded.stderr)\(outputs(processes))")
            let both = origin.small + origin.big
            #expect(forwarded.body == both,
                    "\(via) (HTTP forwarding): got \(forwarded.body.count) bytes\(firstDifference(forwarded.body, both)), expected \(both.count)")
            #expect(forwarded.stderr.contains("Re-using existing connection"),
                    "\(via): curl opened a new proxy connection for the second URL instead of re-using the kept-alive one:\n\(forwarded.stderr)")
            #expect(forwarded.stderr.components(separatedBy: "Connected to 127.0.0.1").count - 1 == 1,
                    "\(via): curl connected to the proxy more than once:\n\(forwarded.stderr)")

            // HTTP CONNECT tunnel.
            try expectFetchesBoth(["-p", "-x", "http://127.0.0.1:\(proxyPort)"], via: "\(via) (HTTP CONNECT)", processes: processes)
        }

        @Test("raha connect → raha bridge: curl fetches both files byte for byte",
              arguments: [("2022-blake3-aes-128-gcm", 16), ("2022-blake3-aes-256-gcm", 32),
                          ("2022-blake3-chacha20-poly1305", 32), ("chacha20-ietf-poly1305", 0)])
        func rahaConnectToRahaBridge(method: String, pskBytes: Int) throws {
            let running = Processes()
            defer { running.stopAll() }
            // 2022 methods take a base64 PSK of the method's key size; legacy ones a password.
            // One PSK goes in raw (with its +, / and =), the others percent-encoded: the bridge takes both.
            let secret = pskBytes > 0 ? randomPSK(bytes: pskBytes) : randomPassword()
            let port = try Ports.free()
            var listener = ssURI(method: method, password: secret, port: port)
            if method == "2022-blake3-aes-256-gcm" { listener = "ss://\(method):\(secret)@127.0.0.1:\(port)" }
            let (bridge, keys) = try Peers.bridge([listener])
            running.add(bridge)
            let key = try #require(keys.first)
            #expect(key.contains("127.0.0.1:\(port)"), "the printed key names another address: \(key)")
            let (connect, proxyPort) = try Peers.connect([key])
            running.add(connect)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(proxyPort)"],
                                  via: "raha connect → raha bridge \(method) (SOCKS5)", processes: [bridge, connect])
            try expectFetchesBoth(["-p", "-x", "http://127.0.0.1:\(proxyPort)"],
                                  via: "raha connect → raha bridge \(method) (HTTP CONNECT)", processes: [bridge, connect])
        }

        @Test("Half-close: a SOCKS5 client that sends its request and shuts down its side still gets the whole response (raha connect → raha bridge)",
              arguments: ["chacha20-ietf-poly1305", "2022-blake3-aes-128-gcm"])
        func halfClose(method: String) throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let secret = method.hasPrefix("2022") ? randomPSK(bytes: 16) : randomPassword()
            let (bridge, keys) = try Peers.bridge([ssURI(method: method, password: secret, port: try Ports.free())])
            running.add(bridge)
            let (connect, proxyPort) = try Peers.connect([try #require(keys.first)])
            running.add(connect)
            let port = [UInt8(origin.port >> 8), UInt8(origin.port & 0xff)]
            for (name, expected) in [(Origin.smallName, origin.small), (Origin.bigName, origin.big)] {
                for allAtOnce in [false, true] {
                    let socket = try RawTCP(port: proxyPort)
                    defer { socket.close() }
                    let greeting: [UInt8] = [5, 1, 0], request: [UInt8] = [5, 1, 0, 1, 127, 0, 0, 1] + port
                    let get = Array("GET /\(name) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
                    if allAtOnce {
                        // Greeting, request and payload in one write, then the half-close:
                        // the stream must still be opened and the payload delivered.
                        try socket.send(greeting + request + get)
                    } else {
                        try socket.send(greeting)
                        #expect(try socket.read(exactly: 2) == [5, 0])
                        try socket.send(request)
                        #expect(try socket.read(exactly: 10).prefix(2) == [5, 0])
                        try socket.send(get)
                    }
                    socket.shutdownOutput()
                    var (bytes, ending) = socket.readToEnd()
                    if allAtOnce {
                        #expect(bytes.prefix(4) == [5, 0, 5, 0], "replies: \(hex(Array(bytes.prefix(12))))")
                        bytes.removeFirst(min(12, bytes.count))
                    }
                    #expect(ending == .eof, "\(name): the stream ended with \(ending)")
                    let response = Data(bytes)
                    let body = response.range(of: Data("\r\n\r\n".utf8)).map { response[$0.upperBound...] } ?? Data()
                    #expect(Data(body) == expected,
                            "\(method) \(name)\(allAtOnce ? " (all at once)" : ""): got \(body.count) body bytes of \(expected.count) after half-closing\(outputs([bridge, connect]))")
                }
            }
        }

        @Test("Failover: raha connect DEADKEY GOODKEY still fetches when the first bridge is down")
        func failover() throws {
            let running = Processes()
            defer { running.stopAll() }
            let deadPort = try Ports.free() // nothing listens here
            let dead = ssURI(method: "chacha20-ietf-poly1305", password: randomPassword(), port: deadPort)
            let (bridge, keys) = try Peers.bridge([ssURI(method: "aes-256-gcm", password: randomPassword(), port: try Ports.free())])
            running.add(bridge)
            let good = try #require(keys.first)
            let (connect, proxyPort) = try Peers.connect([dead, good])
            running.add(connect)
            #expect(connect.output.contains("through 2 access keys"))
            #expect(!Ports.isAccepting(deadPort), "something listens on the dead key's port \(deadPort)")
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(proxyPort)"], via: "failover (SOCKS5)", processes: [bridge, connect])
            try expectFetchesBoth(["-x", "http://127.0.0.1:\(proxyPort)"], via: "failover (HTTP forwarding)", processes: [bridge, connect])
        }
    }
}
