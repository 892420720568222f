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
            Keys with a legacy method (the default) work in the Outline apps; they carry an \
            Outline prefix that makes the first packet look like HTTP to DPI.
            """
        )

        @Option(help: "Cipher: \(ShadowsocksMethod.allCases.map(\.rawValue).joined(separator: ", ")).")
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
            let method: ShadowsocksMethod
            do { method = try ShadowsocksMethod(name: self.method) } catch { throw UsageFailure("\(error)") }
            let port = self.port ?? UInt16.random(in: 20000...60000)
            let server: Endpoint
            do { server = try Endpoint(parsing: host, defaultPort: port) } catch { throw UsageFailure("--host: \(error)") }
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
