import Foundation
import Testing

extension RahaIntegration {
    /// What a client lives through when its bridge dies or its path is cut.
    /// (How long recovery takes is measured by `scripts/bench --only faults`.)
    @Suite("Faults")
    struct Faults {
        /// Fetches the origin's small file through the proxy until it works, up to `attempts`
        /// times half a second apart: the attempts it took, or nil.
        static func fetchUntilItWorks(proxyPort: UInt16, url: String, expected: Data, attempts: Int = 20,
                                      curl: (([String]) throws -> Curl.Result) = { try Curl.fetch($0) }) rethrows -> Int? {
            for attempt in 1...attempts {
                let result = try curl(["--socks5-hostname", "127.0.0.1:\(proxyPort)", url])
                if result.status == 0 && result.body == expected { return attempt }
                Thread.sleep(forTimeInterval: 0.5)
            }
            return nil
        }

        @Test("The winning bridge killed (SIGKILL) mid-download: the download ends in an error, never in a silently short file; the next stream goes through the other transport; restarted on its port (and the other killed), it carries the next streams again")
        func bridgeKilledAndRestarted() throws {
            let origin = try Origin.shared()
            let file = try origin.randomFile("fault.bin", bytes: 32 * 1024 * 1024)
            let running = Processes()
            defer { running.stopAll() }
            let ssKey = ssURI(method: "chacha20-ietf-poly1305", password: randomPassword(), port: try Ports.free())
            var (first, _) = try Peers.bridge([ssKey])
            running.add(first)
            let (second, secondKeys) = try Peers.trojanBridge([trojanListener(password: randomPassword(), port: try Ports.free(), transport: .tls, path: "/")])
            running.add(second)
            // A stagger longer than the probe deadline: the Shadowsocks bridge wins while it is up.
            let (connect, proxyPort) = try Peers.connect([ssKey, secondKeys[0]], extra: ["--probe-timeout", "2", "--stagger", "2500"])
            running.add(connect)
            #expect(try connect.waitForLine(startingWith: "Using ").hasPrefix("Using ss "))

            // A download under way (curl reads 4 MB/s of 32 MB) when the bridge dies.
            let output = try Paths.temporaryDirectory("fault-download").appendingPathComponent("fault.bin")
            ProcessRegistry.shared.removeAtExit(output.deletingLastPathComponent().path)
            let download = try ManagedProcess("curl", try Paths.tool("curl", package: "curl"),
                ["--silent", "--show-error", "--max-time", "60", "--limit-rate", "4M", "-o", output.path,
                 "--socks5-hostname", "127.0.0.1:\(proxyPort)", origin.url("fault.bin")])
            running.add(download)
            let started = Date().addingTimeInterval(ManagedProcess.hangGuard)
            while ((try? FileManager.default.attributesOfItem(atPath: output.path)[.size] as? Int) ?? 0) < 1_000_000 && Date() < started {
                Thread.sleep(forTimeInterval: 0.05)
            }
            first.killAbruptly()
            let status = try download.waitForExit(timeout: 60)
            let got = (try? Data(contentsOf: output)) ?? Data()
            #expect(status != 0, "curl reported success for a download cut off by the bridge's death (\(got.count) of \(file.count) bytes)")
            #expect(got.count < file.count && got == file.prefix(got.count), "the cut-off download is not a prefix of the file (\(got.count) bytes)")

            // The next stream fails over to Trojan.
            let failover = try Self.fetchUntilItWorks(proxyPort: proxyPort, url: origin.smallURL, expected: origin.small)
            #expect(failover == 1, "the first stream after the bridge died did not go through the other transport (attempts: \(String(describing: failover)))\n\(connect.output)")
            _ = try connect.waitForLine(description: "a line saying Trojan is used") { $0.contains("using trojan") }

            // The bridge comes back on the same port; the other one dies.
            (first, _) = try Peers.bridge([ssKey])
            running.add(first)
            second.killAbruptly()
            let recovered = try Self.fetchUntilItWorks(proxyPort: proxyPort, url: origin.smallURL, expected: origin.small)
            #expect(recovered != nil, "no stream got through the restarted bridge\n\(connect.output)")
            let big = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(proxyPort)", origin.bigURL])
            #expect(big.status == 0 && big.body == origin.big, "a 3 MB fetch through the restarted bridge failed: \(big.stderr)")
            #expect(connect.isRunning, "raha connect exited:\n\(connect.output)")
        }

