import ArgumentParser
import RahaBridge
import RahaQR
import RahaWire

struct KeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "Make and inspect access keys.",
        subcommands: [New.self, Bundle.self, Show.self]
    )

    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a fresh access key (text and QR code).",
            discussion: """
            Examples:
              raha key new --host 203.0.113.7
              raha key new --host bridge.example.org --port 443 --method 2022-blake3-aes-256-gcm
              raha key new --transport trojan --host 203.0.113.7 --port 443 --sni www.example.org
              raha key new --transport trojan --host cdn.example.net --port 443 --ws
              raha key new --transport dns --zone t.example.com
              raha key new --transport dns --zone t.example.com --encoding syllables --label 12
            Keys with a legacy method (the default) work in the Outline apps; they carry an \
            Outline prefix that makes the first packet look like HTTP to DPI. Trojan keys \
            work in v2rayNG, Hiddify and Shadowrocket; give the same key to `raha bridge` \
            (it listens on the key's address) and it prints the key clients use.
            """
        )

        @Option(help: "Transport: shadowsocks, trojan or dns.")
        var transport = "shadowsocks"

        @Option(help: "DNS tunnel: the zone delegated to the bridge (its key pair is made in, or read from, --data).")
        var zone: String?

        @Option(help: "DNS tunnel: the bridge's data directory, where its key pair lives (default: as for raha bridge).")
        var data: String?

        @Option(help: "DNS tunnel: how query names spell the data: base32 (fastest), hex or syllables (lowest entropy, slowest). Any bridge reads all three.")
        var encoding = DNSTunnelShaping.default.encoding.rawValue

        @Option(help: "DNS tunnel: data label length in characters, 8 to 63 (shorter looks more like ordinary names, carries less).")
        var label = DNSTunnelShaping.default.labelLength

        @Option(help: "Trojan: the TLS server name to send (default: --host when it is a name).")
        var sni: String?

        @Flag(help: "Trojan: WebSocket over TLS on a random secret path (passes through nginx and CDNs).")
        var ws = false

        @Option(help: "Shadowsocks cipher: \(ShadowsocksMethod.allCases.map(\.rawValue).joined(separator: ", ")).")
        var method = ShadowsocksMethod.chacha20IETFPoly1305.rawValue

        @Option(help: "Public address or name of the bridge (Shadowsocks and Trojan).")
        var host: String?

        @Option(help: "Port of the bridge (default: a random one).")
        var port: UInt16?

        @Option(help: "A name shown in apps.")
        var tag = "Raha"

        @Flag(help: "Print only the key text, no QR code.")
        var noQR = false

        func run() throws {
            if transport.lowercased() == "dns" { return try dns() }
            guard let host else { throw UsageFailure("--host: give the bridge's public address or name") }
            let port = self.port ?? UInt16.random(in: 20000...60000)
            let server: Endpoint
            do { server = try Endpoint(parsing: host, defaultPort: port) } catch { throw UsageFailure("--host: \(error)") }
            switch transport.lowercased() {
            case "trojan":
                printAccessKey(TrojanKey.generate(server: server, sni: sni, webSocket: ws, tag: tag).uri, qr: !noQR)
            case "shadowsocks", "ss":
                guard sni == nil, !ws else { throw UsageFailure("--sni and --ws are for --transport trojan") }
                try shadowsocks(server: server)
            default:
                throw UsageFailure("--transport \(transport) is not one Raha has: use shadowsocks, trojan or dns")
            }
        }

        /// The bridge's key pair lives in its data directory (made here when
        /// missing), so this must run where the bridge runs.
        private func dns() throws {
            guard let zoneText = zone else { throw UsageFailure("--zone: give the zone delegated to the bridge, e.g. --zone t.example.com") }
            let zone: DNSName
            do { zone = try DNSName(zoneText) } catch { throw UsageFailure("--zone: \(error)") }
            guard let encoding = DNSTunnelEncoding(rawValue: self.encoding.lowercased()) else {
                throw UsageFailure("--encoding \(self.encoding) is not one Raha has: use \(DNSTunnelEncoding.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let directory = DataDirectory(path: data ?? DataDirectory.defaultPath)
            do {
                let (keyPair, created) = try DNSTunnelIdentity.loadOrCreate(in: directory)
                if created { print("Made a new DNS tunnel key in \(directory.path)/\(DNSTunnelIdentity.fileName)") }
                let shaping = try DNSTunnelShaping(encoding: encoding, labelLength: label)
                let key = try DNSTunnelKey(zone: zone, publicKey: keyPair.publicKey, shaping: shaping, tag: tag)
                printAccessKey(key.text, qr: !noQR)
            } catch { throw UsageFailure("\(error)") }
        }

        private func shadowsocks(server: Endpoint) throws {
            let method: ShadowsocksMethod
            do { method = try ShadowsocksMethod(name: self.method) } catch { throw UsageFailure("\(error)") }
            let key = ShadowsocksKey.generate(method: method, server: server, tag: tag)
            printAccessKey(key.uri, qr: !noQR)
        }
    }

    struct Bundle: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put several access keys into one raha: bundle (one paste, one QR code).",
            discussion: """
            Each input is an access key, a bundle, a file of keys or SIP008 JSON, or an \
            https:// URL of one, as for `raha connect`. Give the bundle to `raha connect`.
            Example:
              raha key bundle 'ss://…' 'trojan://…' --qr
            """
        )

        @Argument(help: "Access keys, bundles, files or URLs.")
        var inputs: [String]

        @Flag(help: "Also print a QR code for the terminal.")
        var qr = false

        func run() async throws {
            let keys = try await expandAccessKeys(inputs)
            let bundle: AccessBundle
            do { bundle = try AccessBundle(members: keys) } catch { throw UsageFailure("\(error)") }
            printAccessKey(bundle.uri, qr: qr)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the access keys in keys, bundles, files or URLs, passwords hidden."
        )

        @Argument(help: "Access keys, bundles, files or URLs.")
        var inputs: [String]

        func run() async throws {
            for (index, key) in try await expandAccessKeys(inputs).enumerated() {
                print("\(index + 1). \(describeAccessKey(try AccessKey(key)))")
            }
        }
    }
}

