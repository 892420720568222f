import Foundation
import Testing

/// A TCP echo server (Python asyncio) on 127.0.0.1 with the hard descriptor
/// limit, for holding many proxied connections open at once.
final class EchoServer {
    let port: UInt16
    private let process: ManagedProcess

    init() throws {
        let script = """
            import asyncio, resource
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            async def echo(reader, writer):
                try:
                    while data := await reader.read(65536):
                        writer.write(data)
                        await writer.drain()
                except Exception:
                    pass
                writer.close()
            async def main():
                server = await asyncio.start_server(echo, '127.0.0.1', 0, backlog=4096)
                print('echo listening on', server.sockets[0].getsockname()[1], flush=True)
                await server.serve_forever()
            asyncio.run(main())
            """
        process = try ManagedProcess("echo server", try Paths.tool("python3", package: "python3"), ["-c", script])
        let line = try process.waitForLine(startingWith: "echo listening on ")
        guard let port = UInt16(line.split(separator: " ").last ?? "") else { throw TestFailure("the echo server said “\(line)”") }
        self.port = port
    }

    func stop() { process.stop() }
}

/// A process's open descriptors and resident memory (KiB).
func descriptorsAndRSS(_ pid: Int32) throws -> (descriptors: Int, rssKiB: Int) {
    let descriptors = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
    let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return (descriptors, Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0)
}

