import Foundation
import Testing

extension RahaIntegration {
    /// `raha connect` racing its keys, failing over, remembering the winner,
    /// and saying clearly when nothing gets through; `raha doctor`.
    @Suite("Racing dialer and doctor")
    struct SmartDialer {
        /// Short deadlines so that dead keys are given up on quickly.
        static let fast = ["--probe-timeout", "2", "--stagger", "100"]

        private func ssBridge() throws -> (ManagedProcess, String) {
            let (bridge, keys) = try Peers.bridge([ssURI(method: "chacha20-ietf-poly1305", password: randomPassword(), port: try Ports.free())])
            return (bridge, try #require(keys.first))
        }

        /// The port of a key to 127.0.0.1 (`…@127.0.0.1:PORT/?…`).
        private func port(of key: String) -> String {
            String((key.components(separatedBy: "@127.0.0.1:").last ?? "").prefix { $0.isNumber })
        }

        @Test("Keys to a silent port, a refusing port and a working bridge: the working one is used, named, remembered (0600, no key, no address)")
        func raceWinsAndRemembers() throws {
            let running = Processes()
            defer { running.stopAll() }
            let silent = try SilentListener()
            let silentKey = ssURI(method: "aes-128-gcm", password: randomPassword(), port: silent.port)
            let refusedKey = ssURI(method: "aes-128-gcm", password: randomPassword(), port: try Ports.free())
            let (bridge, good) = try ssBridge()
            running.add(bridge)
            let state = try Paths.temporaryDirectory("state")
            defer { try? FileManager.default.removeItem(at: state) }
            let stateDirectory = state.appendingPathComponent("raha") // not there yet: connect makes it
            let (connect, proxyPort) = try Peers.connect([silentKey, refusedKey, good], extra: Self.fast + ["--state", stateDirectory.path])
            running.add(connect)

            let using = try connect.waitForLine(startingWith: "Using ")
            #expect(using.contains("via 127.0.0.1:\(port(of: good))") && using.contains("verified round trip in"), "\(using)")
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(proxyPort)"], via: "the race's winner", processes: [bridge, connect])

            let file = stateDirectory.appendingPathComponent("paths.json").path
            let mode = ((try FileManager.default.attributesOfItem(atPath: file))[.posixPermissions] as? NSNumber)?.intValue ?? -1
            #expect(mode == 0o600, "the path memory has mode \(String(mode, radix: 8)), expected 600")
            let directoryMode = ((try FileManager.default.attributesOfItem(atPath: stateDirectory.path))[.posixPermissions] as? NSNumber)?.intValue ?? -1
            #expect(directoryMode == 0o700, "the state directory has mode \(String(directoryMode, radix: 8)), expected 700")
            let stored = try String(contentsOfFile: file, encoding: .utf8)
            for secret in [good, silentKey, refusedKey] {
                #expect(!stored.contains(String(secret.dropFirst(5).prefix(20))), "the path memory holds key text: \(stored)")
            }
            #expect(!stored.contains("127.0.0.1") && !stored.contains(port(of: good)), "the path memory holds an address: \(stored)")
            #expect(stored.contains("\"") && stored.count > 10, "the path memory is empty: \(stored)")

            // Next time the remembered winner is raced first: it wins before the stagger
            // (longer than the probe deadline here) starts any other key.
            connect.stop()
            let (again, _) = try Peers.connect([silentKey, refusedKey, good],
                                               extra: ["--probe-timeout", "2", "--stagger", "2500", "--state", stateDirectory.path])
            running.add(again)
            let second = try again.waitForLine(startingWith: "Using ")
            #expect(second.contains("via 127.0.0.1:\(port(of: good))"), "\(second)")
            #expect(!again.output.contains("blocked"), "keys after the remembered one were probed:\n\(again.output)")
        }

        @Test("Only dead keys: one clear line that only message channels remain, and SOCKS5 requests fail at once")
        func nothingGetsThrough() throws {
            let running = Processes()
            defer { running.stopAll() }
            let silent = try SilentListener()
            let refusedPort = try Ports.free()
            let (connect, proxyPort) = try Peers.connect(
                [ssURI(method: "aes-128-gcm", password: randomPassword(), port: silent.port),
                 ssURI(method: "aes-128-gcm", password: randomPassword(), port: refusedPort)], extra: Self.fast)
            running.add(connect)
            let line = try connect.waitForLine(startingWith: "No transport got through: ")
            #expect(line.contains("via 127.0.0.1:\(silent.port): timed out after 2 s"), "\(line)")
            #expect(line.contains("via 127.0.0.1:\(refusedPort): connection refused"), "\(line)")
            #expect(line.contains("Only message channels remain on this network"), "\(line)")

            let socket = try RawTCP(port: proxyPort)
            try socket.send([5, 1, 0])
            #expect(try socket.read(exactly: 2) == [5, 0])
            try socket.send([5, 1, 0, 1, 127, 0, 0, 1, 0, 80])
            let reply = try socket.read(exactly: 3)
            #expect(reply == [5, 0x03, 0], "a SOCKS5 CONNECT with nothing getting through got \(hex(reply)), expected 050300 (network unreachable)")
            // Over HTTP, the error page says the same.
            let page = try Curl.fetch(["-x", "http://127.0.0.1:\(proxyPort)", "-w", "%{http_code}", "http://127.0.0.1:\(try Origin.shared().port)/"])
            let text = String(decoding: page.body, as: UTF8.self)
            #expect(text.hasSuffix("502") && text.contains("Only message channels remain on this network"), "\(text)")
            #expect(connect.isRunning, "raha connect exited: \(connect.output)")
        }

        @Test("Failover: when the winning bridge dies, the next stream goes through the other one")
        func failover() throws {
            let running = Processes()
            defer { running.stopAll() }
            let (first, firstKey) = try ssBridge()
            running.add(first)
            let (second, secondKey) = try ssBridge()
            running.add(second)
            // A stagger longer than the probe deadline: the second bridge is probed only if the first fails.
            let (connect, proxyPort) = try Peers.connect([firstKey, secondKey], extra: ["--probe-timeout", "2", "--stagger", "2500"])
            running.add(connect)
            let using = try connect.waitForLine(startingWith: "Using ")
            #expect(using.contains("via 127.0.0.1:\(port(of: firstKey))"), "\(using)")
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(proxyPort)"], via: "the first bridge", processes: [first, connect])

            first.stop()
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(proxyPort)"], via: "failover to the second bridge", processes: [second, connect])
            let switched = try connect.waitForLine(description: "a log line saying the second bridge is used") {
                $0.contains("using ") && $0.contains("via 127.0.0.1:\(port(of: secondKey))")
            }
            #expect(!switched.isEmpty)
        }

        @Test("raha doctor: one good and one silent key → a table, the summary names both, exit 0; only dead keys → exit 1")
        func doctor() throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let (bridge, good) = try ssBridge()
            running.add(bridge)
            let silent = try SilentListener()
            let dead = ssURI(method: "aes-128-gcm", password: randomPassword(), port: silent.port)
            let probe = ["--probe-url", origin.smallURL, "--probe-timeout", "2"]
            let result = try runCommand("raha doctor", try Paths.rahaBinary(),
                                        ["doctor", good, dead, "--download-url", origin.bigURL] + probe, timeout: 60)
            let text = result.stdoutText
            #expect(result.status == 0, "raha doctor exited \(result.status): \(result.output)")
            #expect(text.contains("transport") && text.contains("works?") && text.contains("latency") && text.contains("throughput"), "\(text)")
            let goodRow = text.split(separator: "\n").first { $0.contains("via 127.0.0.1:\(port(of: good))") } ?? ""
            #expect(goodRow.contains("| yes") && goodRow.contains(" ms") && goodRow.contains("/s"), "good key's row: \(goodRow)")
            let deadRow = text.split(separator: "\n").first { $0.contains("via 127.0.0.1:\(silent.port)") } ?? ""
            #expect(deadRow.contains("| no") && deadRow.contains("timed out after 2 s"), "dead key's row: \(deadRow)")
            #expect(text.contains("Works here: ss chacha20-ietf-poly1305 via 127.0.0.1:\(port(of: good)); blocked: "), "\(text)")
            for secret in [good, dead] { #expect(!result.output.contains(String(secret.dropFirst(5).prefix(20)))) }

            let none = try runCommand("raha doctor", try Paths.rahaBinary(),
                                      ["doctor", dead, ssURI(method: "aes-128-gcm", password: randomPassword(), port: try Ports.free()), "--json"] + probe,
                                      timeout: 60)
            #expect(none.status == 1, "raha doctor with only dead keys exited \(none.status): \(none.output)")
            #expect(none.stdoutText.contains("\"works\" : false") && !none.stdoutText.contains("\"works\" : true"), "\(none.stdoutText)")
        }
    }
}
