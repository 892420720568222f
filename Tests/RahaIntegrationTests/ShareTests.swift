import Foundation
import RahaWire
import Testing

extension RahaIntegration {
    /// `raha share`: a circle of invitees, each with their own keys, reached
    /// with `raha connect`, Debian's ss-local (standing in for the Outline
    /// app) and v2ray (standing in for v2rayNG); usage, revocation and limits.
    @Suite("Share mode")
    struct Share {
        /// ss-local (the Outline app's stand-in) with an invite's ss:// key; returns its SOCKS5 port.
        private func ssLocal(_ invite: ShareNode.Invite, _ running: Processes) throws -> UInt16 {
            let key = invite.shadowsocks
            let (process, port) = try Peers.ssLocal(method: key.method.rawValue, password: key.password, serverPort: key.server.port)
            running.add(process)
            return port
        }

        @Test("An invite works in raha connect (its bundle), in ss-local (its ss:// key) and in v2ray (its trojan:// key, and over WebSocket); the node counts usage and records no destination")
        func everyPartOfAnInviteWorks() throws {
            let running = Processes()
            defer { running.stopAll() }
            // Verbose: even its most detailed log names no destination.
            let node = try ShareNode(extra: ["--verbose"])
            defer { node.stop() }
            let origin = try Origin.shared()
            let invite = try node.invite("Maryam")
            #expect(invite.trojanForApps.allowInsecure && invite.trojanForApps.pinnedCertificateSHA256 == nil,
                    "the phone apps' Trojan key must skip the check of the self-signed certificate (they know no pin)")

            let (connect, port) = try Peers.connect([invite.bundle])
            running.add(connect)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(port)"], via: "raha connect with the invite's bundle", processes: [connect, node.process!])

            let ssPort = try ssLocal(invite, running)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(ssPort)"], via: "ss-local with the invite's ss:// key", processes: [node.process!])

            let apps = invite.trojanForApps
            let (v2ray, v2rayPort) = try V2Ray.trojanClient(serverPort: apps.server.port, password: apps.password, serverName: "127.0.0.1", allowInsecure: true)
            running.add(v2ray)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(v2rayPort)"], via: "v2ray with the invite's trojan:// key", processes: [v2ray, node.process!])

            // Trojan over WebSocket (for a CDN in front): the bundle's key in raha connect, and v2ray.
            let webSocket = try TrojanKey(parsing: try #require(try AccessBundle(parsing: invite.bundle).members.first { $0.contains("type=ws") }))
            guard case .webSocket(let path, _) = webSocket.transport else { throw TestFailure("not a WebSocket key") }
            let (wsConnect, wsPort) = try Peers.connect([webSocket.uri])
            running.add(wsConnect)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(wsPort)"], via: "raha connect with the bundle's WebSocket key", processes: [wsConnect, node.process!])
            let (wsV2ray, wsV2rayPort) = try V2Ray.trojanClient(serverPort: webSocket.server.port, password: webSocket.password, serverName: "127.0.0.1",
                                                                allowInsecure: true, webSocket: .init(path: path))
            running.add(wsV2ray)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(wsV2rayPort)"], via: "v2ray over WebSocket", processes: [wsV2ray, node.process!])

            let fetched = Int64(5 * (origin.big.count + origin.small.count))
            let maryam = try node.listed("Maryam")
            #expect(maryam.active && !maryam.overQuota)
            #expect(maryam.usage.down >= fetched, "the node counted \(maryam.usage.down) bytes down, but \(fetched) were fetched")
            #expect(maryam.usage.up > 0 && maryam.usage.lastSeen != nil)

            // Where Maryam went is nowhere: not in the circle file, the listing or the node's output.
            let circleFile = try String(contentsOfFile: node.data + "/circle.json", encoding: .utf8)
            let listing = try node.expectSuccess(["list"])
            for (place, text) in [("circle.json", circleFile), ("raha share list", listing), ("the node's output", node.process!.output)] {
                for destination in [":\(origin.port)", Origin.bigName, Origin.smallName] {
                    #expect(!text.contains(destination), "\(place) mentions \(destination)")
                }
            }
            #expect(circleFile.contains("\"down\""), "circle.json holds no usage")
        }

