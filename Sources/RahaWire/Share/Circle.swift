import Foundation

/// What one invitee may use. Nil means no limit.
public struct ShareLimits: Codable, Sendable, Hashable {
    /// Bytes per second, in each direction separately.
    public var rate: Int64?
    /// Bytes per calendar month (UTC), both directions together.
    public var monthlyQuota: Int64?
    /// Proxied connections open at once (each stream of a multiplexed connection counts).
    public var maxConnections: Int64?

    public init(rate: Int64? = nil, monthlyQuota: Int64? = nil, maxConnections: Int64? = nil) {
        self.rate = rate
        self.monthlyQuota = monthlyQuota
        self.maxConnections = maxConnections
    }

    /// "2 Mbit/s, 10 GB a month, 8 connections", or "no limits".
    public var summary: String {
        var parts: [String] = []
        if let rate { parts.append(Quantity.formatRate(rate)) }
        if let monthlyQuota { parts.append("\(Quantity.formatAmount(monthlyQuota)) a month") }
        if let maxConnections { parts.append("\(maxConnections) connection\(maxConnections == 1 ? "" : "s")") }
        return parts.isEmpty ? "no limits" : parts.joined(separator: ", ")
    }
}

/// A change to limits: each field is left alone (nil), removed, or set.
public struct ShareLimitsChange: Codable, Sendable, Hashable {
    public enum Setting: Codable, Sendable, Hashable {
        case remove
        case set(Int64)
        public var value: Int64? { if case .set(let v) = self { return v } else { return nil } }
    }
    public var rate: Setting?
    public var monthlyQuota: Setting?
    public var maxConnections: Setting?

    public init(rate: Setting? = nil, monthlyQuota: Setting? = nil, maxConnections: Setting? = nil) {
        self.rate = rate
        self.monthlyQuota = monthlyQuota
        self.maxConnections = maxConnections
    }

    public var isEmpty: Bool { rate == nil && monthlyQuota == nil && maxConnections == nil }

    public func applied(to limits: ShareLimits) -> ShareLimits {
        var out = limits
        if let rate { out.rate = rate.value }
        if let monthlyQuota { out.monthlyQuota = monthlyQuota.value }
        if let maxConnections { out.maxConnections = maxConnections.value }
        return out
    }
}

/// Bytes one invitee moved in one calendar month, and when they were last
/// connected. Never where they went.
public struct ShareUsage: Codable, Sendable, Hashable {
    /// "2026-11" (UTC).
    public var month: String
    public var up: Int64 = 0
    public var down: Int64 = 0
    public var lastSeen: Date?

    public init(month: String) { self.month = month }

    public var total: Int64 { up + down }

    public static func month(of date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month], from: date)
        return String(format: "%04d-%02d", parts.year!, parts.month!)
    }
}

/// One person in the circle: their own credentials for every transport, so
/// that one can be cut off without touching the others.
public struct Invitee: Codable, Sendable, Hashable {
    public var name: String
    public var shadowsocksPassword: String
    public var trojanPassword: String
    /// What the invitee's DNS tunnel sends first (base64url of 16 bytes);
    /// nil only in circles saved before share nodes served the tunnel.
    public var dnsID: String?
    public var limits: ShareLimits
    public var invited: Date
    /// Set when revoked: the credentials no longer work.
    public var revoked: Date?
    public var usage: ShareUsage

    public var isActive: Bool { revoked == nil }

    /// True when this month's traffic has reached the quota.
    public func overQuota(at date: Date) -> Bool {
        guard let quota = limits.monthlyQuota else { return false }
        return usage.month == ShareUsage.month(of: date) && usage.total >= quota
    }
}

