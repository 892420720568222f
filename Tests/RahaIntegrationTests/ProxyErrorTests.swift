import Foundation
import Testing

extension RahaIntegration {
    /// The local proxy's answers to requests it will not serve, byte for
    /// byte, and that none of them hurts the proxy.
    @Suite("Local proxy errors")
    struct ProxyErrors {
        /// Greets with no authentication and expects [5, 0].
        private func greet(_ socket: RawTCP) throws {
            try socket.send([5, 1, 0])
            #expect(try socket.read(exactly: 2) == [5, 0])
        }

        /// Reads the rest of a connection and expects the proxy to close it with nothing more.
        private func expectClosed(_ socket: RawTCP, after what: String) {
            let (bytes, ending) = socket.readToEnd(timeout: 10)
            #expect(bytes.isEmpty, "after \(what) the proxy sent more: \(hex(bytes))")
            #expect(ending == .eof, "after \(what) the connection ended with \(ending), not EOF")
        }

        @Test("SOCKS5 BIND → 0x07, address type 0x08 → 0x08, no acceptable method → [5, 0xFF], non-HTTP garbage → 400; the proxy survives")
        func errorReplies() throws {
            let running = Processes()
            defer { running.stopAll() }
            let (bridge, keys) = try Peers.bridge([ssURI(method: "aes-128-gcm", password: randomPassword(), port: try Ports.free())])
            running.add(bridge)
            let (connect, port) = try Peers.connect([try #require(keys.first)])
            running.add(connect)

            do { // BIND is not offered.
                let socket = try RawTCP(port: port)
                try greet(socket)
                try socket.send([5, 2, 0, 1, 127, 0, 0, 1, 0x1f, 0x90])
                let reply = try socket.read(exactly: 3)
                #expect(reply == [5, 0x07, 0], "BIND got reply \(hex(reply)), expected 050700 (command not supported)")
                _ = socket.readToEnd(timeout: 10)
            }
            do { // Address type 0x08 does not exist.
                let socket = try RawTCP(port: port)
                try greet(socket)
                try socket.send([5, 1, 0, 8, 1, 2, 3, 4, 0, 80])
                let reply = try socket.read(exactly: 3)
                #expect(reply == [5, 0x08, 0], "address type 8 got reply \(hex(reply)), expected 050800 (address type not supported)")
                _ = socket.readToEnd(timeout: 10)
            }
            for methods: [UInt8] in [[0x02], [0x80, 0x01]] { // Only "no authentication" is acceptable here.
                let socket = try RawTCP(port: port)
                try socket.send([5, UInt8(methods.count)] + methods)
                let reply = try socket.read(exactly: 2)
                #expect(reply == [5, 0xFF], "greeting offering \(hex(methods)) got \(hex(reply)), expected 05ff")
                expectClosed(socket, after: "refusing the methods \(hex(methods))")
            }
            let garbage: [[UInt8]] = [
                Array("this is not HTTP at all\r\n\r\n".utf8),
                [0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x0d, 0x0a, 0x0d, 0x0a],
            ]
            for bytes in garbage {
                let socket = try RawTCP(port: port)
                try socket.send(bytes)
                let (answer, ending) = socket.readToEnd(timeout: 10)
                let text = String(decoding: answer, as: UTF8.self)
                #expect(text.hasPrefix("HTTP/1.1 400 "), "garbage \(hex(bytes)) got “\(text)”")
                #expect(ending == .eof, "after the 400 the connection ended with \(ending)")
            }

            // None of this hurt the proxy.
            #expect(connect.isRunning, "raha connect exited: \(connect.output)")
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(port)"], via: "after the errors (SOCKS5)", processes: [bridge, connect])
            try expectFetchesBoth(["-x", "http://127.0.0.1:\(port)"], via: "after the errors (HTTP)", processes: [bridge, connect])
        }

        @Test("--user/--password: wrong SOCKS5 credentials → status 0x01, none on HTTP → 407, right ones work with curl")
        func credentials() throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let (bridge, keys) = try Peers.bridge([ssURI(method: "chacha20-ietf-poly1305", password: randomPassword(), port: try Ports.free())])
            running.add(bridge)
            let user = "alice", password = "s3cret-\(randomPassword(8))"
            let (connect, port) = try Peers.connect([try #require(keys.first)], extra: ["--user", user, "--password", password])
            running.add(connect)

            do { // No authentication offered, but it is required.
                let socket = try RawTCP(port: port)
                try socket.send([5, 1, 0])
                #expect(try socket.read(exactly: 2) == [5, 0xFF])
                expectClosed(socket, after: "refusing a client without credentials")
            }
            for (name, secret) in [(user, "wrong"), ("mallory", password), (user, password + "x")] {
                let socket = try RawTCP(port: port)
                try socket.send([5, 1, 2])
                #expect(try socket.read(exactly: 2) == [5, 2])
                try socket.send([1, UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(secret.utf8.count)] + Array(secret.utf8))
                let status = try socket.read(exactly: 2)
                #expect(status == [1, 0x01], "wrong credentials \(name):\(secret) got status \(hex(status)), expected 0101")
                expectClosed(socket, after: "refusing wrong credentials")
            }
            do { // Right credentials, raw: status 0, then a CONNECT that works.
                let socket = try RawTCP(port: port)
                try socket.send([5, 1, 2])
                #expect(try socket.read(exactly: 2) == [5, 2])
                try socket.send([1, UInt8(user.utf8.count)] + Array(user.utf8) + [UInt8(password.utf8.count)] + Array(password.utf8))
                #expect(try socket.read(exactly: 2) == [1, 0])
                socket.close()
            }

            // HTTP without credentials, and with wrong ones: 407 with a Basic challenge.
            let basicWrong = Data("\(user):nope".utf8).base64EncodedString()
            for extraHeader in ["", "Proxy-Authorization: Basic \(basicWrong)\r\n"] {
                for request in ["GET \(origin.smallURL) HTTP/1.1\r\nHost: 127.0.0.1:\(origin.port)\r\n\(extraHeader)\r\n",
                                "CONNECT 127.0.0.1:\(origin.port) HTTP/1.1\r\nHost: 127.0.0.1:\(origin.port)\r\n\(extraHeader)\r\n"] {
                    let socket = try RawTCP(port: port)
                    try socket.send(request)
                    let (answer, _) = socket.readToEnd(timeout: 10)
                    let text = String(decoding: answer, as: UTF8.self)
                    #expect(text.hasPrefix("HTTP/1.1 407 "), "\(request.prefix(8))… \(extraHeader.isEmpty ? "without" : "with wrong") credentials got “\(text)”")
                    #expect(text.lowercased().contains("proxy-authenticate: basic"), "the 407 has no Basic challenge: “\(text)”")
                    #expect(!text.contains(String(decoding: origin.small, as: UTF8.self)))
                }
            }
            let curlWithout = try Curl.fetch(["-x", "http://127.0.0.1:\(port)", "-w", "%{http_code}", "-o", "/dev/null", origin.smallURL])
            #expect(String(decoding: curlWithout.body, as: UTF8.self) == "407", "curl without credentials: \(curlWithout.stderr)")
            let socksWrong = try Curl.fetch(["--socks5-hostname", "\(user):wrong@127.0.0.1:\(port)", origin.smallURL])
            #expect(socksWrong.status != 0 && socksWrong.body.isEmpty, "curl with wrong SOCKS5 credentials fetched: \(socksWrong.status)")

            // The right credentials, through curl, both ways.
            try expectFetchesBoth(["--socks5-hostname", "\(user):\(password)@127.0.0.1:\(port)"], via: "SOCKS5 with credentials", processes: [bridge, connect])
            try expectFetchesBoth(["-x", "http://\(user):\(password)@127.0.0.1:\(port)"], via: "HTTP with credentials", processes: [bridge, connect])
            try expectFetchesBoth(["-p", "-x", "http://\(user):\(password)@127.0.0.1:\(port)"], via: "HTTP CONNECT with credentials", processes: [bridge, connect])
            #expect(connect.isRunning)
        }
    }
}