        @Test("UDP: ss-local -u (as the Outline app) and raha connect (Trojan's UDP) with invites get their datagrams echoed; a revoked invitee's datagrams are dropped")
        func udpThroughTheShareNode() throws {
            let running = Processes()
            defer { running.stopAll() }
            let node = try ShareNode()
            defer { node.stop() }
            let (echo, echoPort) = try Peers.udpEcho()
            running.add(echo)
            let maryam = try node.invite("Maryam"), reza = try node.invite("Reza")
            let key = maryam.shadowsocks
            let (ssLocal, ssPort) = try Peers.ssLocal(method: key.method.rawValue, password: key.password, serverPort: key.server.port, udp: true)
            running.add(ssLocal)
            let (connect, connectPort) = try Peers.connect([reza.bundle])
            running.add(connect)
            for (port, via) in [(ssPort, "ss-local -u with Maryam's key"), (connectPort, "raha connect with Reza's bundle")] {
                let result = try Peers.socksUDPClient(proxyPort: port, echoPort: echoPort, count: 8)
                #expect(result.status == 0 && result.stdoutText.hasPrefix("OK: 8 datagrams echoed"), "\(via): \(result.output)\(outputs([node.process!]))")
            }
            #expect(try node.listed("Maryam").usage.up > 0, "Maryam's datagrams were not counted")
            try node.expectSuccess(["revoke", "Maryam"])
            let after = try Peers.socksUDPClient(proxyPort: ssPort, echoPort: echoPort, count: 2)
            #expect(after.status != 0, "a revoked invitee's datagrams were still echoed: \(after.output)")
        }

        @Test("DNS tunnel: an invite's dns:// key reaches the share node through Debian's unbound, counted against the invitee; a key naming nobody, and a revoked invitee's, get nothing")
        func dnsTunnelThroughTheShareNode() throws {
            let running = Processes()
            defer { running.stopAll() }
            let zone = "t.share.test", dnsPort = try Ports.free()
            let node = try ShareNode(extra: ["--dns", "\(zone)@127.0.0.1:\(dnsPort)"])
            defer { node.stop() }
            try node.process!.waitForLine(startingWith: "and the DNS tunnel for \(zone)")
            let unbound = try Unbound(stubZones: [.init(zone: zone, server: "127.0.0.1@\(dnsPort)")], qnameMinimisation: true)
            defer { unbound.stop() }
            let invite = try node.invite("Parisa")
            let member = try #require(try AccessBundle(parsing: invite.bundle).members.first { $0.hasPrefix("dns://") }, "the bundle has no dns:// key")
            var key = try DNSTunnelKey(parsing: member)
            #expect(key.clientID != nil, "the invite's dns:// key names nobody")
            key.resolver = .udp(Endpoint(host: .ipv4([127, 0, 0, 1]), port: unbound.port))

            let (connect, port) = try Peers.connect([key.text])
            running.add(connect)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(port)"], via: "raha connect with the invite's dns:// key", processes: [connect, node.process!])
            #expect(try node.listed("Parisa").usage.down >= Int64(try Origin.shared().big.count), "the tunnel's traffic was not counted against Parisa")

            // The node's key without an invitee's ID gets no tunnel.
            var nobody = key
            nobody.clientID = nil
            let (stranger, _) = try Peers.connect([nobody.text], extra: ["--probe-timeout", "5"])
            running.add(stranger)
            _ = try stranger.waitForLine(startingWith: "No transport got through: ")

            try node.expectSuccess(["revoke", "Parisa"])
            let cut = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(port)", try Origin.shared().smallURL], maxTime: 15)
            #expect(cut.status != 0, "the revoked invitee's DNS tunnel still carried a request")
        }

