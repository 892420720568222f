import ArgumentParser
import RahaQR
import RahaWire

struct KeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "Make and inspect access keys.",
        subcommands: [New.self]
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
            Keys with a legacy method (the default) work in the Outline apps; they carry an \
            Outline prefix that makes the first packet look like HTTP to DPI. Trojan keys \
            work in v2rayNG, Hiddify and Shadowrocket; give the same key to `raha bridge` \
            (it listens on the key's address) and it prints the key clients use.
            """
        )

        @Option(help: "Transport: shadowsocks or trojan.")
        var transport = "shadowsocks"

        @Option(help: "Trojan: the TLS server name to send (default: --host when it is a name).")
        var sni: String?

        @Flag(help: "Trojan: WebSocket over TLS on a random secret path (passes through nginx and CDNs).")
        var ws = false

        @Option(help: "Shadowsocks cipher: \(ShadowsocksMethod.allCases.map(\.rawValue).joined(separator: ", ")).")
        var method = ShadowsocksMethod.chacha20IETFPoly1305.rawValue

        @Option(help: "Public address or name of the bridge.")
        var host: String

        @Option(help: "Port of the bridge (default: a random one).")
        var port: UInt16?

        @Option(help: "A name shown in apps.")
        var tag = "Raha"

        @Flag(help: "Print only the key text, no QR code.")
        var noQR = false

        func run() throws {
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
                throw UsageFailure("--transport \(transport) is not one Raha has: use shadowsocks or trojan")
            }
        }

        private func shadowsocks(server: Endpoint) throws {
            let method: ShadowsocksMethod
            do { method = try ShadowsocksMethod(name: self.method) } catch { throw UsageFailure("\(error)") }
            let key = ShadowsocksKey.generate(method: method, server: server, tag: tag)
            printAccessKey(key.uri, qr: !noQR)
        }
    }
}

func printAccessKey(_ uri: String, qr: Bool) {
    print(uri)
    if qr, let code = try? QRCode(uri) {
        print(code.terminalString)
    }
}