/// CPU time (user and system, in clock ticks of 1/100 s) a process has used.
func cpuTicks(_ pid: Int32) throws -> Int {
    let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields = stat[stat.index(after: try #require(stat.lastIndex(of: ")")))...].split(separator: " ")
    return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
}

extension RahaIntegration {
    @Suite("Load")
    struct Load {
        /// A SOCKS5 CONNECT to the echo server through `proxyPort` that
        /// echoes a byte: the socket, or nil when the proxy turned it away.
        static func proxiedEcho(proxyPort: UInt16, echoPort: UInt16, byte: UInt8) -> RawTCP? {
            guard let socket = try? RawTCP(port: proxyPort) else { return nil }
            do {
                try socket.send([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, UInt8(echoPort >> 8), UInt8(echoPort & 0xff), byte])
                let answer = try socket.read(exactly: 2 + 10 + 1, timeout: 30)
                if answer[0..<2] == [5, 0], answer[3] == 0, answer[12] == byte { return socket }
            } catch {}
            socket.close()
            return nil
        }

        /// `raha ARGUMENTS` under `prlimit --nofile=N:N`, so that its gate is sized from N descriptors.
        static func raha(_ name: String, descriptors: Int, _ arguments: [String]) throws -> ManagedProcess {
            try ManagedProcess(name, try Paths.tool("prlimit", package: "util-linux"),
                               ["--nofile=\(descriptors):\(descriptors)", try Paths.rahaBinary()] + arguments)
        }

        @Test("Out of descriptors: raha connect and raha bridge turn away at once what they have no room for, keep serving the connections they hold without spinning, and serve new ones once some close")
        func descriptorsRunOut() throws {
            let origin = try Origin.shared()
            let echo = try EchoServer()
            defer { echo.stop() }
            let running = Processes()
            defer { running.stopAll() }
            // Room for 80 connections at the bridge (192 descriptors: two each, 32
            // kept back) and 112 at raha connect (256): both gates close in turn.
            let bridge = try Self.raha("raha bridge", descriptors: 192, ["bridge",
                ssURI(method: "chacha20-ietf-poly1305", password: randomPassword(), port: try Ports.free()), "--allow-private", "--no-qr"])
            running.add(bridge)
            let key = try bridge.waitForLine(startingWith: "ss://")
            let proxyPort = try Ports.free()
            let connect = try Self.raha("raha connect", descriptors: 256, ["connect", key,
                "--listen", "127.0.0.1:\(proxyPort)", "--no-memory", "--probe-url", origin.smallURL])
            running.add(connect)
            _ = try connect.waitForLine(startingWith: Peers.connectReadyPrefix)

            var held: [RawTCP] = []
            var turnedAway = 0
            for attempt in 0..<180 {
                if let socket = Self.proxiedEcho(proxyPort: proxyPort, echoPort: echo.port, byte: UInt8(attempt & 0xff)) {
                    held.append(socket)
                } else {
                    turnedAway += 1
                }
            }
            #expect(held.count >= 60, "only \(held.count) of 180 connections got through")
            #expect(turnedAway >= 60, "only \(turnedAway) of 180 connections were turned away: the bridge's limit was not reached")
            #expect(bridge.output.contains("refusing new connections"), "raha bridge did not say why:\n\(bridge.output)")

            // Then raha connect's own limit: clients that greet and wait hold one descriptor each there.
            var waiting: [RawTCP] = []
            var closedAtOnce = 0
            for _ in 0..<60 {
                guard let socket = try? RawTCP(port: proxyPort) else { closedAtOnce += 1; continue }
                try? socket.send([5, 1, 0])
                if (try? socket.read(exactly: 2, timeout: 30)) == [5, 0] {
                    waiting.append(socket)
                } else {
                    closedAtOnce += 1
                    socket.close()
                }
            }
            #expect(closedAtOnce >= 1 && !waiting.isEmpty, "\(waiting.count) waiting clients held, \(closedAtOnce) turned away: raha connect's limit was not reached")
            #expect(connect.output.contains("refusing new connections"), "raha connect did not say why:\n\(connect.output)")

            // Held connections still carry bytes both ways; neither process spins while they sit.
            for (index, socket) in held.enumerated() {
                try socket.send([0x42, UInt8(index & 0xff)])
                #expect(try socket.read(exactly: 2, timeout: 30) == [0x42, UInt8(index & 0xff)], "held connection \(index) stopped echoing")
            }
            let before = (try cpuTicks(connect.pid), try cpuTicks(bridge.pid))
            Thread.sleep(forTimeInterval: 2)
            let after = (try cpuTicks(connect.pid), try cpuTicks(bridge.pid))
            // Spinning on accept would use the whole 2 s (200 ticks).
            #expect(after.0 - before.0 < 60, "raha connect used \(after.0 - before.0) ticks of CPU in 2 s while idle")
            #expect(after.1 - before.1 < 60, "raha bridge used \(after.1 - before.1) ticks of CPU in 2 s while idle")
            #expect(connect.isRunning && bridge.isRunning, "a process died:\n\(connect.output)\n\(bridge.output)")

            // Once connections close, new ones get through again.
            for socket in held + waiting { socket.close() }
            var recovered: RawTCP?
            for attempt in 0..<100 where recovered == nil {
                recovered = Self.proxiedEcho(proxyPort: proxyPort, echoPort: echo.port, byte: UInt8(attempt))
                if recovered == nil { Thread.sleep(forTimeInterval: 0.1) }
            }
            #expect(recovered != nil, "no connection got through after the held ones closed")
            recovered?.close()
            for process in [connect, bridge] {
                #expect(try process.waitForLine(description: "the gate opening again") { $0.contains("accepting connections again") }.contains("turned away while full"))
            }
        }

        @Test("Soak (short): rounds of mixed traffic through raha connect and raha bridge (fetches, idle connections dropped, refused destinations, a stranger's garbage) leave both with the descriptors they had after the first rounds, and memory within 10 MB of it")
        func shortSoak() throws {
            let origin = try Origin.shared()
            let echo = try EchoServer()
            defer { echo.stop() }
            let running = Processes()
            defer { running.stopAll() }
            let bridgePort = try Ports.free()
            let (bridge, keys) = try Peers.bridge([ssURI(method: "chacha20-ietf-poly1305", password: randomPassword(), port: bridgePort)])
            running.add(bridge)
            let (connect, proxyPort) = try Peers.connect(keys)
            running.add(connect)
            let closedPort = try Ports.free()
            func round() throws {
                for _ in 0..<5 {
                    let small = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(proxyPort)", origin.smallURL])
                    #expect(small.status == 0 && small.body == origin.small, "a small fetch failed: \(small.stderr)")
                }
                let big = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(proxyPort)", origin.bigURL])
                #expect(big.status == 0 && big.body == origin.big, "a 3 MB fetch failed: \(big.stderr)")
                let idle = (0..<100).compactMap { Self.proxiedEcho(proxyPort: proxyPort, echoPort: echo.port, byte: UInt8($0)) }
                #expect(idle.count == 100, "only \(idle.count) of 100 idle connections opened")
                for socket in idle { socket.close() }
                for _ in 0..<3 {
                    let refused = try Curl.fetch(["--socks5-hostname", "127.0.0.1:\(proxyPort)", "http://127.0.0.1:\(closedPort)/"])
                    #expect(refused.status != 0, "a fetch from a closed port worked")
                }
                let stranger = try RawTCP(port: bridgePort)
                try stranger.send(Self.randomBytes(300))
                stranger.close()
            }
            /// Both processes once their descriptors have settled (closes finish after the clients').
            func settled(atMost limit: [Int]? = nil) throws -> [(descriptors: Int, rssKiB: Int)] {
                let giveUp = Date().addingTimeInterval(ManagedProcess.hangGuard)
                var last = try [connect.pid, bridge.pid].map(descriptorsAndRSS)
                while let limit, zip(last, limit).contains(where: { $0.descriptors > $1 }), Date() < giveUp {
                    Thread.sleep(forTimeInterval: 0.1)
                    last = try [connect.pid, bridge.pid].map(descriptorsAndRSS)
                }
                return last
            }
            for _ in 0..<3 { try round() }
            Thread.sleep(forTimeInterval: 1)
            let before = try settled()
            for _ in 0..<12 { try round() }
            let after = try settled(atMost: before.map(\.descriptors))
            for (name, (start, end)) in zip(["raha connect", "raha bridge"], zip(before, after)) {
                #expect(end.descriptors <= start.descriptors, "\(name) holds \(end.descriptors) descriptors after the rounds, \(start.descriptors) before")
                #expect(end.rssKiB - start.rssKiB < 10 * 1024, "\(name) grew from \(start.rssKiB / 1024) MB to \(end.rssKiB / 1024) MB")
            }
            #expect(connect.isRunning && bridge.isRunning, "a process died:\n\(connect.output)\n\(bridge.output)")
        }

        static func randomBytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255) } }

        @Test("Slowloris: strangers trickling handshakes from one address hold at most --pending-per-source of the bridge's connections, and every connection that has not authenticated closes at --handshake-timeout like a failed login, while clients get through")
        func slowHandshakesCannotFillTheBridge() throws {
            let echo = try EchoServer()
            defer { echo.stop() }
            let running = Processes()
            defer { running.stopAll() }
            // Room for 80 connections (192 descriptors): 200 strangers would fill it
            // four times over, were it not for the limit of 16 per address.
            let data = try Paths.temporaryDirectory("bridge-data")
            ProcessRegistry.shared.removeAtExit(data.path)
            let ssPort = try Ports.free(), trojanPort = try Ports.free()
            let bridge = try Self.raha("raha bridge", descriptors: 192, ["bridge",
                ssURI(method: "chacha20-ietf-poly1305", password: randomPassword(), port: ssPort),
                trojanListener(password: randomPassword(), port: trojanPort, transport: .tls, path: "/"),
                "--data", data.path, "--allow-private", "--no-qr",
                "--handshake-timeout", "3", "--pending-per-source", "16", "--idle-timeout", "300"])
            running.add(bridge)
            let (connect, proxyPort) = try Peers.connect([try bridge.waitForLine(startingWith: "ss://")])
            running.add(connect)

            // 200 strangers from 127.0.0.2, each with the first byte of a handshake.
            var strangers: [RawTCP] = []
            for _ in 0..<200 {
                let socket = try RawTCP(port: ssPort, from: "127.0.0.2")
                try socket.send([UInt8.random(in: 0...255)])
                strangers.append(socket)
            }
            // Clients from 127.0.0.1 still get through, and stay once authenticated.
            var held: [RawTCP] = []
            for index in 0..<40 {
                if let socket = Self.proxiedEcho(proxyPort: proxyPort, echoPort: echo.port, byte: UInt8(index)) { held.append(socket) }
            }
            #expect(held.count == 40, "only \(held.count) of 40 clients got through while strangers trickled")

            // The strangers go on trickling a byte at a time; each is closed, either for
            // a newer one from its address or at the deadline, trickling or not.
            var endings: [ReadEnding?] = Array(repeating: nil, count: strangers.count)
            var received = 0
            let giveUp = Date().addingTimeInterval(ManagedProcess.hangGuard)
            while endings.contains(nil), Date() < giveUp {
                for (index, socket) in strangers.enumerated() where endings[index] == nil {
                    switch socket.receive(timeout: 0.001) {
                    case .success(let bytes): received += bytes.count
                    case .failure(let end) where end.ending != .timeout: endings[index] = end.ending
                    case .failure: try? socket.send([UInt8.random(in: 0...255)])
                    }
                }
                Thread.sleep(forTimeInterval: 0.2)
            }
            #expect(received == 0, "the bridge answered strangers with \(received) bytes")
            #expect(!endings.contains(nil), "\(endings.filter { $0 == nil }.count) trickling strangers were never closed")
            // A byte sent as the bridge closed may come back as a reset; what the bridge itself does is a FIN.
            #expect(endings.allSatisfy { $0 == .eof || $0 == .reset }, "strangers' connections ended as \(Set(endings.compactMap { $0?.description }))")
            #expect(endings.filter { $0 == .eof }.count >= 150, "only \(endings.filter { $0 == .eof }.count) of 200 strangers saw the bridge's FIN")

            // The reaction every failure gets, whatever the stranger sent: nothing, then the bridge's FIN.
            let probes: [(String, UInt16, [UInt8])] = [
                ("a wrong key's Shadowsocks request", ssPort, Self.randomBytes(32 + 18 + 40)),
                ("a truncated salt", ssPort, Self.randomBytes(10)),
                ("nothing at all", ssPort, []),
                ("half a TLS ClientHello", trojanPort, [22, 3, 1, 0x02, 0x00, 1, 0, 0x01, 0xfc, 3, 3] + Self.randomBytes(20)),
            ]
            let reactions = inParallel(probes.map { probe in {
                guard let socket = try? RawTCP(port: probe.1, from: "127.0.0.3") else { return (bytes: [UInt8](), ending: ReadEnding.error(0)) }
                if !probe.2.isEmpty { try? socket.send(probe.2) }
                return socket.readToEnd()
            } })
            for ((name, _, _), reaction) in zip(probes, reactions) {
                #expect(reaction.bytes.isEmpty && reaction.ending == .eof,
                        "\(name): the bridge answered \(reaction.bytes.count) bytes and then \(reaction.ending), not nothing and then EOF")
            }

            // The deadline passed for the clients too: being authenticated, they still echo.
            for (index, socket) in held.enumerated() {
                try socket.send([0x43, UInt8(index)])
                #expect(try socket.read(exactly: 2, timeout: 30) == [0x43, UInt8(index)], "client \(index) was closed with the strangers")
            }
            #expect(bridge.isRunning, "the bridge died:\n\(bridge.output)")
            #expect(!bridge.output.contains("refusing new connections"), "strangers filled the bridge:\n\(bridge.output)")
        }
    }
}
