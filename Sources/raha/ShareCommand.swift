import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import RahaBridge
import RahaQR
import RahaTransport
import RahaWire

struct ShareCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "share",
        abstract: "Share this machine's free connection with a circle of people, each with their own invite.",
        discussion: """
        `raha share` runs a bridge (Shadowsocks and Trojan over TLS) that only the people you \
        invite can use, each with keys of their own, so you can see their usage, limit them, \
        and cut one off without touching the others. Run it, then in another terminal:

          raha share invite Maryam --rate 2M --quota 20G     (prints her invite, text and QR)
          raha share list                                    (usage: bytes and last seen, never where)
          raha share limit Maryam --rate 5M                  (takes effect at once)
          raha share revoke Maryam                           (her keys stop working, her connections close)

        The circle is kept in the data directory (circle.json, mode 0600); the commands reach \
        the running node through its control socket there, or change the file when it is not running.
        """,
        subcommands: [Start.self, Invite.self, Show.self, List.self, Revoke.self, Limit.self],
        defaultSubcommand: Start.self
    )

    struct Location: ParsableArguments {
        @Option(help: "The share node's data directory (default: $XDG_DATA_HOME/raha/share or ~/.local/share/raha/share).")
        var data: String?

        var directory: DataDirectory { DataDirectory(path: data ?? DataDirectory.defaultPath + "/share") }

        /// Sends `request` to the running node, or applies it to the circle file.
        func perform(_ request: ShareRequest) throws -> ShareReply {
            let reply: ShareReply
            do {
                if let answered = try ShareControl.send(request, in: directory) {
                    reply = answered
                } else {
                    guard let circle = try ShareLedger.load(from: directory) else {
                        throw UsageFailure("no share node has been set up in \(directory.path): run `raha share` first (or give its --data)")
                    }
                    reply = ShareLedger(circle: circle, directory: directory).handle(request)
                }
            } catch let error as UsageFailure { throw error } catch { throw UsageFailure("\(error)") }
            if let error = reply.error { throw UsageFailure(error) }
            return reply
        }
    }

    // MARK: raha share

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "start", abstract: "Run the share node (the default).")

        @OptionGroup var location: Location

        @Option(help: "Public address or name invitees dial (default: this machine's first non-loopback address; kept for next time).")
        var host: String?

        @Option(help: "Shadowsocks port, TCP and UDP (default: chosen at random the first time, then kept).")
        var shadowsocksPort: UInt16?

        @Option(help: "Trojan (TLS) port (default: chosen at random the first time, then kept).")
        var trojanPort: UInt16?

        @Option(help: "Trojan over WebSocket (TLS) port, e.g. behind a CDN (default: chosen at random the first time, then kept; the secret path too).")
        var webSocketPort: UInt16?

        @Option(help: ArgumentHelp("Also serve the DNS tunnel, for invitees where only DNS gets through: the zone delegated to this machine and where to answer, e.g. t.example.com@0.0.0.0:53. Invites' bundles then carry a dns:// key.", valueName: "zone@address:port"))
        var dns: String?

        @Option(help: "This machine's address on its local network, which invites carry for neighbours there (default: detected; 'none' for none). Nothing is ever announced on the network.")
        var lan: String?

        @Option(help: "The name in the TLS handshake and certificate (default: --host).")
        var sni: String?

        @Option(help: "Cap on all invitees together, each direction, in bit/s (e.g. 20M), shared fairly among them; keeps room for your own use. 'none' removes it.")
        var totalRate: String?

        @Option(help: ArgumentHelp("Behind NAT (Starlink, mobile carriers): the Trojan key of a rendezvous bridge (`raha bridge … --rendezvous PORTS`) to reach invitees through. Invites then name the rendezvous's address.", valueName: "trojan-key"))
        var rendezvous: String?

        @OptionGroup var serving: ServingOptions
        @OptionGroup var logging: LoggingOptions

        func run() async throws {
            ConnectionGate.raiseDescriptorLimit()
            lineBufferedOutput()
            let directory = location.directory
            var circle: Circle
            do {
                try directory.ensureExists()
                circle = try ShareLedger.load(from: directory) ?? Circle(service: ShareService(
                    host: "", shadowsocksPort: unusedPort(), trojanPort: unusedPort(), sni: "", pin: nil))
            } catch { throw UsageFailure("\(error)") }
            var link: TrojanKey?
            if let rendezvous {
                do { link = try TrojanKey(parsing: rendezvous) } catch { throw UsageFailure("--rendezvous: \(error) (expected the Trojan key a rendezvous bridge printed)") }
            }
            let lan = self.lan == "none" ? nil : self.lan ?? primaryAddress()
            if let host {
                circle.service.host = host
            } else if let link {
                circle.service.host = link.server.hostText
            } else if circle.service.host.isEmpty || circle.service.hostIsRendezvous == true {
                circle.service.host = lan ?? "127.0.0.1"
            }
            circle.service.hostIsRendezvous = host == nil && link != nil
            // Neighbours on the local network reach the node there too (it sends no beacon: they learn the address from the invite).
            circle.service.lanHost = lan == circle.service.host ? nil : lan
            if let shadowsocksPort { circle.service.shadowsocksPort = shadowsocksPort }
            if let trojanPort { circle.service.trojanPort = trojanPort }
            circle.service.webSocketPort = webSocketPort ?? circle.service.webSocketPort ?? unusedPort()
            circle.service.webSocketPath = circle.service.webSocketPath ?? "/" + Base64.encode(SecureRandom.bytes(9), urlSafe: true, padded: false)
            if let sni { circle.service.sni = sni } else if circle.service.sni.isEmpty { circle.service.sni = circle.service.host }
            if let totalRate { circle.totalRate = try parseSetting(totalRate, Quantity.parseRate, "--total-rate").value }
            var dnsListeners: [DNSTunnelListener] = []
            circle.service.dnsZone = nil
            circle.service.dnsPublicKey = nil
            if let dns {
                let (zone, address) = try BridgeCommand.dnsListener("dns://" + dns)
                let keyPair: NoiseKeyPair
                do { keyPair = try DNSTunnelIdentity.loadOrCreate(in: directory).keyPair } catch { throw UsageFailure("\(error)") }
                dnsListeners = [DNSTunnelListener(zone: zone, address: address, keyPair: keyPair)]
                circle.service.dnsZone = zone.displayText
                circle.service.dnsPublicKey = keyPair.publicKey
            }
            let identity = try serving.identity(name: circle.service.sni, in: directory)
            circle.service.pin = identity.selfSigned ? identity.fingerprint : nil

            let ledger = ShareLedger(circle: circle, directory: directory)
            do { try ledger.save() } catch { throw UsageFailure("\(error)") }
            func anyAddress(_ port: UInt16) -> Endpoint { Endpoint(host: .ipv4([0, 0, 0, 0]), port: port) }
            // The listeners' own passwords are never used: the circle's are.
            let ssKey = ShadowsocksKey.generate(method: .chacha20IETFPoly1305, server: anyAddress(circle.service.shadowsocksPort))
            let trojanKey = TrojanKey.generate(server: anyAddress(circle.service.trojanPort), sni: circle.service.sni)
            var webSocketKey = TrojanKey.generate(server: anyAddress(circle.service.webSocketPort!), sni: circle.service.sni)
            webSocketKey.transport = .webSocket(path: circle.service.webSocketPath!, host: nil)
            let group = serving.eventLoops()
            let bridge = Bridge(
                configuration: .init(listeners: [ssKey], trojanListeners: [trojanKey, webSocketKey].map { TrojanListener(key: $0, identity: identity) },
                                     dnsListeners: dnsListeners,
                                     policy: serving.policy, handshakeTimeout: .seconds(serving.handshakeTimeout),
                                     pendingPerSource: serving.pendingPerSource, share: ledger, rendezvousLink: link, onward: try serving.onward()),
                group: group, threadPool: NIOThreadPool.singleton, logger: logging.makeLogger(label: "raha.share"))
            do {
                try await bridge.start()
                _ = try await ShareControl.serve(ledger, in: directory, group: group)
            } catch { throw UsageFailure("cannot listen: \(error)") }
            ledger.start(on: group.next())
            stopCleanly(ledger, directory: directory)

            let service = circle.service
            let people = circle.invitees.filter(\.isActive).count
            print("Sharing on \(service.host): Shadowsocks on port \(service.shadowsocksPort) (TCP\(link == nil ? " and UDP" : "")), Trojan over TLS on port \(service.trojanPort), Trojan over WebSocket on port \(service.webSocketPort!)\(link == nil ? "" : " (through the rendezvous)")")
            if let zone = service.dnsZone, let address = bridge.dnsBoundAddresses.first {
                print("and the DNS tunnel for \(zone) on \(address.ipAddress ?? "?"):\(address.port ?? 0) (UDP and TCP; delegate the zone to this machine)")
            }
            if let lanHost = service.lanHost { print("and on the local network at \(lanHost) (invites carry both; nothing is announced there)") }
            print("Circle: \(people) \(people == 1 ? "person" : "people")\(circle.totalRate.map { ", all together at most \(Quantity.formatRate($0))" } ?? "") (kept in \(directory.path))")
            print("Invite someone:  raha share invite NAME [--rate 2M] [--quota 20G] [--max-connections 16]")
            if link == nil {
                print("(Behind NAT, invitees need an address they can reach: --host PUBLIC-ADDRESS, forward the ports, or use a rendezvous: --rendezvous TROJAN-KEY.)")
            }
            while true { try await Task.sleep(for: .seconds(3600)) }
        }

        /// On SIGINT or SIGTERM: record the usage counted so far, remove the control socket, exit.
        private func stopCleanly(_ ledger: ShareLedger, directory: DataDirectory) {
            for sig in [SIGINT, SIGTERM] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .main)
                source.setEventHandler {
                    try? ledger.stop()
                    unlink(ShareControl.socketPath(in: directory))
                    Foundation.exit(0)
                }
                source.resume()
                signalSources.append(source)
            }
        }
    }

    // MARK: raha share invite|show

    struct Invite: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Invite someone: prints their personal invite as text and QR codes.")

        @Argument(help: "Who the invite is for (a name you will recognise in `raha share list`).")
        var name: String

        @OptionGroup var limits: LimitOptions
        @OptionGroup var output: InviteOutput
        @OptionGroup var location: Location

        func run() throws {
            var set = ShareLimits()
            let change = try limits.change()
            set = change.applied(to: set)
            let reply = try location.perform(.invite(name: name, limits: set))
            print("Invited \(name) (\(set.summary)).")
            try output.show(reply)
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print someone's invite again.")
        @Argument var name: String
        @OptionGroup var output: InviteOutput
        @OptionGroup var location: Location

        func run() throws {
            try output.show(try location.perform(.show(name: name)))
        }
    }

    struct InviteOutput: ParsableArguments {
        @Option(help: "Also write the QR codes as PNG files into this directory (NAME-raha.png, NAME-outline.png, NAME-trojan.png).")
        var png: String?

        @Flag(help: "Print only the keys, no QR codes.")
        var noQR = false

        func show(_ reply: ShareReply) throws {
            guard let invitee = reply.invitee, let service = reply.service else { throw UsageFailure("the share node answered without the invite") }
            let circle = Circle(service: service)
            let invite: ShareInvite
            do { invite = try circle.invite(for: invitee) } catch { throw UsageFailure("cannot make the invite: \(error)") }
            print("For Raha (`raha connect`), every way in, in one paste:")
            printAccessKey(invite.bundle.uri, qr: !noQR)
            print("For the Outline app (Shadowsocks): scan or paste")
            printAccessKey(invite.shadowsocks.uri, qr: !noQR)
            print("For v2rayNG, Hiddify or Shadowrocket (Trojan): scan or paste")
            printAccessKey(invite.trojanForApps.uri, qr: !noQR)
            if invite.trojanForApps.allowInsecure {
                print("(The certificate is self-signed: those apps cannot pin it, so their key skips the check and someone on the path could pose as this node. Raha's own key pins it. With a real certificate, start with --cert/--key.)")
            }
            if let png {
                let stem = png + "/" + String(invitee.name.map { $0.isLetter || $0.isNumber ? $0 : "-" })
                do {
                    for (suffix, text) in [("raha", invite.bundle.uri), ("outline", invite.shadowsocks.uri), ("trojan", invite.trojanForApps.uri)] {
                        // The picture is the key: readable by the sharer alone, like the circle.
                        let file = "\(stem)-\(suffix).png"
                        guard FileManager.default.createFile(atPath: file, contents: Data(try QRCode(text).png()), attributes: [.posixPermissions: 0o600]) else {
                            throw UsageFailure("cannot write \(file)")
                        }
                    }
                } catch { throw UsageFailure("--png \(png): \(error)") }
                print("QR codes written to \(stem)-raha.png, \(stem)-outline.png and \(stem)-trojan.png")
            }
            print("Send it privately: whoever holds it uses your connection as \(invitee.name).")
        }
    }

    // MARK: raha share list|revoke|limit

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the circle: each invitee's limits and usage (bytes and last seen, never destinations).")
        @Flag(help: "Print the circle as JSON (for scripts).") var json = false
        @OptionGroup var location: Location

        func run() throws {
            let reply = try location.perform(.list)
            let statuses = reply.circle ?? []
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                encoder.dateEncodingStrategy = .iso8601
                // Names, limits, usage; never the keys.
                let people = statuses.map { status in
                    ListedInvitee(name: status.invitee.name, active: status.invitee.isActive, overQuota: status.invitee.overQuota(at: Date()),
                                  openStreams: status.openStreams, limits: status.invitee.limits, usage: status.invitee.usage)
                }
                print(String(decoding: try encoder.encode(people), as: UTF8.self))
                return
            }
            guard !statuses.isEmpty else {
                print("Nobody is invited yet: raha share invite NAME")
                return
            }
            let now = Date()
            var rows = [["NAME", "STATUS", "OPEN", "UP", "DOWN", "LIMITS", "LAST SEEN"]]
            for status in statuses {
                let invitee = status.invitee
                let month = invitee.usage.month == ShareUsage.month(of: now)
                let state = !invitee.isActive ? "revoked" : invitee.overQuota(at: now) ? "over quota" : "active"
                rows.append([
                    invitee.name, state, status.openStreams.map(String.init) ?? "-",
                    month ? Quantity.formatAmount(invitee.usage.up) : "0 B", month ? Quantity.formatAmount(invitee.usage.down) : "0 B",
                    invitee.limits.summary, invitee.usage.lastSeen.map { ago($0, now: now) } ?? "never",
                ])
            }
            let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max()! }
            for row in rows {
                print(zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ").trimmingCharacters(in: .whitespaces))
            }
            print("UP and DOWN are this month's (UTC)\(reply.totalRate.map { "; all together at most \(Quantity.formatRate($0))" } ?? "")\(reply.running ? "" : "; the share node is not running").")
        }

        private func ago(_ date: Date, now: Date) -> String {
            let seconds = Int(now.timeIntervalSince(date))
            switch seconds {
            case ..<60: return "just now"
            case ..<3600: return "\(seconds / 60) min ago"
            case ..<86400: return "\(seconds / 3600) h ago"
            default: return "\(seconds / 86400) days ago"
            }
        }
    }

    /// One invitee as `raha share list --json` prints them.
    struct ListedInvitee: Codable {
        var name: String
        var active: Bool
        var overQuota: Bool
        var openStreams: Int?
        var limits: ShareLimits
        var usage: ShareUsage
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cut someone off at once: their keys stop working and their open connections close.")
        @Argument var name: String
        @OptionGroup var location: Location

        func run() throws {
            let reply = try location.perform(.revoke(name: name))
            print("Revoked \(name): their keys no longer work\(reply.running ? " and their open connections were closed" : "").")
            print("(To let them back in later: raha share invite \(name), which makes new keys.)")
        }
    }

    struct Limit: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change someone's limits (or, with --total, the cap on everyone together); takes effect at once.")
        @Argument(help: "Whose limits to change.") var name: String?
        @OptionGroup var limits: LimitOptions
        @Option(help: "Cap on all invitees together, each direction, in bit/s (e.g. 20M), or 'none'.") var total: String?
        @OptionGroup var location: Location

        func validate() throws {
            guard (name == nil) != (total == nil) else { throw ValidationError("give a NAME and its limits, or --total RATE") }
        }

        func run() throws {
            if let total {
                let rate = try parseSetting(total, Quantity.parseRate, "--total").value
                _ = try location.perform(.total(rate: rate))
                print(rate.map { "All invitees together: at most \(Quantity.formatRate($0)), shared fairly." } ?? "No cap on all invitees together.")
                return
            }
            let change = try limits.change()
            guard !change.isEmpty else { throw UsageFailure("say what to change: --rate, --quota or --max-connections (each also takes 'none')") }
            let reply = try location.perform(.limit(name: name!, change: change))
            print("\(name!): \(reply.invitee?.limits.summary ?? "")")
        }
    }

    struct LimitOptions: ParsableArguments {
        @Option(help: "Bandwidth cap, each direction, in bit/s (e.g. 2M for 2 Mbit/s), or 'none'.") var rate: String?
        @Option(help: "Monthly quota in bytes, both directions (e.g. 20G), or 'none'.") var quota: String?
        @Option(help: "Connections open at once, or 'none'.") var maxConnections: String?

        func change() throws -> ShareLimitsChange {
            ShareLimitsChange(
                rate: try rate.map { try parseSetting($0, Quantity.parseRate, "--rate") },
                monthlyQuota: try quota.map { try parseSetting($0, Quantity.parseAmount, "--quota") },
                maxConnections: try maxConnections.map {
                    try parseSetting($0, { text in
                        guard let n = Int64(text), n >= 1 else { throw UsageFailure("“\(text)” is not a number of connections: give 1 or more") }
                        return n
                    }, "--max-connections")
                })
        }
    }
}

/// Keeps the signal sources alive for the life of the process.
nonisolated(unsafe) private var signalSources: [DispatchSourceSignal] = []

/// "none" removes a limit; anything else must parse.
private func parseSetting(_ text: String, _ parse: (String) throws -> Int64, _ option: String) throws -> ShareLimitsChange.Setting {
    if text.lowercased() == "none" { return .remove }
    do { return .set(try parse(text)) } catch { throw UsageFailure("\(option): \(error)") }
}

/// A random port for a new circle's listener that nothing uses now (TCP and
/// UDP), below Linux's ephemeral range so no outgoing connection takes it later.
func unusedPort() -> UInt16 {
    func bindable(_ port: UInt16, _ type: Int32) -> Bool {
        let fd = socket(AF_INET, type, 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
    for _ in 0..<100 {
        let port = UInt16.random(in: 20000...32767)
        if bindable(port, Int32(SOCK_STREAM.rawValue)) && bindable(port, Int32(SOCK_DGRAM.rawValue)) { return port }
    }
    return UInt16.random(in: 20000...32767)
}
