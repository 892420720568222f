import Foundation
import Testing

extension RahaIntegration {
    @Suite("Exit policy")
    struct ExitPolicy {
        /// A bridge started without --allow-private never delivers the
        /// loopback origin's content, whether asked through curl or raw SOCKS5.
        @Test("A bridge without --allow-private refuses the loopback origin")
        func refusesLoopback() throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let (bridge, keys) = try Peers.bridge([ssURI(method: "chacha20-ietf-poly1305", password: randomPassword(), port: try Ports.free())],
                                                  allowPrivate: false, extra: ["--verbose"])
            running.add(bridge)
            let (connect, proxyPort) = try Peers.connect([try #require(keys.first)])
            running.add(connect)

            // By address, and by a name that resolves to loopback at the bridge.
            let byName = "http://localhost:\(origin.port)/\(Origin.smallName)"
            for (proxy, url) in [(["--socks5-hostname", "127.0.0.1:\(proxyPort)"], origin.smallURL),
                                 (["-x", "http://127.0.0.1:\(proxyPort)"], origin.smallURL),
                                 (["--socks5-hostname", "127.0.0.1:\(proxyPort)"], byName),
                                 (["-p", "-x", "http://127.0.0.1:\(proxyPort)"], byName)] {
                // --fail: an error page from the local proxy (its probe through this bridge fails too) is not content.
                let result = try Curl.fetch(["--fail"] + proxy + [url])
                #expect(result.status != 0, "curl \(proxy) \(url) fetched the loopback origin through a bridge that must refuse it")
                #expect(!result.body.contains(origin.small), "the origin's content came through: \(String(decoding: result.body, as: UTF8.self))")
            }

            // Raw SOCKS5 CONNECT to the origin, then a request: either an error reply,
            // or success (Shadowsocks cannot tell) followed by a close with no content.
            let socket = try RawTCP(port: proxyPort)
            try socket.send([5, 1, 0])
            #expect(try socket.read(exactly: 2) == [5, 0])
            try socket.send([5, 1, 0, 1, 127, 0, 0, 1, UInt8(origin.port >> 8), UInt8(origin.port & 0xff)])
            let reply = try socket.read(exactly: 10)
            #expect(reply[0] == 5)
            if reply[1] == 0 {
                try socket.send("GET /\(Origin.smallName) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                let (bytes, ending) = socket.readToEnd()
                #expect(bytes.isEmpty, "the refused stream carried \(bytes.count) bytes: \(String(decoding: bytes, as: UTF8.self))")
                #expect(ending == .eof || ending == .reset, "the refused stream did not close: \(ending)")
            }
            socket.close()

            // The refusal is the exit policy's (the verbose log says so), and nothing died of it.
            let logged = try bridge.waitForLine(description: "a log line giving the exit policy as the reason") { $0.contains("--allow-private") }
            #expect(logged.contains("refuse"), "unexpected log line: \(logged)")
            #expect(bridge.isRunning, "the bridge exited: \(bridge.output)")
            #expect(connect.isRunning, "raha connect exited: \(connect.output)")
        }
    }
}
