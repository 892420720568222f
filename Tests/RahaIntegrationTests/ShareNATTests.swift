import Foundation
import RahaWire
import Testing

extension RahaIntegration {
    /// A share node behind carrier-grade NAT, in namespaces of the test's own:
    /// public (198.18.0.1: the rendezvous, the web, invitees abroad) -
    /// router (198.18.0.2 | 10.77.0.1: nftables masquerade, nothing new
    /// forwarded inwards; it also stands in for a neighbour on the local
    /// network) - home (10.77.0.2: the share node, which can only dial out).
    @Suite("Share mode behind NAT", .enabled(if: canCreateNamespaces, "needs root to create network namespaces"))
    struct ShareBehindNAT {
        static let masquerade = """
            table ip cgnat {
              chain postrouting { type nat hook postrouting priority srcnat; oifname "n1" masquerade; }
              chain forward { type filter hook forward priority filter; policy drop; ct state established,related accept; iifname "n0" oifname "n1" accept; }
            }
            """

        /// Waits (bounded by the hang guard) until `process` has printed `text` on `times` lines.
        static func waitUntil(_ process: ManagedProcess, says text: String, times: Int) throws {
            let deadline = Date().addingTimeInterval(ManagedProcess.hangGuard)
            while process.output.components(separatedBy: text).count - 1 < times {
                guard Date() < deadline else { throw TestFailure("\(process.name) did not say “\(text)” \(times) times: \(process.output)") }
                Thread.sleep(forTimeInterval: 0.1)
            }
        }

