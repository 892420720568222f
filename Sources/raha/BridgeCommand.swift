import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import RahaBridge
import RahaTransport
import RahaWire

struct BridgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bridge",
        abstract: "Run a bridge outside the censor's reach and print its access key.",
        discussion: """
        With no URI, makes a key once (kept in the data directory, mode 0600) and listens \
        on a random port on all addresses, TCP and UDP. Each URI is one more listener, in \
        access-key form; its host and port are where to listen.

        Trojan listeners (trojan://) look like an HTTPS web site: anything that is not an \
        authenticated client is handed byte for byte to --fallback, or to a small static \
        site of the bridge's own. Without --cert/--key the bridge makes a self-signed \
        certificate for the key's sni (kept in the data directory) and prints keys that pin it.

        Examples:
          raha bridge
          raha bridge --host 203.0.113.7
          raha bridge 'ss://chacha20-ietf-poly1305:PASSWORD@0.0.0.0:8388'
          raha bridge 'ss://2022-blake3-aes-256-gcm:BASE64KEY@0.0.0.0:8389'
          raha bridge 'trojan://PASSWORD@0.0.0.0:443?sni=www.example.org' --fallback 127.0.0.1:8080
          raha bridge 'trojan://PASSWORD@0.0.0.0:443?sni=site.example&type=ws&path=/SECRET' --cert fullchain.pem --key privkey.pem
          raha bridge 'trojan://PASSWORD@127.0.0.1:8081?security=none&type=ws&path=/SECRET'   (behind nginx or a CDN)
          raha bridge 'dns://t.example.com@0.0.0.0:53'   (a DNS tunnel: delegate t.example.com to this machine)

        DNS tunnel listeners (dns://ZONE@ADDRESS:PORT) answer as the authoritative server \
        for ZONE on UDP and TCP; delegate the zone to this machine (NS record). The \
        bridge's X25519 key is kept in the data directory and the printed dns:// key \
        carries its public half.
        """
    )

    @Argument(help: "Listeners as access keys (ss://… or trojan://…) or dns://ZONE@ADDRESS:PORT. Default: the stored default listener.")
    var listeners: [String] = []

    @Option(help: "HOST:PORT of the web site that probes and browsers see on Trojan listeners (e.g. a local nginx). Default: a static site of the bridge's own.")
    var fallback: String?

    @Option(help: "Data directory for keys (default: $XDG_DATA_HOME/raha or ~/.local/share/raha).")
    var data: String?

    @Option(help: "Public address or name to put in printed access keys (default: this machine's first non-loopback address).")
    var host: String?

    @Option(help: ArgumentHelp("Be a rendezvous for share nodes behind NAT: public ports (e.g. 8388,8443 or 20000-30000) they may ask for over this bridge's Trojan listener.", valueName: "ports"))
    var rendezvous: String?

    @Option(help: "Seconds before an idle connection closes.")
    var idleTimeout: Int64 = 300

    @Flag(help: "Print only the key text, no QR code.")
    var noQR = false

    @OptionGroup var serving: ServingOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        ConnectionGate.raiseDescriptorLimit()
        var keys: [ShadowsocksKey] = []
        var trojanKeys: [TrojanKey] = []
        var dnsSpecs: [(zone: DNSName, address: SocketAddress)] = []
        for (index, text) in listeners.enumerated() {
            do {
                if text.lowercased().hasPrefix("dns://") {
                    dnsSpecs.append(try Self.dnsListener(text))
                } else if text.lowercased().hasPrefix("trojan://") {
                    trojanKeys.append(try TrojanKey(parsing: text))
                } else {
                    keys.append(try ShadowsocksKey(parsing: text))
                }
            } catch { throw UsageFailure("listener \(index + 1): \(error)") }
        }
        let directory = DataDirectory(path: data ?? DataDirectory.defaultPath)
        if keys.isEmpty && trojanKeys.isEmpty && dnsSpecs.isEmpty {
            do {
                let (key, created) = try DefaultListener.loadOrCreate(in: directory)
                if created { print("Made a new bridge key in \(directory.path)/\(DefaultListener.fileName)") }
                keys.append(key)
            } catch { throw UsageFailure("\(error)") }
        }
        let advertised = host ?? primaryAddress() ?? "127.0.0.1"
        let trojanListeners = try trojanKeys.map { try trojanListener($0, advertised: advertised, directory: directory) }
        var dnsListeners: [DNSTunnelListener] = []
        if !dnsSpecs.isEmpty {
            do {
                let (keyPair, created) = try DNSTunnelIdentity.loadOrCreate(in: directory)
                if created { print("Made a new DNS tunnel key in \(directory.path)/\(DNSTunnelIdentity.fileName)") }
                dnsListeners = dnsSpecs.map { DNSTunnelListener(zone: $0.zone, address: $0.address, keyPair: keyPair) }
            } catch { throw UsageFailure("\(error)") }
        }

        let logger = logging.makeLogger(label: "raha.bridge")
        var rendezvousTable: RendezvousTable?
        if let rendezvous {
            guard trojanListeners.contains(where: { $0.key.tls }) else {
                throw UsageFailure("--rendezvous: share nodes reach a rendezvous over Trojan with TLS: add a listener such as 'trojan://PASSWORD@0.0.0.0:443?sni=NAME'")
            }
            do { rendezvousTable = RendezvousTable(ports: try Rendezvous.parsePorts(rendezvous), logger: logger) } catch { throw UsageFailure("--rendezvous: \(error)") }
        }
        let bridge = Bridge(
            configuration: .init(listeners: keys, trojanListeners: trojanListeners, dnsListeners: dnsListeners, policy: serving.policy,
                                 idleTimeout: .seconds(idleTimeout), handshakeTimeout: .seconds(serving.handshakeTimeout),
                                 pendingPerSource: serving.pendingPerSource, rendezvous: rendezvousTable, onward: try serving.onward()),
            group: serving.eventLoops(), threadPool: NIOThreadPool.singleton, logger: logger)
        do { try await bridge.start() } catch { throw UsageFailure("cannot listen: \(error)") }

        for (key, bound) in zip(keys, bridge.boundAddresses) {
            let server = try shownServer(listening: key.server, bound: bound, advertised: advertised)
            let shown = try ShadowsocksKey(method: key.method, password: key.password, server: server, prefix: key.prefix, tag: key.tag)
            print("Bridge listening on \(listening(key.server, bound)) (TCP and UDP), \(key.method.rawValue)")
            print("Access key: paste it into `raha connect`, or scan or paste it into the Outline app:")
            printAccessKey(shown.uri, qr: !noQR)
        }
        for (listener, bound) in zip(trojanListeners, bridge.trojanBoundAddresses) {
            var shown = listener.key
            shown.server = try shownServer(listening: listener.key.server, bound: bound, advertised: advertised)
            if let identity = listener.identity, identity.selfSigned { shown.pinnedCertificateSHA256 = identity.fingerprint }
            // Raha clients multiplex streams; other apps ignore the parameter.
            shown.mux = true
            let mode = listener.key.isWebSocket ? "WebSocket" : "TCP"
            print("Bridge listening on \(listening(listener.key.server, bound)) (Trojan over \(listener.key.tls ? "TLS, " : "plain ")\(mode))")
            if listener.key.tls {
                print("Access key: paste it into `raha connect`, or into v2rayNG, Hiddify or Shadowrocket:")
            } else {
                print("Access key (for the hop behind your TLS front: give clients the front's address with security=tls):")
            }
            printAccessKey(shown.uri, qr: !noQR)
            if listener.identity?.selfSigned == true {
                print("(The certificate is self-signed and the key pins it with pin=. Apps that ignore pin= need allowInsecure=1, which lets anyone on the path read the traffic: give them a real certificate with --cert/--key instead.)")
            }
        }
        for (listener, bound) in zip(dnsListeners, bridge.dnsBoundAddresses) {
            let key = try DNSTunnelKey(zone: listener.zone, publicKey: listener.keyPair.publicKey)
            print("Bridge answering for \(listener.zone.displayText) on \(bound.ipAddress ?? "?"):\(bound.port ?? 0) (DNS tunnel, UDP and TCP)")
            print("Access key: paste it into `raha connect` (add &resolver=udp://IP:53 to name a resolver; default: the system's):")
            printAccessKey(key.text, qr: !noQR)
        }
        if let via = serving.via { print("Relay chain: every stream goes on through \(describeAccessKey(try AccessKey(via)))") }
        if let rendezvous {
            print("Rendezvous: share nodes behind NAT may open ports \(rendezvous) here. Give a sharer the Trojan key above: raha share --rendezvous 'trojan://…'")
        }
        if host == nil && !(keys.isEmpty && trojanListeners.isEmpty) {
            print("(If this machine is behind NAT, run with --host PUBLIC-ADDRESS so the key names an address others can reach.)")
        }
        fflush(stdout)
        while true { try await Task.sleep(for: .seconds(3600)) }
    }

    /// `dns://ZONE@ADDRESS:PORT` (address and port default to 0.0.0.0:53).
    static func dnsListener(_ text: String) throws -> (zone: DNSName, address: SocketAddress) {
        let rest = text.dropFirst("dns://".count)
        let zoneText = rest.prefix { $0 != "@" }
        let addressText = rest.dropFirst(zoneText.count + 1)
        let zone: DNSName
        do { zone = try DNSName(String(zoneText)) } catch {
            throw UsageFailure("dns://ZONE@ADDRESS:PORT: “\(zoneText)” is not a DNS name (\(error))")
        }
        guard !zone.labels.isEmpty else { throw UsageFailure("dns://ZONE@ADDRESS:PORT: give the zone delegated to this machine, e.g. dns://t.example.com@0.0.0.0:53") }
        // The zone must make a usable key (room for data in query names, valid characters).
        do { _ = try DNSTunnelKey(zone: zone, publicKey: [UInt8](repeating: 0, count: 32)) } catch { throw UsageFailure("\(error)") }
        do {
            let endpoint = try Endpoint(parsing: addressText.isEmpty ? "0.0.0.0" : addressText, defaultPort: 53)
            return (zone, try SocketAddress(ipAddress: endpoint.hostText, port: Int(endpoint.port)))
        } catch {
            throw UsageFailure("dns://ZONE@ADDRESS:PORT: “\(addressText)” is not an IP address and port to listen on (\(error))")
        }
    }

    /// The TLS identity and fallback site of one Trojan listener.
    private func trojanListener(_ key: TrojanKey, advertised: String, directory: DataDirectory) throws -> TrojanListener {
        var identity: TLSIdentity?
        if key.tls {
            identity = try serving.identity(name: key.serverName ?? (isWildcard(key.server.hostText) ? advertised : key.server.hostText), in: directory)
        }
        var site: SocketAddress?
        if let fallback {
            do {
                let endpoint = try Endpoint(parsing: fallback)
                site = try SocketAddress.makeAddressResolvingHost(endpoint.hostText, port: Int(endpoint.port))
            } catch { throw UsageFailure("--fallback: \(error) (expected HOST:PORT of a web site, e.g. 127.0.0.1:8080)") }
        }
        return TrojanListener(key: key, identity: identity, fallback: site)
    }

    /// The address to put in a printed key: the public one for a wildcard listener, the port actually bound.
    private func shownServer(listening: Endpoint, bound: SocketAddress, advertised: String) throws -> Endpoint {
        let port = UInt16(bound.port ?? Int(listening.port))
        var server = try Endpoint(parsing: isWildcard(listening.hostText) ? advertised : listening.hostText, defaultPort: port)
        server.port = port
        return server
    }

    private func listening(_ endpoint: Endpoint, _ bound: SocketAddress) -> Endpoint {
        var listening = endpoint
        listening.port = UInt16(bound.port ?? Int(endpoint.port))
        return listening
    }

    private func isWildcard(_ host: String) -> Bool { host == "0.0.0.0" || host == "::" }
}