/// One line about a key for people: scheme, server and transport details, never the password.
func describeAccessKey(_ key: AccessKey) -> String {
    var parts: [String]
    switch key {
    case .shadowsocks(let key):
        parts = ["ss", key.server.description, key.method.rawValue, "password hidden"]
        if !key.prefix.isEmpty { parts.append("prefix \(key.prefix.count) bytes") }
        if let tag = key.tag, !tag.isEmpty { parts.append("“\(tag)”") }
    case .trojan(let key):
        parts = ["trojan", key.server.description, key.tls ? "tls" : "no tls"]
        if case .webSocket(let path, let host) = key.transport {
            parts.append("websocket path \(String(repeating: "•", count: min(8, max(1, path.count - 1))))" + (host.map { " host \($0)" } ?? ""))
        }
        if let sni = key.serverName { parts.append("sni \(sni)") }
        if key.pinnedCertificateSHA256 != nil { parts.append("pinned certificate") }
        if key.allowInsecure { parts.append("certificate not checked") }
        if let fragment = key.fragment { parts.append("fragment \(fragment.lowerBound)-\(fragment.upperBound)") }
        if key.mux { parts.append("mux") }
        parts.append("password hidden")
        if let tag = key.tag, !tag.isEmpty { parts.append("“\(tag)”") }
    case .dns(let key):
        parts = ["dns", "zone \(key.zone.displayText)", "resolver \(describe(key.resolver))"]
        let shaping = key.shaping
        if shaping != .default {
            parts.append("\(shaping.encoding) in labels of \(shaping.labelLength), names of \(shaping.maxNameLength)"
                         + (shaping.queriesPerSecond.map { ", at most \($0) queries/s" } ?? ""))
        }
        if let tag = key.tag, !tag.isEmpty { parts.append("“\(tag)”") }
    }
    return parts.joined(separator: ", ")
}

private func describe(_ resolver: DNSTunnelKey.Resolver) -> String {
    switch resolver {
    case .system: return "the system's"
    case .udp(let endpoint): return "udp \(endpoint)"
    case .tcp(let endpoint): return "tcp \(endpoint)"
    case .dot(let endpoint, _): return "dot \(endpoint)"
    case .doh(let url): return "doh \(url)"
    }
}

func printAccessKey(_ uri: String, qr: Bool) {
    print(uri)
    if qr, let code = try? QRCode(uri) {
        print(code.terminalString)
    }
}
