import Foundation
import Testing

extension RahaIntegration {
    @Suite("Probe resistance")
    struct ProbeResistance {
        /// What a prober saw on one connection.
        struct Reaction: Equatable, CustomStringConvertible {
            var bytesReceived: Int
            var ending: ReadEnding
            var description: String { "\(bytesReceived) bytes, then \(ending)" }
        }

        /// Sends `probe` (if any) on a fresh connection to the bridge, keeps
        /// our side open, and reads until the bridge closes or the hang guard runs out.
        static func react(port: UInt16, probe: [UInt8]) -> Reaction {
            guard let socket = try? RawTCP(port: port) else { return Reaction(bytesReceived: -1, ending: .error(0)) }
            defer { socket.close() }
            if !probe.isEmpty, (try? socket.send(probe)) == nil { return Reaction(bytesReceived: -1, ending: .error(0)) }
            let (bytes, ending) = socket.readToEnd(timeout: ManagedProcess.hangGuard)
            return Reaction(bytesReceived: bytes.count, ending: ending)
        }

        @Test("Garbage, a replayed first packet, silence and a truncated header all get the same reaction: no bytes, then the bridge's own EOF")
        func probesGetNoAnswer() throws {
            let origin = try Origin.shared()
            let running = Processes()
            defer { running.stopAll() }
            let method = "chacha20-ietf-poly1305", password = randomPassword()
            let saltLength = 32, lengthChunk = 2 + 16
            let bridgePort = try Ports.free()
            let (bridge, _) = try Peers.bridge([ssURI(method: method, password: password, port: bridgePort)],
                                               extra: ["--idle-timeout", "2"])
            running.add(bridge)

            // A real session, ss-local → recorder → bridge, recorded. It works,
            // so what ss-local sent is a valid (now used) session.
            let relay = try TCPRecorder(upstreamPort: bridgePort)
            defer { relay.stop() }
            let (local, localPort) = try Peers.ssLocal(method: method, password: password, serverPort: relay.port)
            running.add(local)
            let first = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(localPort)", origin.smallURL])
            try #require(first.status == 0 && first.body == origin.small,
                         "the recorded session failed (curl \(first.status): \(first.stderr))\(outputs([bridge, local]))")
            let recorded = try relay.capture(0)
            try #require(recorded.count > saltLength + lengthChunk + 16, "recorded only \(recorded.count) bytes")

            // A fresh first packet the bridge has never seen, from ss-local
            // towards a recorder that only captures it.
            let capturer = try TCPRecorder(upstreamPort: nil, captureBytes: 64)
            defer { capturer.stop() }
            let (local2, local2Port) = try Peers.ssLocal(method: method, password: password, serverPort: capturer.port)
            running.add(local2)
            _ = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(local2Port)", origin.smallURL], maxTime: 10)
            let fresh = try capturer.capture(0)
            try #require(fresh.count > saltLength + lengthChunk + 4, "captured only \(fresh.count) bytes")
            // Salt and a complete, authentic length chunk, then 4 bytes of the header chunk.
            let truncated = Array(fresh.prefix(saltLength + lengthChunk + 4))

            let probes: [(String, [UInt8])] = [
                ("1 random byte", random(1)),
                ("50 random bytes", random(50)),
                ("51 random bytes", random(51)),
                ("300 random bytes", random(300)),
                ("the recorded session replayed (\(recorded.count) bytes)", recorded),
                ("nothing at all", []),
                ("a truncated valid header (\(truncated.count) of \(fresh.count) bytes)", truncated),
            ]
            let reactions = inParallel(probes.map { probe in { Self.react(port: bridgePort, probe: probe.1) } })
            let expected = Reaction(bytesReceived: 0, ending: .eof)
            for ((name, _), reaction) in zip(probes, reactions) {
                #expect(reaction == expected, "probe “\(name)”: the bridge reacted with \(reaction), expected \(expected)")
            }
            // The bridge itself closed those connections: it is still up.
            try #require(bridge.isRunning, "the bridge died during the probes (\(bridge.termination)):\n\(bridge.output)")
            #expect(Set(reactions.map(\.description)).count == 1,
                    "the bridge's reactions differ between probes: \(zip(probes, reactions).map { "\($0.0.0): \($0.1)" })")

            // Controls: the fresh first packet, whole, is a valid request the bridge
            // answers (so the truncated probe above was a truncated *valid* header,
            // and silence is not just deafness)...
            let control = try RawTCP(port: bridgePort)
            try control.send(fresh)
            let answered = control.receive(timeout: ManagedProcess.hangGuard)
            control.close()
            if case .success(let bytes) = answered {
                #expect(!bytes.isEmpty)
            } else {
                Issue.record("the bridge did not answer the fresh, complete first packet: \(answered)")
            }
            // ...and once used, the same packet replayed gets the same silence as every probe.
            let replayedFresh = Self.react(port: bridgePort, probe: fresh)
            #expect(replayedFresh == expected, "the replayed fresh packet got \(replayedFresh), expected \(expected)")

            // The probes changed nothing: a real session still works.
            let after = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(localPort)", origin.smallURL])
            #expect(after.status == 0 && after.body == origin.small, "after the probes: curl \(after.status): \(after.stderr)")
            #expect(bridge.isRunning)
        }

        private func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255) } }
    }
}