/// What every serving command (`raha bridge`, `raha share`) takes: its
/// certificate, its exit, its threads.
struct ServingOptions: ParsableArguments {
    @Option(help: "TLS certificate chain (PEM) for Trojan. Default: a self-signed one, pinned in the printed keys.")
    var cert: String?

    @Option(help: "The private key (PEM, mode 0600) that goes with --cert.")
    var key: String?

    @Flag(help: "Allow destinations in private, loopback and link-local ranges (off: the bridge is not a door into its own network).")
    var allowPrivate = false

    @Option(help: ArgumentHelp("Relay chain: streams leave through this access key (ss://, trojan:// or dns://, e.g. of a bridge abroad) instead of directly; names are resolved at the far end.", valueName: "key"))
    var via: String?

    @Option(help: "Event-loop threads (default: one per core).")
    var threads: Int?

    @Option(help: "Seconds a connection has to authenticate; then it is closed like a failed login (a wrong key or garbage closes at the same time).")
    var handshakeTimeout: Int64 = 60

    @Option(help: "Connections one address (an IPv6 /64) may hold before they authenticate; a newer one closes the oldest.")
    var pendingPerSource = 64

    func validate() throws {
        guard (cert == nil) == (key == nil) else { throw ValidationError("--cert and --key go together") }
        guard handshakeTimeout > 0 else { throw ValidationError("--handshake-timeout: give a number of seconds above 0") }
        guard pendingPerSource > 0 else { throw ValidationError("--pending-per-source: give a number above 0") }
    }

