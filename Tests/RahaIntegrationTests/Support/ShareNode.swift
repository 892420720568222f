import Foundation
import RahaWire

/// `raha share` on 127.0.0.1 with a data directory of its own (allowing
/// private destinations, so invitees reach the loopback origin), and the
/// `raha share …` commands that manage its circle.
final class ShareNode: @unchecked Sendable {
    /// One invite as `raha share invite|show` prints it.
    struct Invite {
        let bundle: String
        let shadowsocks: ShadowsocksKey
        /// The key for phone apps (no pin, allowInsecure=1).
        let trojanForApps: TrojanKey
        let text: String
    }

    /// One invitee as `raha share list --json` prints them.
    struct Listed: Decodable {
        var name: String
        var active: Bool
        var overQuota: Bool
        var openStreams: Int?
        var usage: Usage
        struct Usage: Decodable { var up: Int64; var down: Int64; var lastSeen: Date? }
    }

    let data: String
    private(set) var process: ManagedProcess?
    private let extra: [String]

    init(extra: [String] = []) throws {
        data = try Paths.temporaryDirectory("share").path + "/node"
        ProcessRegistry.shared.removeAtExit((data as NSString).deletingLastPathComponent)
        self.extra = extra
        try start()
    }

    /// Starts the node (again), ready once it says where it shares.
    func start() throws {
        let process = try ManagedProcess("raha share", try Paths.rahaBinary(),
                                         ["share", "--data", data, "--host", "127.0.0.1", "--lan", "none", "--allow-private"] + extra)
        self.process = process
        _ = try process.waitForLine(startingWith: "Sharing on 127.0.0.1")
    }

    /// Stops the node with SIGTERM, as a person would (it records usage on the way out).
    func stop() {
        process?.stop()
        process = nil
    }

    /// `raha share ARGUMENTS --data DIR`.
    func run(_ arguments: [String]) throws -> CommandResult {
        try runCommand("raha share \(arguments.first ?? "")", try Paths.rahaBinary(), ["share"] + arguments + ["--data", data])
    }

    /// `raha share invite NAME OPTIONS --no-qr`, expected to succeed.
    func invite(_ name: String, _ options: [String] = []) throws -> Invite {
        try invitePrinted(try run(["invite", name, "--no-qr"] + options), what: "invite \(name)")
    }

    /// `raha share show NAME --no-qr`.
    func show(_ name: String) throws -> Invite {
        try invitePrinted(try run(["show", name, "--no-qr"]), what: "show \(name)")
    }

    private func invitePrinted(_ result: CommandResult, what: String) throws -> Invite {
        guard result.status == 0 else { throw TestFailure("raha share \(what) exited \(result.status): \(result.output)") }
        let lines = result.stdoutText.split(separator: "\n").map(String.init)
        guard let bundle = lines.first(where: { $0.hasPrefix("raha:1.") }),
              let ss = lines.first(where: { $0.hasPrefix("ss://") }),
              let trojan = lines.first(where: { $0.hasPrefix("trojan://") }) else {
            throw TestFailure("raha share \(what) printed no bundle, ss:// and trojan:// keys: \(result.output)")
        }
        return Invite(bundle: bundle, shadowsocks: try ShadowsocksKey(parsing: ss), trojanForApps: try TrojanKey(parsing: trojan), text: result.stdoutText)
    }

    /// `raha share list --json`.
    func list() throws -> [Listed] {
        let result = try run(["list", "--json"])
        guard result.status == 0 else { throw TestFailure("raha share list exited \(result.status): \(result.output)") }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode([Listed].self, from: result.stdout)
    }

    func listed(_ name: String) throws -> Listed {
        guard let entry = try list().first(where: { $0.name == name }) else { throw TestFailure("\(name) is not in `raha share list`") }
        return entry
    }

    /// `raha share ARGUMENTS`, expected to succeed.
    @discardableResult
    func expectSuccess(_ arguments: [String]) throws -> String {
        let result = try run(arguments)
        guard result.status == 0 else { throw TestFailure("raha share \(arguments.joined(separator: " ")) exited \(result.status): \(result.output)") }
        return result.stdoutText
    }

    deinit { process?.stop() }
}

/// A SOCKS5 connection through a local proxy to the origin, kept alive
/// between requests for its small file: a connection that stays open at
/// the bridge, to see what happens to it mid-life.
final class KeptAliveFetch {
    let socket: RawTCP
    private var replySkipped = false

    /// Starts a connection through the proxy on `proxyPort` (the SOCKS5 reply is read with the first response).
    init(proxyPort: UInt16) throws {
        socket = try RawTCP(port: proxyPort)
        let origin = try Origin.shared()
        try socket.send([5, 1, 0])
        _ = try socket.read(exactly: 2)
        try socket.send([5, 1, 0, 1, 127, 0, 0, 1, UInt8(origin.port >> 8), UInt8(origin.port & 0xff)])
    }

    /// Sends one GET for the small file on the open connection: true when
    /// the whole response came back, false when the connection ended instead.
    func fetch() throws -> Bool {
        let origin = try Origin.shared()
        try socket.send("GET /\(Origin.smallName) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        var received: [UInt8] = []
        while true {
            switch socket.receive(timeout: ManagedProcess.hangGuard) {
            case .failure: return false
            case .success(let bytes): received += bytes
            }
            if !replySkipped, received.count >= 10 {
                // The SOCKS5 reply (IPv4 form) comes before the first response.
                guard received[1] == 0 else { return false }
                received.removeFirst(10)
                replySkipped = true
            }
            if let end = received.firstRange(of: Array("\r\n\r\n".utf8)), received.count - end.upperBound >= origin.small.count {
                received = []
                return true
            }
        }
    }
}
