import Foundation
import Testing

extension RahaIntegration {
    /// The DNS tunnel end to end: `raha connect` with a dns:// key reaches
    /// `raha bridge`'s authoritative DNS listener only through a resolver
    /// (Debian's unbound, or a lossy UDP path), and curl fetches through it.
    @Suite("DNS tunnel")
    struct DNSTunnel {
        static let zone = "t.raha.test"

        /// `raha bridge dns://ZONE@127.0.0.1:PORT` with a fresh data directory; returns it, its key and port.
        private func dnsBridge(data: URL? = nil, verbose: Bool = false) throws -> (ManagedProcess, String, UInt16, URL) {
            let port = try Ports.free()
            let directory = try data ?? Paths.temporaryDirectory("bridge-data")
            ProcessRegistry.shared.removeAtExit(directory.path)
            let (bridge, keys) = try Peers.bridge(["dns://\(Self.zone)@127.0.0.1:\(port)"], extra: ["--data", directory.path] + (verbose ? ["--verbose"] : []))
            let key = try #require(keys.first)
            #expect(key.hasPrefix("dns://\(Self.zone)?key="), "\(key)")
            return (bridge, key, port, directory)
        }

        /// The key with `resolver=` set (before any #tag).
        private func key(_ key: String, resolver: String) -> String {
            let parts = key.split(separator: "#", maxSplits: 1)
            return parts[0] + "&resolver=\(resolver)" + (parts.count > 1 ? "#" + parts[1] : "")
        }

        @Test("Through Debian's unbound with qname minimisation: raha connect finds the bridge by its zone and curl fetches files intact, over UDP, TCP, TLS (DoT) and HTTPS (DoH) to the resolver")
        func throughUnbound() throws {
            let running = Processes()
            defer { running.stopAll() }
            let (bridge, key, bridgePort, _) = try dnsBridge(verbose: true)
            running.add(bridge)
            let resolverName = "resolver.raha.test"
            let certificate = try TestCertificate.make(for: resolverName)
            let unbound = try Unbound(stubZones: [.init(zone: Self.zone, server: "127.0.0.1@\(bridgePort)")], qnameMinimisation: true,
                                      tlsCertificate: (certificate.certificateFile, certificate.keyFile))
            defer { unbound.stop() }
            let tlsPort = try #require(unbound.tlsPort)
            let httpsPort = try #require(unbound.httpsPort)
            let resolvers = [("udp", "udp://127.0.0.1:\(unbound.port)"), ("tcp", "tcp://127.0.0.1:\(unbound.port)"),
                             ("dot", "dot://127.0.0.1:\(tlsPort)&sni=\(resolverName)"),
                             ("doh", "doh://127.0.0.1:\(httpsPort)/dns-query")]
            for (kind, resolver) in resolvers {
                // DoT and DoH check the resolver's certificate against SSL_CERT_FILE (here the test's own CA).
                let (connect, proxyPort) = try Peers.connect([self.key(key, resolver: resolver)], extra: ["--verbose"],
                                                             environment: ["SSL_CERT_FILE": certificate.certificateFile])
                running.add(connect)
                let using = try connect.waitForLine(startingWith: "Using ")
                #expect(using.contains("DNS tunnel via \(Self.zone)"), "\(using)")
                if kind == "udp" {
                    try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(proxyPort)"], via: "DNS tunnel (udp to unbound)", processes: [bridge, connect])
                } else {
                    try expectFetchesFile("dns-\(kind).bin", bytes: 256 * 1024, ["--socks5-hostname", "127.0.0.1:\(proxyPort)"],
                                          via: "DNS tunnel (\(kind) to unbound)", processes: [bridge, connect])
                }
                connect.stop()
                // Verbose, both ends: no destination.
                let origin = try Origin.shared()
                for process in [connect, bridge] {
                    #expect(!process.output.contains(":\(origin.port)") && !process.output.contains(Origin.bigName) && !process.output.contains("dns-\(kind).bin"),
                            "\(process.name) logged a destination:\n\(process.output)")
                }
            }
            // A resolver whose certificate is not for the name the key expects: no tunnel.
            let (wrongName, _) = try Peers.connect([self.key(key, resolver: "dot://127.0.0.1:\(tlsPort)&sni=other.raha.test")],
                                                   extra: ["--probe-timeout", "3"], environment: ["SSL_CERT_FILE": certificate.certificateFile])
            running.add(wrongName)
            _ = try wrongName.waitForLine(startingWith: "No transport got through: ")
            let log = bridge.output
            #expect(!log.contains("127.0.0.1:\(try Origin.shared().port)"), "the bridge logged a destination:\n\(log)")
        }