/// Where a share node listens and what its invites must name.
public struct ShareService: Codable, Sendable, Hashable {
    /// The address or name invitees dial.
    public var host: String
    public var shadowsocksPort: UInt16
    public var trojanPort: UInt16
    /// The name in the Trojan ClientHello (and on a self-signed certificate).
    public var sni: String
    /// SHA-256 of the self-signed certificate; nil when the sharer gave a real one.
    public var pin: [UInt8]?
    /// The node's own address on its local network, for neighbours there
    /// (invites carry it besides `host`); nil when it is the same.
    public var lanHost: String?
    /// `host` is a rendezvous's address (not to be kept once the node runs without it).
    public var hostIsRendezvous: Bool?
    /// Trojan over WebSocket (over TLS): its port and secret path. Nil only
    /// in circles saved before share nodes served it.
    public var webSocketPort: UInt16?
    public var webSocketPath: String?
    /// The DNS tunnel's zone and the node's X25519 public key, when it serves one.
    public var dnsZone: String?
    public var dnsPublicKey: [UInt8]?

    public init(host: String, shadowsocksPort: UInt16, trojanPort: UInt16, sni: String, pin: [UInt8]?, lanHost: String? = nil) {
        self.lanHost = lanHost
        self.host = host
        self.shadowsocksPort = shadowsocksPort
        self.trojanPort = trojanPort
        self.sni = sni
        self.pin = pin
    }

    static let method = ShadowsocksMethod.chacha20IETFPoly1305
}

/// A personal invite: one key per transport, and all of them in one bundle.
public struct ShareInvite: Sendable {
    /// For the Outline app (and `raha connect`).
    public let shadowsocks: ShadowsocksKey
    /// For `raha connect`: pins the certificate, multiplexes streams.
    public let trojan: TrojanKey
    /// For v2rayNG and other apps, which know no pin: with a self-signed
    /// certificate they must skip the check (`allowInsecure=1`).
    public let trojanForApps: TrojanKey
    /// Every key above in one `raha:1.` paste, for `raha connect`.
    public let bundle: AccessBundle
}

/// Why a circle request cannot be done; the text says what to do instead.
public struct ShareError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A share node's circle: where it listens, the total cap, and the people
/// invited. Kept as one JSON file (mode 0600) in the share node's data
/// directory; changed only through `apply`, by the running node or, when
/// it is not running, by the command itself.
public struct Circle: Codable, Sendable {
    public var service: ShareService
    /// Bytes per second, each direction, for all invitees together.
    public var totalRate: Int64?
    public private(set) var invitees: [Invitee] = []

    public init(service: ShareService, totalRate: Int64? = nil) {
        self.service = service
        self.totalRate = totalRate
    }

    public func invitee(named name: String) -> Invitee? {
        invitees.first { $0.name == name }
    }

    /// Invites `name` with fresh credentials. An active invitee is not
    /// invited twice; a revoked one is invited anew (usage so far kept).
    @discardableResult
    public mutating func invite(_ name: String, limits: ShareLimits, now: Date) throws -> Invitee {
        try Self.checkName(name)
        if let index = invitees.firstIndex(where: { $0.name == name }) {
            guard !invitees[index].isActive else {
                throw ShareError("\(name) is already invited: `raha share show \(name)` prints their invite again, `raha share limit \(name)` changes their limits")
            }
            invitees[index].revoked = nil
            invitees[index].invited = now
            invitees[index].limits = limits
            invitees[index].shadowsocksPassword = Self.freshPassword()
            invitees[index].trojanPassword = Self.freshPassword()
            invitees[index].dnsID = Self.freshPassword()
            return invitees[index]
        }
        let invitee = Invitee(name: name, shadowsocksPassword: Self.freshPassword(), trojanPassword: Self.freshPassword(),
                              dnsID: Self.freshPassword(), limits: limits, invited: now, usage: ShareUsage(month: ShareUsage.month(of: now)))
        invitees.append(invitee)
        return invitee
    }

    /// Cuts `name` off: their credentials stop working.
    @discardableResult
    public mutating func revoke(_ name: String, now: Date) throws -> Invitee {
        let index = try activeIndex(name)
        invitees[index].revoked = now
        return invitees[index]
    }

    @discardableResult
    public mutating func changeLimits(of name: String, _ change: ShareLimitsChange) throws -> Invitee {
        let index = try activeIndex(name)
        invitees[index].limits = change.applied(to: invitees[index].limits)
        return invitees[index]
    }