        @Test("Invitees reach a share node behind NAT through a rendezvous (raha connect, ss-local over TCP and UDP), neighbours reach it on the local network, it links again after a restart, and the rendezvous learns no destination")
        func rendezvousAndLocalNetwork() throws {
            let net = try TestNamespaces("share", ["public", "router", "home"])
            let (outside, router, home) = (net.names[0], net.names[1], net.names[2])
            let running = Processes()
            defer {
                running.stopAll()
                net.remove()
            }
            try net.link(outside, "p0", "198.18.0.1/24", to: router, "n1", "198.18.0.2/24")
            try net.link(home, "h0", "10.77.0.2/24", to: router, "n0", "10.77.0.1/24")
            try net.ip(["-n", home, "route", "add", "default", "via", "10.77.0.1"])
            try net.ip(["netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
            let rules = try Paths.temporaryDirectory("nat").appendingPathComponent("cgnat.nft")
            ProcessRegistry.shared.removeAtExit(rules.deletingLastPathComponent().path)
            try Self.masquerade.write(to: rules, atomically: true, encoding: .utf8)
            let nft = try net.run(in: router, try Paths.tool("nft", package: "nftables"), ["-f", rules.path])
            #expect(nft.status == 0, "nft: \(nft.output)")

            let python = try Paths.tool("python3", package: "python3"), curl = try Paths.tool("curl", package: "curl")
            let raha = try Paths.rahaBinary()
            let webRoot = try Paths.temporaryDirectory("nat-web")
            ProcessRegistry.shared.removeAtExit(webRoot.path)
            let file = Data((0..<1_500_000).map { _ in UInt8.random(in: 0...255) })
            try file.write(to: webRoot.appendingPathComponent("share.bin"))
            try Data("ok\n".utf8).write(to: webRoot.appendingPathComponent("small.txt"))
            let web = try net.start("web", in: outside, python, ["-u", "-m", "http.server", "8080", "--bind", "198.18.0.1", "--directory", webRoot.path])
            running.add(web)
            try web.waitForLine(description: "“Serving HTTP”") { $0.contains("Serving HTTP") }

            // The rendezvous, abroad.
            let rendezvousData = try Paths.temporaryDirectory("rendezvous")
            ProcessRegistry.shared.removeAtExit(rendezvousData.path)
            let rendezvous = try net.start("raha bridge --rendezvous", in: outside, raha,
                                           ["bridge", "trojan://\(randomPassword())@198.18.0.1:8443?sni=rendezvous.raha.test",
                                            "--rendezvous", "30000-40000", "--no-qr", "--data", rendezvousData.path])
            running.add(rendezvous)
            let rendezvousKey = try rendezvous.waitForLine(startingWith: "trojan://")

            // The share node, at home behind NAT.
            let nodeData = try Paths.temporaryDirectory("share-home").path + "/node"
            ProcessRegistry.shared.removeAtExit((nodeData as NSString).deletingLastPathComponent)
            let node = try net.start("raha share", in: home, raha,
                                     ["share", "--data", nodeData, "--rendezvous", rendezvousKey, "--lan", "10.77.0.2",
                                      "--shadowsocks-port", "31001", "--trojan-port", "31002", "--web-socket-port", "31003", "--allow-private"])
            running.add(node)
            try node.waitForLine(startingWith: "Sharing on 198.18.0.1")
            for port in ["31001", "31002", "31003"] {
                try rendezvous.waitForLine(description: "the share node's link for port \(port)") { $0.contains("a share node is reachable") && $0.contains(port) }
            }
            let invited = try runCommand("raha share invite", raha, ["share", "invite", "Maryam", "--no-qr", "--data", nodeData])
            #expect(invited.status == 0, "\(invited.output)")
            let lines = invited.stdoutText.split(separator: "\n").map(String.init)
            let bundle = try #require(lines.first { $0.hasPrefix("raha:1.") })
            let ssKey = try ShadowsocksKey(parsing: try #require(lines.first { $0.hasPrefix("ss://") }))
            #expect(ssKey.server.hostText == "198.18.0.1", "the invite names \(ssKey.server), not the rendezvous")

            // Nobody outside can connect to the share node itself.
            let direct = try net.run(in: outside, curl, ["-s", "--connect-timeout", "2", "-m", "3", "http://10.77.0.2:31001/"])
            #expect(direct.status != 0, "a connection from outside reached the share node behind NAT")

            func fetch(in namespace: String, socksPort: UInt16, via: String) throws {
                let result = try net.run(in: namespace, curl, ["-s", "-m", "30", "--socks5-hostname", "127.0.0.1:\(socksPort)", "http://198.18.0.1:8080/share.bin"], timeout: 40)
                #expect(result.status == 0 && result.stdout == file,
                        "\(via): curl exited \(result.status) with \(result.stdout.count) of \(file.count) bytes: \(result.stderrText)\(outputs([node, rendezvous]))")
            }

            // Abroad: raha connect with the bundle, and ss-local (Outline's stand-in) with the ss:// key.
            let connect = try net.start("raha connect", in: outside, raha,
                                        ["connect", bundle, "--listen", "127.0.0.1:1080", "--probe-url", "http://198.18.0.1:8080/small.txt", "--no-memory"])
            running.add(connect)
            try connect.waitForLine(startingWith: "Local proxy")
            try fetch(in: outside, socksPort: 1080, via: "raha connect through the rendezvous")
            let (ssLocal, ssPort) = try Peers.ssLocal(method: ssKey.method.rawValue, password: ssKey.password, serverPort: 31001, udp: true,
                                                      serverHost: "198.18.0.1", namespace: outside)
            running.add(ssLocal)
            try fetch(in: outside, socksPort: ssPort, via: "ss-local through the rendezvous")

            // Shadowsocks UDP through the rendezvous too (to an echo server beside the share node).
            let echo = try net.start("udp echo", in: home, python, [Paths.fixtures.appendingPathComponent("udp_echo.py").path])
            running.add(echo)
            let echoPort = try #require(try echo.waitForLine(startingWith: "UDP echo listening on 127.0.0.1:").split(separator: ":").last)
            let udp = try net.run(in: outside, python, [Paths.fixtures.appendingPathComponent("socks5_udp_client.py").path,
                                                        "--proxy", "127.0.0.1:\(ssPort)", "--target", "127.0.0.1:\(echoPort)", "--count", "8",
                                                        "--resends", "5", "--timeout", "1"], timeout: 60)
            #expect(udp.status == 0 && udp.stdoutText.hasPrefix("OK: 8 datagrams echoed"), "UDP through the rendezvous: \(udp.output)\(outputs([node, rendezvous]))")

            // A neighbour on the local network uses the bundle's local-network key, straight to the node.
            let members = try AccessBundle(parsing: bundle).members.compactMap { try? ShadowsocksKey(parsing: $0) }
            let local = try #require(members.first { $0.server.hostText == "10.77.0.2" }, "the bundle has no key for the local network")
            let (neighbour, neighbourPort) = try Peers.ssLocal(method: local.method.rawValue, password: local.password, serverPort: local.server.port,
                                                               serverHost: "10.77.0.2", namespace: router)
            running.add(neighbour)
            try fetch(in: router, socksPort: neighbourPort, via: "a neighbour's ss-local on the local network")

            // The share node restarts (a power cut at home): it links again, and the same invite works.
            node.stop()
            let again = try net.start("raha share (again)", in: home, raha,
                                      ["share", "--data", nodeData, "--rendezvous", rendezvousKey, "--lan", "10.77.0.2", "--allow-private"])
            running.add(again)
            try Self.waitUntil(rendezvous, says: "a share node is reachable", times: 6)
            try fetch(in: outside, socksPort: ssPort, via: "ss-local through the rendezvous after the share node restarted")

            // The rendezvous carried ciphertext only: it never learned where anyone went.
            for destination in ["share.bin", "small.txt", ":8080"] {
                #expect(!rendezvous.output.contains(destination), "the rendezvous's output mentions \(destination)")
            }
            let listed = try runCommand("raha share list", raha, ["share", "list", "--data", nodeData])
            #expect(listed.stdoutText.contains("Maryam"), "\(listed.output)")
        }
    }
}
