import Crypto
import Foundation
import RahaWire

/// Which network this machine is on, as an opaque id: a hash of the default
/// route (interface and gateway) and the nameservers, so that nothing
/// written down holds an address.
public enum NetworkIdentity {
    public struct DefaultRoute: Equatable, Sendable {
        public var interface: String
        /// The gateway as the kernel writes it (hex, network byte order).
        public var gateway: String
    }

    /// The default route in `/proc/net/route` text: the first line whose
    /// destination and mask are 00000000, with the lowest metric.
    public static func defaultRoute(procNetRoute text: String) -> DefaultRoute? {
        var best: (route: DefaultRoute, metric: Int)?
        for line in text.split(whereSeparator: \.isNewline).dropFirst() {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            // Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
            guard fields.count >= 8, fields[1] == "00000000", fields[7] == "00000000",
                  let metric = Int(fields[6]) else { continue }
            if best == nil || metric < best!.metric {
                best = (DefaultRoute(interface: String(fields[0]), gateway: String(fields[2])), metric)
            }
        }
        return best?.route
    }

    /// The id for a route and nameservers: 16 hex digits of SHA-256.
    public static func identifier(route: DefaultRoute?, nameservers: [String]) -> String {
        let text = "route=\(route?.interface ?? "-"),\(route?.gateway ?? "-");dns=\(nameservers.joined(separator: ","))"
        return shortHash(text)
    }

    /// This machine's network now (Linux: /proc/net/route and /etc/resolv.conf).
    public static func current() -> String {
        let route = (try? String(contentsOfFile: "/proc/net/route", encoding: .utf8)).flatMap { defaultRoute(procNetRoute: $0) }
        let servers = (try? String(contentsOfFile: ResolvConf.path, encoding: .utf8)).map(ResolvConf.nameservers) ?? []
        return identifier(route: route, nameservers: servers)
    }
}

/// 16 hex digits of the SHA-256 of `text`: an id that does not reveal it.
public func shortHash(_ text: String) -> String {
    SHA256.hash(data: Data(text.utf8)).prefix(8).map { String(format: "%02x", $0) }.joined()
}

/// Remembers, per network, which transport won the last race: a JSON file
/// mapping network ids to transport fingerprints (hashes of the access
/// key text, never the key), written atomically with mode 0600.
public struct PathMemory: Sendable {
    public let file: URL

    /// `directory`/paths.json; the directory is made (mode 0700) on first write.
    public init(directory: URL) {
        file = directory.appendingPathComponent("paths.json")
    }

    /// `$XDG_STATE_HOME/raha`, else `~/.local/state/raha`.
    public static var defaultDirectory: URL {
        let environment = ProcessInfo.processInfo.environment
        if let state = environment["XDG_STATE_HOME"], state.hasPrefix("/") {
            return URL(fileURLWithPath: state).appendingPathComponent("raha")
        }
        let home = environment["HOME"] ?? NSHomeDirectory()
        return URL(fileURLWithPath: home).appendingPathComponent(".local/state/raha")
    }

    /// The fingerprint of an access key: a hash of its text.
    public static func fingerprint(ofKey text: String) -> String {
        shortHash("raha access key\n" + text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    private func load() -> [String: String] {
        guard let data = try? Data(contentsOf: file),
              let map = try? JSONDecoder().decode([String: String].self, from: data) else { return [:] }
        return map
    }

    /// The fingerprint remembered for `network`, if any.
    public func winner(on network: String) -> String? { load()[network] }

    /// Remembers `fingerprint` as the winner on `network`.
    public func remember(_ fingerprint: String, on network: String) throws {
        var map = load()
        guard map[network] != fingerprint else { return }
        map[network] = fingerprint
        let directory = file.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data = try encoder.encode(map)
        // Written to a private temporary file, then renamed over the old one.
        let temporary = directory.appendingPathComponent(".paths.json.\(ProcessInfo.processInfo.processIdentifier).tmp")
        guard FileManager.default.createFile(atPath: temporary.path, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: temporary.path])
        }
        if rename(temporary.path, file.path) != 0 {
            let code = errno
            try? FileManager.default.removeItem(at: temporary)
            throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)
        }
    }
}