        @Test("Shaped queries: with encoding=hex and encoding=syllables in 12-character labels, the same bridge serves the tunnel through unbound, and every name unbound was asked is spelled that way")
        func shapedQueries() throws {
            let running = Processes()
            defer { running.stopAll() }
            let (bridge, key, bridgePort, _) = try dnsBridge()
            running.add(bridge)
            let consonants = Set("bdfghjklmnprstvz"), vowels = Set("aiou")
            let shapes: [(String, (Substring) -> Bool)] = [
                ("encoding=hex", { $0.allSatisfy(\.isHexDigit) }),
                // Consonant and vowel in turn across the whole name, so in each label too from its first letter's kind.
                ("encoding=syllables&label=12", { label in
                    guard let first = label.first else { return false }
                    var wantConsonant = consonants.contains(first)
                    return label.allSatisfy { letter in
                        defer { wantConsonant.toggle() }
                        return (wantConsonant ? consonants : vowels).contains(letter)
                    }
                }),
            ]
            for (shape, spelled) in shapes {
                let unbound = try Unbound(stubZones: [.init(zone: Self.zone, server: "127.0.0.1@\(bridgePort)")], logQueries: true)
                defer { unbound.stop() }
                let (connect, proxyPort) = try Peers.connect([self.key(key, resolver: "udp://127.0.0.1:\(unbound.port)") + "&" + shape])
                running.add(connect)
                _ = try connect.waitForLine(startingWith: "Using ")
                try expectFetchesFile("dns-shaped.bin", bytes: 128 * 1024, ["--socks5-hostname", "127.0.0.1:\(proxyPort)"],
                                      via: "DNS tunnel with \(shape)", processes: [bridge, connect])
                connect.stop()
                let names = unbound.queriedNames(type: "TXT").map { $0.lowercased() }.filter { $0.hasSuffix(".\(Self.zone).") }
                #expect(names.count > 100, "unbound logged \(names.count) tunnel queries with \(shape)")
                let labelLimit = shape.contains("label=12") ? 12 : 63
                for name in names {
                    let data = name.dropLast(Self.zone.count + 2).split(separator: ".")
                    #expect(!data.isEmpty && data.allSatisfy { $0.count <= labelLimit && spelled($0) }, "\(shape): \(name)")
                }
            }
        }

        @Test("Over a path that drops 15%, duplicates 10% and reorders 20% of datagrams each way: 1 MiB arrives intact")
        func lossyPath() throws {
            let running = Processes()
            defer { running.stopAll() }
            let (bridge, key, bridgePort, _) = try dnsBridge()
            running.add(bridge)
            let chaos = try ManagedProcess("udp_chaos.py", try Paths.tool("python3", package: "python3"),
                                           [Paths.fixtures.appendingPathComponent("udp_chaos.py").path, String(bridgePort),
                                            "--loss", "0.15", "--dup", "0.1", "--reorder", "0.2", "--seed", "7"])
            running.add(chaos)
            let line = try chaos.waitForLine(startingWith: "UDP chaos listening on 127.0.0.1:")
            let chaosPort = try #require(UInt16(line.split(separator: ":").last ?? ""))
            // The bridge answers queries sent straight to it: here the "resolver" is the lossy path to it.
            let (connect, proxyPort) = try Peers.connect([self.key(key, resolver: "udp://127.0.0.1:\(chaosPort)")], extra: ["--probe-timeout", "20"])
            running.add(connect)
            _ = try connect.waitForLine(startingWith: "Using ")
            try expectFetchesFile("dns-lossy.bin", bytes: 1 << 20, ["--socks5-hostname", "127.0.0.1:\(proxyPort)"],
                                  via: "DNS tunnel over a lossy path", processes: [bridge, connect, chaos], maxTime: 90)
            #expect(chaos.output.contains("chaos: dropped"), "the lossy path saw fewer than 100 datagrams:\n\(chaos.output)")
        }