        @Test("Relay chain: raha bridge --via sends every stream and datagram on through Debian's ss-server (the bridge abroad), and nothing gets out once that is gone")
        func relayChain() throws {
            let running = Processes()
            defer { running.stopAll() }
            let method = "chacha20-ietf-poly1305", password = randomPassword()
            let (abroad, abroadPort) = try Peers.ssServer(method: method, password: password, udp: true)
            running.add(abroad)
            let (echo, echoPort) = try Peers.udpEcho()
            running.add(echo)
            let (relay, keys) = try Peers.bridge([ssURI(method: "aes-256-gcm", password: randomPassword(), port: try Ports.free())],
                                                 extra: ["--via", ssURI(method: method, password: password, port: abroadPort)])
            running.add(relay)
            try relay.waitForLine(startingWith: "Relay chain: every stream goes on through ss")
            let (connect, port) = try Peers.connect([try #require(keys.first)])
            running.add(connect)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(port)"], via: "raha connect → raha bridge --via → ss-server", processes: [relay, abroad])
            let udp = try Peers.socksUDPClient(proxyPort: port, echoPort: echoPort, count: 8)
            #expect(udp.status == 0 && udp.stdoutText.hasPrefix("OK: 8 datagrams echoed"), "UDP through the relay chain: \(udp.output)\(outputs([relay, abroad]))")
            abroad.stop()
            let cut = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(port)", try Origin.shared().smallURL], maxTime: 15)
            #expect(cut.status != 0, "the relay reached the destination without the bridge abroad")
        }

        @Test("raha share revoke closes the revoked invitee's open connection on its next request, leaves another invitee's alone, and a new invite makes new keys")
        func revocationCutsOpenConnections() throws {
            let running = Processes()
            defer { running.stopAll() }
            let node = try ShareNode()
            defer { node.stop() }
            let ali = try node.invite("Ali"), bahar = try node.invite("Bahar")
            let (aliConnect, aliPort) = try Peers.connect([ali.bundle])
            let (baharConnect, baharPort) = try Peers.connect([bahar.bundle])
            running.add(aliConnect)
            running.add(baharConnect)
            let aliSSPort = try ssLocal(ali, running)

            let aliOpen = try KeptAliveFetch(proxyPort: aliPort), aliSSOpen = try KeptAliveFetch(proxyPort: aliSSPort)
            let baharOpen = try KeptAliveFetch(proxyPort: baharPort)
            #expect(try aliOpen.fetch() && aliSSOpen.fetch() && baharOpen.fetch(), "the open connections did not work before the revocation")

            let said = try node.expectSuccess(["revoke", "Ali"])
            #expect(said.contains("open connections were closed"))
            #expect(try !aliOpen.fetch(), "Ali's open Trojan connection still carried a request after the revocation")
            #expect(try !aliSSOpen.fetch(), "Ali's open Shadowsocks connection still carried a request after the revocation")
            #expect(try baharOpen.fetch(), "Bahar's open connection stopped working when Ali was revoked")
            let refused = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(aliSSPort)", try Origin.shared().smallURL], maxTime: 10)
            #expect(refused.status != 0, "a new connection with Ali's revoked key got through")
            #expect(try !node.listed("Ali").active)

            let again = try node.invite("Ali")
            #expect(again.shadowsocks.password != ali.shadowsocks.password && again.trojanForApps.password != ali.trojanForApps.password)
            let newPort = try ssLocal(again, running)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(newPort)"], via: "ss-local with Ali's new key", processes: [node.process!])
        }

        @Test("Limits are enforced and change live: connections at once, the monthly quota, the bandwidth cap")
        func limitsAreEnforced() throws {
            let running = Processes()
            defer { running.stopAll() }
            let node = try ShareNode()
            defer { node.stop() }
            let origin = try Origin.shared()

            // At most 2 connections open at once (ss-local: one connection to the node per stream).
            let cyrus = try ssLocal(try node.invite("Cyrus", ["--max-connections", "2"]), running)
            let first = try KeptAliveFetch(proxyPort: cyrus), second = try KeptAliveFetch(proxyPort: cyrus)
            #expect(try first.fetch() && second.fetch())
            #expect(try !KeptAliveFetch(proxyPort: cyrus).fetch(), "a third connection got through a limit of 2")
            try node.expectSuccess(["limit", "Cyrus", "--max-connections", "3"])
            #expect(try KeptAliveFetch(proxyPort: cyrus).fetch(), "a third connection was refused after the limit became 3")
            #expect(try first.fetch(), "raising the limit disturbed an open connection")

            // A quota of 1 MB: the 3 MB download is cut off near it, and nothing more gets through.
            let dara = try ssLocal(try node.invite("Dara", ["--quota", "1M"]), running)
            let cut = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(dara)", origin.bigURL])
            #expect(cut.status != 0 && cut.body.count < origin.big.count, "the download went past the quota: \(cut.body.count) bytes")
            #expect(cut.body.count <= 1_000_000 + 256 * 1024, "\(cut.body.count) bytes arrived under a 1 MB quota")
            let dropped = try node.listed("Dara")
            #expect(dropped.overQuota, "Dara is not listed as over quota after \(dropped.usage.down) bytes")
            #expect(try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(dara)", origin.smallURL], maxTime: 10).status != 0,
                    "a new connection got through after the quota was used up")
            try node.expectSuccess(["limit", "Dara", "--quota", "none"])
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(dara)"], via: "ss-local after the quota was lifted", processes: [node.process!])

            // A cap of 8 Mbit/s (1 MB/s): curl's average can only be lower (a slow machine makes it lower still).
            let eli = try ssLocal(try node.invite("Eli", ["--rate", "8M"]), running)
            let capped = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(eli)", "--write-out", "\n%{speed_download}", "--output", "/dev/null", origin.bigURL])
            let speed = Double(String(decoding: capped.body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) ?? .infinity
            #expect(capped.status == 0, "the capped download failed: \(capped.stderr)")
            // At best the bucket's burst (a fifth of a second) and one read from the origin
            // (up to 4 x 64 KiB) come at once, and the rest at the cap: about 1.17 MB/s on 3 MB.
            let fastest = Double(origin.big.count) / (Double(origin.big.count - 200_000 - 4 * 65_536) / 1_000_000)
            #expect(speed <= fastest, "the download averaged \(Int(speed)) B/s under a cap of 1,000,000 B/s (at most \(Int(fastest)) possible)")
        }

        @Test("The circle outlives the node: usage is kept, the commands work on the file while it is stopped, and keys keep working after a restart; mistakes get clear messages")
        func circlePersistsAndMistakesAreExplained() throws {
            let running = Processes()
            defer { running.stopAll() }
            let node = try ShareNode()
            defer { node.stop() }
            let origin = try Origin.shared()
            let farah = try node.invite("Farah", ["--rate", "50M"])
            let farahPort = try ssLocal(farah, running)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(farahPort)"], via: "ss-local", processes: [node.process!])

            node.stop()
            let stopped = try node.listed("Farah")
            #expect(stopped.openStreams == nil, "the listing says the stopped node has open connections")
            #expect(stopped.usage.down >= Int64(origin.big.count), "the usage counted before the stop was lost: \(stopped.usage.down) bytes")
            let golnar = try node.invite("Golnar")
            #expect(try node.expectSuccess(["list"]).contains("the share node is not running"))

            try node.start()
            let golnarPort = try ssLocal(golnar, running)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(golnarPort)"], via: "ss-local with a key made while the node was stopped", processes: [node.process!])
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(farahPort)"], via: "ss-local with a key made before the restart", processes: [node.process!])
            let shown = try node.show("Farah").shadowsocks
            #expect(shown.password == farah.shadowsocks.password && shown.server == farah.shadowsocks.server, "`raha share show` printed a different key")

            let mistakes: [([String], String)] = [
                (["invite", "Farah"], "already invited"),
                (["revoke", "Nobody"], "nobody called"),
                (["limit", "Farah", "--rate", "fast"], "is not a rate"),
                (["limit", "Farah"], "say what to change"),
                (["invite", " Farah"], "no space at either end"),
                (["invite", "Hana", "--quota", "10k"], "under 1 MB"),
            ]
            for (arguments, message) in mistakes {
                let result = try node.run(arguments)
                #expect(result.status != 0 && result.stderrText.contains(message),
                        "raha share \(arguments.joined(separator: " ")) exited \(result.status) and said: \(result.output)")
            }
            let nowhere = try runCommand("raha share list", try Paths.rahaBinary(), ["share", "list", "--data", try Paths.temporaryDirectory("no-share").path])
            #expect(nowhere.status != 0 && nowhere.stderrText.contains("no share node has been set up"), "\(nowhere.output)")
        }
    }
}