    var policy: ExitPolicy { ExitPolicy(allowPrivate: allowPrivate) }

    func eventLoops() -> MultiThreadedEventLoopGroup { MultiThreadedEventLoopGroup(numberOfThreads: threads ?? System.coreCount) }

    /// The dialer of `--via KEY` (a relay chain's next hop), if given.
    func onward() throws -> StreamDialer? {
        guard let via else { return nil }
        do { return try makeDialer(via) } catch { throw UsageFailure("--via: \(error)") }
    }

    /// The certificate given, or the self-signed one for `name` kept in `directory` (made the first time).
    func identity(name: String, in directory: DataDirectory) throws -> TLSIdentity {
        do {
            if let cert, let key { return try TLSIdentity.load(certificateFile: cert, keyFile: key) }
            let (made, created) = try TLSIdentity.loadOrCreateSelfSigned(name: name, in: directory)
            if created { print("Made a self-signed TLS certificate for \(name) in \(directory.path)") }
            return made
        } catch { throw UsageFailure("\(error)") }
    }
}

/// The first up, non-loopback IPv4 address of this machine, if any.
func primaryAddress() -> String? {
    var list: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&list) == 0, let first = list else { return nil }
    defer { freeifaddrs(first) }
    var cursor: UnsafeMutablePointer<ifaddrs>? = first
    while let entry = cursor {
        cursor = entry.pointee.ifa_next
        let flags = Int32(entry.pointee.ifa_flags)
        guard flags & Int32(IFF_UP) != 0, flags & Int32(IFF_LOOPBACK) == 0,
              let addr = entry.pointee.ifa_addr, addr.pointee.sa_family == sa_family_t(AF_INET) else { continue }
        var sin = addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
        var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        guard inet_ntop(AF_INET, &sin.sin_addr, &buffer, socklen_t(buffer.count)) != nil else { continue }
        return String(cString: buffer)
    }
    return nil
}