        @Test("A key with another public key: no session (the bridge cannot be impersonated), and connect says the key may be wrong")
        func wrongKeyFails() throws {
            let running = Processes()
            defer { running.stopAll() }
            let (bridge, key, bridgePort, _) = try dnsBridge()
            running.add(bridge)
            let other = try Paths.temporaryDirectory("other-data")
            ProcessRegistry.shared.removeAtExit(other.path)
            let made = try runCommand("raha key new", try Paths.rahaBinary(),
                                      ["key", "new", "--transport", "dns", "--zone", Self.zone, "--data", other.path, "--no-qr"])
            let otherKey = try #require(made.stdoutText.split(separator: "\n").first { $0.hasPrefix("dns://") }.map(String.init))
            #expect(otherKey != key)
            let (connect, _) = try Peers.connect([self.key(otherKey, resolver: "udp://127.0.0.1:\(bridgePort)")], extra: ["--probe-timeout", "5"])
            running.add(connect)
            let line = try connect.waitForLine(startingWith: "No transport got through: ")
            #expect(line.contains("DNS tunnel via \(Self.zone)"), "\(line)")
            #expect(line.contains("public key"), "the failure does not point at the key: \(line)")
        }

        @Test("raha key new --transport dns prints the key of the bridge's data directory, and the bridge keeps it across restarts")
        func keyIsStable() throws {
            let data = try Paths.temporaryDirectory("bridge-data")
            ProcessRegistry.shared.removeAtExit(data.path)
            let made = try runCommand("raha key new", try Paths.rahaBinary(),
                                      ["key", "new", "--transport", "dns", "--zone", Self.zone, "--data", data.path, "--no-qr"])
            let printed = try #require(made.stdoutText.split(separator: "\n").first { $0.hasPrefix("dns://") }.map(String.init))
            let mode = ((try FileManager.default.attributesOfItem(atPath: data.appendingPathComponent("dns-tunnel.key").path))[.posixPermissions] as? NSNumber)?.intValue
            #expect(mode == 0o600, "the key file has mode \(String(mode ?? -1, radix: 8))")
            for _ in 0..<2 {
                let (bridge, key, _, _) = try dnsBridge(data: data)
                bridge.stop()
                #expect(key.split(separator: "#").first == printed.split(separator: "#").first, "bridge printed \(key), key new printed \(printed)")
            }
        }

        @Test("As a DNS server the bridge looks authoritative: SOA at its apex, empty NOERROR for other names in its zone, REFUSED outside it, garbage ignored")
        func answersLikeAServer() throws {
            let running = Processes()
            defer { running.stopAll() }
            let (bridge, _, port, _) = try dnsBridge()
            running.add(bridge)
            let dig = try Paths.tool("dig", package: "dnsutils")
            func ask(_ name: String, _ type: String) throws -> String {
                try runCommand("dig", dig, ["+norecurse", "+tries=1", "+time=3", "-p", String(port), "@127.0.0.1", name, type]).stdoutText
            }
            let apex = try ask(Self.zone, "SOA")
            #expect(apex.contains("status: NOERROR") && apex.contains("flags: qr aa") && apex.contains("IN\tSOA"), "\(apex)")
            let probe = try ask("www.\(Self.zone)", "A")
            #expect(probe.contains("status: NOERROR") && probe.contains("ANSWER: 0") && probe.contains("AUTHORITY: 1"), "\(probe)")
            // A name that decodes as tunnel data but holds no valid segment.
            let garbageName = try ask("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.\(Self.zone)", "TXT")
            #expect(garbageName.contains("status: NOERROR") && garbageName.contains("ANSWER: 0"), "\(garbageName)")
            let outside = try ask("example.org", "A")
            #expect(outside.contains("status: REFUSED"), "\(outside)")
            // Still serving after garbage datagrams.
            try sendUDP(Data((0..<300).map { _ in UInt8.random(in: 0...255) }), port: port)
            #expect(try ask(Self.zone, "SOA").contains("status: NOERROR"))
        }

        private func sendUDP(_ data: Data, port: UInt16) throws {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            guard fd >= 0 else { throw TestFailure("socket() failed") }
            defer { close(fd) }
            var address = Ports.loopback(port)
            _ = data.withUnsafeBytes { bytes in
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
        }
    }
}