    /// Adds traffic to `name`'s usage, starting a new month's count when the month has changed.
    public mutating func record(_ name: String, up: Int64, down: Int64, seen: Date?) {
        guard let index = invitees.firstIndex(where: { $0.name == name }) else { return }
        let month = ShareUsage.month(of: seen ?? Date())
        if invitees[index].usage.month != month {
            let lastSeen = invitees[index].usage.lastSeen
            invitees[index].usage = ShareUsage(month: month)
            invitees[index].usage.lastSeen = lastSeen
        }
        invitees[index].usage.up += up
        invitees[index].usage.down += down
        if let seen { invitees[index].usage.lastSeen = seen }
    }

    /// The invite of an active invitee. Its bundle also reaches the node on
    /// its local network when the node has an address there of its own.
    public func invite(for invitee: Invitee) throws -> ShareInvite {
        let tag = "Raha share: \(invitee.name)"
        let (shadowsocks, trojan) = try keys(for: invitee, host: service.host, tag: tag)
        var forApps = trojan
        forApps.mux = false
        forApps.pinnedCertificateSHA256 = nil
        forApps.allowInsecure = service.pin != nil
        var members = [trojan.uri, shadowsocks.uri]
        if let port = service.webSocketPort, let path = service.webSocketPath {
            var webSocket = trojan
            webSocket.server.port = port
            webSocket.transport = .webSocket(path: path, host: nil)
            webSocket.tag = tag + " (WebSocket)"
            members.append(webSocket.uri)
        }
        if let lan = service.lanHost, lan != service.host {
            let (lanShadowsocks, lanTrojan) = try keys(for: invitee, host: lan, tag: tag + " (local network)")
            members += [lanTrojan.uri, lanShadowsocks.uri]
        }
        // The DNS tunnel last: the way in when nothing else gets through.
        if let zone = service.dnsZone, let publicKey = service.dnsPublicKey, let id = invitee.dnsID.flatMap({ Base64.decode($0) }) {
            members.append(try DNSTunnelKey(zone: try DNSName(zone), publicKey: publicKey, clientID: id, tag: tag).text)
        }
        return ShareInvite(shadowsocks: shadowsocks, trojan: trojan, trojanForApps: forApps, bundle: try AccessBundle(members: members))
    }

    private func keys(for invitee: Invitee, host: String, tag: String) throws -> (ShadowsocksKey, TrojanKey) {
        let ssServer = try Endpoint(parsing: host, defaultPort: service.shadowsocksPort)
        var trojanServer = ssServer
        trojanServer.port = service.trojanPort
        let shadowsocks = try ShadowsocksKey(method: ShareService.method, password: invitee.shadowsocksPassword, server: ssServer,
                                             prefix: ShadowsocksKey.defaultPrefix(for: ShareService.method), tag: tag)
        // An address is never sent as a server name (TLS has no place for it).
        var sni: String? = service.sni
        if case .domain = (try? Endpoint(parsing: service.sni, defaultPort: 443))?.host {} else { sni = nil }
        let trojan = try TrojanKey(password: invitee.trojanPassword, server: trojanServer, sni: sni,
                                   pinnedCertificateSHA256: service.pin, mux: true, tag: tag)
        return (shadowsocks, trojan)
    }

    private func activeIndex(_ name: String) throws -> Int {
        guard let index = invitees.firstIndex(where: { $0.name == name }) else {
            throw ShareError("nobody called “\(name)” is in the circle: `raha share list` shows who is")
        }
        guard invitees[index].isActive else {
            throw ShareError("\(name) was revoked: `raha share invite \(name)` invites them again with new keys")
        }
        return index
    }

    /// Gives a DNS tunnel ID to invitees of a circle saved before there were any.
    public mutating func giveEveryoneATunnelID() {
        for index in invitees.indices where invitees[index].dnsID == nil {
            invitees[index].dnsID = Self.freshPassword()
        }
    }

    static func checkName(_ name: String) throws {
        guard !name.isEmpty, name.count <= 64, name == name.trimmingCharacters(in: .whitespaces),
              !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw ShareError("a name is 1 to 64 characters with no control characters and no space at either end, e.g. “Maryam” or “uncle Reza”")
        }
    }

    static func freshPassword() -> String { Base64.encode(SecureRandom.bytes(16), urlSafe: true, padded: false) }
}
