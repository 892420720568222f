import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Three namespaces of this test's own: client (10.200.1.2) - router (10.200.1.1,
/// 10.200.2.1; forwarding on, every forwarded packet queued to NFQUEUE `queue`) -
/// server (10.200.2.2). The addresses exist only inside these namespaces.
final class CensorRouterNetwork {
    static let clientAddress = "10.200.1.2"
    static let serverAddress = "10.200.2.2"
    static let queue = 3

    let client: String
    let router: String
    let server: String
    private let namespaces: TestNamespaces

    init(_ label: String) throws {
        let iptables = try Paths.tool("iptables", package: "iptables")
        namespaces = try TestNamespaces(label, ["client", "router", "server"])
        (client, router, server) = (namespaces.names[0], namespaces.names[1], namespaces.names[2])
        do {
            try namespaces.link(client, "c0", "10.200.1.2/24", to: router, "r0", "10.200.1.1/24")
            try namespaces.link(server, "s0", "10.200.2.2/24", to: router, "r1", "10.200.2.1/24")
            try namespaces.ip(["-n", client, "route", "add", "default", "via", "10.200.1.1"])
            try namespaces.ip(["-n", server, "route", "add", "default", "via", "10.200.2.1"])
            try namespaces.ip(["netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
            try namespaces.ip(["netns", "exec", router, iptables, "-A", "FORWARD", "-j", "NFQUEUE", "--queue-num", "\(Self.queue)"])
        } catch {
            namespaces.remove()
            throw error
        }
    }

    func start(_ name: String, in namespace: String, _ executable: String, _ arguments: [String]) throws -> ManagedProcess {
        try namespaces.start(name, in: namespace, executable, arguments)
    }

    func run(in namespace: String, _ executable: String, _ arguments: [String], timeout: TimeInterval = 20) throws -> CommandResult {
        try namespaces.run(in: namespace, executable, arguments, timeout: timeout)
    }

    func remove() { namespaces.remove() }
}

/// A TCP server that prints, unbuffered, each connection's running total of bytes received.
private let recorderScript = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
print("recorder listening", flush=True)
def serve(c, k):
    total = 0
    while True:
        try:
            d = c.recv(65536)
        except OSError as e:
            print("conn %d error %s total %d" % (k, e, total), flush=True); return
        if not d:
            print("conn %d closed total %d" % (k, total), flush=True); return
        total += len(d)
        print("conn %d total %d" % (k, total), flush=True)
k = 0
while True:
    c, _ = s.accept(); k += 1
    print("conn %d open" % k, flush=True)
    threading.Thread(target=serve, args=(c, k), daemon=True).start()
"""

/// A client that sends two 200-byte chunks of bytes no allowed protocol starts with
/// (0xa5 0xca 0xef ...), the second one 0.3 s after the first, then waits up to 2 s
/// for an answer and prints one line: "client sent N outcome X".
private let rawClientScript = """
import socket, sys, time
chunk = bytes((i * 37 + 0xa5) & 0xff for i in range(200))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
sent = 0; outcome = "timeout"
try:
    c.sendall(chunk); sent += len(chunk)
    time.sleep(0.3)
    c.sendall(chunk); sent += len(chunk)
    c.settimeout(2)
    d = c.recv(65536)
    outcome = "data %d" % len(d) if d else "eof"
except (ConnectionResetError, BrokenPipeError):
    outcome = "reset"
except socket.timeout:
    outcome = "timeout"
print("client sent %d outcome %s" % (sent, outcome), flush=True)
"""

extension RahaIntegration {
    @Suite("Censor router (raha-censor on NFQUEUE)",
           .enabled(if: canCreateNamespaces, "needs root to create network namespaces and an NFQUEUE rule"))
    struct CensorRouter {
        private static func censorBinary() throws -> String {
            let path = Paths.packageRoot.appendingPathComponent(".build/debug/raha-censor").path
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw TestFailure("raha-censor is missing at \(path): run `swift build --build-tests` before `swift test --skip-build`")
            }
            return path
        }

        private struct Summary {
            let accepted: Int, dropped: Int, reset: Int
        }

        /// Starts raha-censor in the router namespace and waits for its ready line.
        private func startCensor(_ network: CensorRouterNetwork, _ profile: String, _ options: [String] = []) throws -> ManagedProcess {
            let censor = try network.start("raha-censor", in: network.router, try Self.censorBinary(),
                                           ["--queue", "\(CensorRouterNetwork.queue)", "--profile", profile] + options)
            try censor.waitForLine(startingWith: "raha-censor: queue \(CensorRouterNetwork.queue), profile \(profile)")
            return censor
        }

        /// SIGTERM, exit status 0, and the summary line's counts.
        private func stopCensor(_ censor: ManagedProcess) throws -> Summary {
            kill(censor.pid, SIGTERM)
            let status = try censor.waitForExit()
            #expect(status == 0, "raha-censor exited \(censor.termination) on SIGTERM:\n\(censor.output)")
            let line = try censor.waitForLine(startingWith: "raha-censor: summary:")
            func count(_ word: String) -> Int {
                guard let range = line.range(of: "\(word) ") else { return -1 }
                return Int(line[range.upperBound...].prefix(while: \.isNumber)) ?? -1
            }
            return Summary(accepted: count("accepted"), dropped: count("dropped"), reset: count("reset"))
        }

        private func startWebServer(_ network: CensorRouterNetwork, port: Int, directory: URL) throws -> ManagedProcess {
            let python = try Paths.tool("python3", package: "python3")
            let server = try network.start("http.server :\(port)", in: network.server, python,
                                           ["-u", "-m", "http.server", "\(port)", "--bind", CensorRouterNetwork.serverAddress,
                                            "--directory", directory.path])
            try server.waitForLine(startingWith: "Serving HTTP")
            return server
        }

        private func startRecorder(_ network: CensorRouterNetwork, port: Int) throws -> ManagedProcess {
            let python = try Paths.tool("python3", package: "python3")
            let recorder = try network.start("recorder :\(port)", in: network.server, python,
                                             ["-u", "-c", recorderScript, CensorRouterNetwork.serverAddress, "\(port)"])
            try recorder.waitForLine(startingWith: "recorder listening")
            return recorder
        }

        /// curl from the client namespace; nil when the fetch failed.
        private func fetch(_ network: CensorRouterNetwork, port: Int) throws -> String? {
            let curl = try Paths.tool("curl", package: "curl")
            let result = try network.run(in: network.client, curl,
                                         ["-sS", "--noproxy", "*", "--connect-timeout", "3", "--max-time", "8",
                                          "http://\(CensorRouterNetwork.serverAddress):\(port)/hello.txt"])
            return result.status == 0 ? result.stdoutText : nil
        }

        /// Runs the raw client against port `port`; returns its result line.
        private func sendRawBytes(_ network: CensorRouterNetwork, port: Int) throws -> String {
            let python = try Paths.tool("python3", package: "python3")
            let result = try network.run(in: network.client, python,
                                         ["-u", "-c", rawClientScript, CensorRouterNetwork.serverAddress, "\(port)"])
            return result.output.split(whereSeparator: \.isNewline).first { $0.hasPrefix("client sent") }.map(String.init)
                ?? "no result line (status \(result.status)): \(result.output)"
        }

        /// The most bytes any connection delivered to the recorder, after stopping it.
        private func recordedBytes(_ recorder: ManagedProcess) -> Int {
            recorder.stop()
            return recorder.output.split(whereSeparator: \.isNewline).compactMap { line -> Int? in
                guard let range = line.range(of: "total ") else { return nil }
                return Int(line[range.upperBound...].prefix(while: \.isNumber))
            }.max() ?? 0
        }

        private func webRoot() throws -> URL {
            let directory = try Paths.temporaryDirectory("censor-router")
            ProcessRegistry.shared.removeAtExit(directory.path)
            try Data("hello through the router\n".utf8).write(to: directory.appendingPathComponent("hello.txt"))
            return directory
        }

        @Test("open: a web fetch and arbitrary bytes cross the router; a second raha-censor on the same queue fails clearly; SIGTERM prints the counts")
        func open() throws {
            let network = try CensorRouterNetwork("open")
            defer { network.remove() }
            let root = try webRoot()
            let web = try startWebServer(network, port: 8080, directory: root)
            defer { web.stop() }
            let recorder = try startRecorder(network, port: 443)
            defer { recorder.stop() }
            let censor = try startCensor(network, "open")
            defer { censor.stop() }

            let second = try network.start("second raha-censor", in: network.router, try Self.censorBinary(),
                                           ["--queue", "\(CensorRouterNetwork.queue)", "--profile", "open"])
            let secondStatus = try second.waitForExit()
            #expect(secondStatus != 0, "a second raha-censor bound the busy queue:\n\(second.output)")
            #expect(second.output.contains("cannot bind NFQUEUE queue \(CensorRouterNetwork.queue)"), "unclear busy-queue error:\n\(second.output)")

            #expect(try fetch(network, port: 8080) == "hello through the router\n")
            let client = try sendRawBytes(network, port: 443)
            #expect(client.hasPrefix("client sent 400"), "\(client)")
            #expect(recordedBytes(recorder) == 400, "the server did not receive all 400 bytes:\n\(recorder.output)")

            let summary = try stopCensor(censor)
            #expect(summary.accepted > 0 && summary.dropped == 0 && summary.reset == 0, "summary: \(censor.output)")
        }

        @Test("iran-whitelist: HTTP on port 80 passes, the same fetch on 8080 does not, and non-protocol bytes on 443 stop after the first packet")
        func iranWhitelist() throws {
            let network = try CensorRouterNetwork("iran")
            defer { network.remove() }
            let root = try webRoot()
            let web80 = try startWebServer(network, port: 80, directory: root)
            defer { web80.stop() }
            let web8080 = try startWebServer(network, port: 8080, directory: root)
            defer { web8080.stop() }
            let recorder = try startRecorder(network, port: 443)
            defer { recorder.stop() }
            let censor = try startCensor(network, "iran-whitelist")
            defer { censor.stop() }

            #expect(try fetch(network, port: 80) == "hello through the router\n", "HTTP on port 80 was blocked:\n\(censor.output)")
            #expect(try fetch(network, port: 8080) == nil, "HTTP on port 8080 got through")
            let client = try sendRawBytes(network, port: 443)
            #expect(!client.contains("outcome data"), "the client got an answer: \(client)")
            let received = recordedBytes(recorder)
            #expect(received == 200, "the server should get exactly the first 200-byte packet, got \(received):\n\(recorder.output)")

            let summary = try stopCensor(censor)
            #expect(summary.accepted > 0 && summary.dropped > 0, "summary: \(censor.output)")
        }

        @Test("sni-allowlist: non-TLS bytes are reset (RSTs injected through the raw socket) and never reach the server")
        func sniAllowlistReset() throws {
            let network = try CensorRouterNetwork("sni")
            defer { network.remove() }
            let recorder = try startRecorder(network, port: 443)
            defer { recorder.stop() }
            let censor = try startCensor(network, "sni-allowlist")
            defer { censor.stop() }

            let client = try sendRawBytes(network, port: 443)
            #expect(client.contains("outcome reset"), "the client was not reset: \(client)\n\(censor.output)")
            let received = recordedBytes(recorder)
            #expect(received == 0, "the server received \(received) bytes:\n\(recorder.output)")

            let summary = try stopCensor(censor)
            #expect(summary.reset > 0, "summary: \(censor.output)")
        }

        @Test("raha connect across the router: under open it uses the bridge; under shutdown it says no transport got through and only message channels remain")
        func connectUnderShutdown() throws {
            let root = try webRoot()
            for profile in ["open", "shutdown"] {
                let network = try CensorRouterNetwork("rc-\(profile.prefix(4))")
                defer { network.remove() }
                let web = try startWebServer(network, port: 8080, directory: root)
                defer { web.stop() }
                let (bridge, keys) = try Peers.bridge([ssURI(method: "chacha20-ietf-poly1305", password: randomPassword(), port: 8388,
                                                             host: CensorRouterNetwork.serverAddress)], namespace: network.server)
                defer { bridge.stop() }
                let key = try #require(keys.first)
                let censor = try startCensor(network, profile)
                defer { censor.stop() }
                let connect = try network.start("raha connect", in: network.client, try Paths.rahaBinary(),
                                                ["connect", key, "--listen", "127.0.0.1:1080", "--no-memory", "--probe-timeout", "2",
                                                 "--probe-url", "http://\(CensorRouterNetwork.serverAddress):8080/hello.txt"])
                defer { connect.stop() }
                if profile == "open" {
                    let line = try connect.waitForLine(startingWith: "Using ")
                    #expect(line.contains("via \(CensorRouterNetwork.serverAddress):8388"), "\(line)")
                } else {
                    let line = try connect.waitForLine(startingWith: "No transport got through: ")
                    #expect(line.contains("timed out after 2 s") && line.contains("Only message channels remain on this network"), "\(line)")
                }
            }
        }

        /// The censor's lines about `server`'s probes (one per probe: 4 replays, 7 short random
        /// probes and one of 221 bytes, the last printed last), once all are printed.
        private func probeLines(_ censor: ManagedProcess, server: String, count: Int) throws -> [String] {
            let prefix = "raha-censor: probe \(server) "
            try censor.waitForLine(timeout: 60, description: "the last probe line for \(server)") {
                $0.hasPrefix(prefix + "random 221 bytes:")
            }
            let lines = censor.output.split(whereSeparator: \.isNewline).map(String.init).filter { $0.hasPrefix(prefix) }
            #expect(lines.count == count, "\(lines)")
            return lines
        }

        @Test("active-probe: ss-server and raha's Shadowsocks bridge are blocked (they never answer like a web server); raha's Trojan bridge on 443 reacts like nginx HTTPS and is not")
        func activeProbe() throws {
            let network = try CensorRouterNetwork("probe")
            defer { network.remove() }
            let running = Processes()
            defer { running.stopAll() }
            let server = CensorRouterNetwork.serverAddress
            let certificate = try TestCertificate.make(for: trojanBridgeName)
            let plainSite = try Nginx.website(host: server, port: 80, namespace: network.server)
            running.add(plainSite.process)
            let httpsSite = try Nginx.httpsWebsite(certificate: certificate, host: server, port: 4443, namespace: network.server)
            running.add(httpsSite.process)
            let method = "chacha20-ietf-poly1305", password = randomPassword()
            let (ssServer, _) = try Peers.ssServer(method: method, password: password, host: server, port: 8388, namespace: network.server)
            running.add(ssServer)
            let (ssBridge, _) = try Peers.bridge([ssURI(method: method, password: password, port: 8389, host: server)], namespace: network.server)
            running.add(ssBridge)
            let (trojan, _) = try Peers.trojanBridge([trojanURI(password: randomPassword(), port: 443, [("security", "tls"), ("sni", trojanBridgeName)], host: server)],
                                                     certificate: certificate, namespace: network.server)
            running.add(trojan)
            let censor = try startCensor(network, "active-probe", ["--reference", "\(server):80", "--reference-tls", "\(server):4443"])
            running.add(censor)

            // Real first payloads: a Shadowsocks request from ss-local, to each Shadowsocks server, and a browser's TLS handshake.
            let curl = try Paths.tool("curl", package: "curl")
            /// Whether a fetch through ss-local and the server on `port` worked, and what curl and ss-local said.
            func viaShadowsocks(_ port: UInt16) throws -> (fetched: Bool, detail: String) {
                let (local, socksPort) = try Peers.ssLocal(method: method, password: password, serverPort: port, serverHost: server, namespace: network.client)
                defer { local.stop() }
                let result = try network.run(in: network.client, curl, ["-sS", "--max-time", "5", "--socks5-hostname", "127.0.0.1:\(socksPort)", "http://\(server)/"])
                return (result.status == 0 && result.stdoutText == Nginx.indexPage, "curl: \(result.output)\nss-local: \(local.output)")
            }
            func viaHTTPS() throws -> Bool {
                let result = try network.run(in: network.client, curl, ["-sS", "-k", "--noproxy", "*", "--max-time", "5",
                                                                        "--resolve", "\(trojanBridgeName):443:\(server)", "https://\(trojanBridgeName)/"])
                return result.status == 0 && result.stdoutText.contains("<html")
            }
            for port in [8388, 8389] as [UInt16] {
                let (fetched, detail) = try viaShadowsocks(port)
                #expect(fetched, "ss-local to the server on \(port) failed before any judgement:\n\(detail)\n\(censor.output)\nss-server: \(ssServer.output)")
            }
            #expect(try viaHTTPS(), "a browser's fetch from the Trojan bridge's site failed before any judgement:\n\(censor.output)")

            var report: [String] = []
            for port in [8388, 8389, 443] {
                report += try probeLines(censor, server: "\(server):\(port)", count: 12)
            }
            print("active-probe reactions:\n" + report.joined(separator: "\n"))
            // The results are queued before their lines are printed, and the censor takes them before its next verdict.
            #expect(try !viaShadowsocks(8388).fetched, "ss-server was not blocked:\n\(censor.output)")
            #expect(try !viaShadowsocks(8389).fetched, "raha's Shadowsocks bridge was not blocked:\n\(censor.output)")
            let trojanPasses = try viaHTTPS()
            let events = censor.output.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("raha-censor: event blocked") }
            print("active-probe blocks:\n" + events.joined(separator: "\n"))
            #expect(events.contains { $0.hasPrefix("raha-censor: event blocked \(server):8388 active probe: reactions differ") })
            #expect(events.contains { $0.hasPrefix("raha-censor: event blocked \(server):8389 active probe: reactions differ") })
            #expect(trojanPasses && !events.contains { $0.contains(" \(server):443 ") },
                    "raha's Trojan bridge reacted unlike nginx HTTPS:\n\(censor.output)")
        }

        @Test("an unknown profile is refused with the list of valid ones")
        func unknownProfile() throws {
            let result = try runCommand("raha-censor", try Self.censorBinary(), ["--queue", "1", "--profile", "nonesuch"], timeout: 20)
            #expect(result.status != 0)
            #expect(result.output.contains("unknown censor profile 'nonesuch'") && result.output.contains("iran-whitelist"),
                    "\(result.output)")
        }
    }
}