        @Test("Idle and half-open proxied connections are reaped at the bridge's --idle-timeout (one silent both ways, one whose client half-closed towards a destination that never answers), taking their descriptors with them; a connection in use is kept")
        func idleAndHalfOpenConnectionsAreReaped() throws {
            let silent = try SilentListener()
            let echo = try EchoServer()
            defer { echo.stop() }
            let running = Processes()
            defer { running.stopAll() }
            let (bridge, keys) = try Peers.bridge([ssURI(method: "chacha20-ietf-poly1305", password: randomPassword(), port: try Ports.free())],
                                                  extra: ["--idle-timeout", "2"])
            running.add(bridge)
            let (connect, proxyPort) = try Peers.connect(keys)
            running.add(connect)
            let before = try descriptorsAndRSS(bridge.pid).descriptors
            func proxied(to port: UInt16) throws -> RawTCP {
                let socket = try RawTCP(port: proxyPort)
                try socket.send([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, UInt8(port >> 8), UInt8(port & 0xff)])
                #expect(try socket.read(exactly: 12)[0..<2] == [5, 0])
                return socket
            }
            let idle = try proxied(to: silent.port)
            let halfOpen = try proxied(to: silent.port)
            try halfOpen.send(Array("a request the destination never reads".utf8))
            halfOpen.shutdownOutput()
            let busy = try proxied(to: echo.port)
            // The busy one talks every half second, for twice the idle timeout; the others say nothing.
            for round in 0..<8 {
                try busy.send([UInt8(round)])
                #expect(try busy.read(exactly: 1, timeout: 30) == [UInt8(round)], "a connection in use was closed")
                Thread.sleep(forTimeInterval: 0.5)
            }
            for (name, socket) in [("the idle connection", idle), ("the half-open connection", halfOpen)] {
                let (bytes, ending) = socket.readToEnd()
                #expect(bytes.isEmpty && ending == .eof, "\(name) ended with \(bytes.count) bytes and \(ending), not reaped")
            }
            busy.close()
            var after = try descriptorsAndRSS(bridge.pid).descriptors
            let giveUp = Date().addingTimeInterval(ManagedProcess.hangGuard)
            while after > before && Date() < giveUp {
                Thread.sleep(forTimeInterval: 0.1)
                after = try descriptorsAndRSS(bridge.pid).descriptors
            }
            #expect(after <= before, "the bridge holds \(after) descriptors after the reaping, \(before) before")
        }

        @Test("A link cut in the lab (the bridge's end of a veth set down, so packets vanish) and restored: new streams go through the transport on the other link, and back through the first once it is restored and the other cut",
              .enabled(if: canCreateNamespaces, "needs root to create network namespaces"))
        func linkCutAndRestored() throws {
            let net = try TestNamespaces("fault", ["client", "bridge"])
            let (client, server) = (net.names[0], net.names[1])
            let running = Processes()
            defer {
                running.stopAll()
                net.remove()
            }
            try net.link(client, "c1", "10.91.1.1/24", to: server, "b1", "10.91.1.2/24")
            try net.link(client, "c2", "10.91.2.1/24", to: server, "b2", "10.91.2.2/24")

            let python = try Paths.tool("python3", package: "python3"), curl = try Paths.tool("curl", package: "curl")
            let webRoot = try Paths.temporaryDirectory("fault-web")
            ProcessRegistry.shared.removeAtExit(webRoot.path)
            let small = Data("through whichever link is up\n".utf8)
            try small.write(to: webRoot.appendingPathComponent("small.txt"))
            let web = try net.start("web", in: server, python, ["-u", "-m", "http.server", "8080", "--bind", "127.0.0.1", "--directory", webRoot.path])
            running.add(web)
            try web.waitForLine(description: "“Serving HTTP”") { $0.contains("Serving HTTP") }
            let url = "http://127.0.0.1:8080/small.txt"

            // One bridge, Shadowsocks on the first link and Trojan on the second.
            let data = try Paths.temporaryDirectory("fault-bridge")
            ProcessRegistry.shared.removeAtExit(data.path)
            let bridge = try net.start("raha bridge", in: server, try Paths.rahaBinary(),
                ["bridge", ssURI(method: "chacha20-ietf-poly1305", password: randomPassword(), port: 8388, host: "10.91.1.2"),
                 trojanURI(password: randomPassword(), port: 8443, [("security", "tls"), ("sni", trojanBridgeName)], host: "10.91.2.2"),
                 "--data", data.path, "--allow-private", "--no-qr"])
            running.add(bridge)
            let ssKey = try bridge.waitForLine(startingWith: "ss://")
            let trojanKey = try bridge.waitForLine(startingWith: "trojan://")
            let connect = try net.start("raha connect", in: client, try Paths.rahaBinary(),
                ["connect", ssKey, trojanKey, "--listen", "127.0.0.1:1080", "--no-memory", "--probe-url", url,
                 "--probe-timeout", "2", "--stagger", "2500"])
            running.add(connect)
            #expect(try connect.waitForLine(startingWith: "Using ").hasPrefix("Using ss "))
            let fetch: ([String]) throws -> Curl.Result = { arguments in
                let result = try net.run(in: client, curl, ["--silent", "--show-error", "--max-time", "10"] + arguments, timeout: 20)
                return Curl.Result(status: result.status, body: result.stdout, stderr: result.stderrText)
            }
            #expect(try Self.fetchUntilItWorks(proxyPort: 1080, url: url, expected: small, attempts: 1, curl: fetch) == 1)

            try net.ip(["-n", server, "link", "set", "b1", "down"])
            let failover = try Self.fetchUntilItWorks(proxyPort: 1080, url: url, expected: small, attempts: 3, curl: fetch)
            #expect(failover == 1, "the first stream after the cut did not go through the other link (attempts: \(String(describing: failover)))\n\(connect.output)")

            try net.ip(["-n", server, "link", "set", "b1", "up"])
            try net.ip(["-n", server, "link", "set", "b2", "down"])
            let back = try Self.fetchUntilItWorks(proxyPort: 1080, url: url, expected: small, attempts: 6, curl: fetch)
            #expect(back != nil, "no stream got through the restored link\n\(connect.output)")
            _ = try connect.waitForLine(description: "a line saying Shadowsocks is used again") {
                $0.contains("using ss ") && $0.contains("10.91.1.2")
            }
            #expect(bridge.isRunning && connect.isRunning, "a process exited:\n\(bridge.output)\n\(connect.output)")
        }
    }
}
