import Foundation
import NIOConcurrencyHelpers
import NIOCore
import RahaTransport
import RahaWire

/// A request to a share node about its circle, as `raha share …` sends it
/// over the control socket (or applies it to the circle file itself when
/// the node is not running).
public enum ShareRequest: Codable, Sendable {
    case invite(name: String, limits: ShareLimits)
    case show(name: String)
    case list
    case revoke(name: String)
    case limit(name: String, change: ShareLimitsChange)
    /// Bytes per second for all invitees together; nil removes the cap.
    case total(rate: Int64?)
}

/// The node's answer: an error, or the invitee concerned, or the whole circle.
public struct ShareReply: Codable, Sendable {
    public struct Status: Codable, Sendable {
        public var invitee: Invitee
        /// Streams open now; nil when the node is not running.
        public var openStreams: Int?
    }
    public var error: String?
    /// Whether the share node is running (changes took effect at once).
    public var running = false
    public var invitee: Invitee?
    public var service: ShareService?
    public var totalRate: Int64?
    public var circle: [Status]?

    public static func failure(_ text: String) -> ShareReply { ShareReply(error: text) }
}

/// A share node's circle at run time: the circle itself (saved in the data
/// directory), the roster its listeners read, and every invitee's live
/// account. Requests change all three together, so a revoked invitee's
/// credentials stop working and their open connections close at once.
///
/// Every `tickInterval` the total cap (when set) is divided max-min fairly
/// among the invitees using it, each within their own cap; every
/// `recordInterval` the traffic is recorded in the circle and saved.
public final class ShareLedger: @unchecked Sendable {
    public static let fileName = "circle.json"
    public static let tickInterval = TimeAmount.milliseconds(100)
    static let ticksPerRecord = 50

    public let roster = ClientRoster()
    private let total = TotalRate()
    private let directory: DataDirectory
    private let lock = NIOLock()
    // Guarded by `lock`:
    private var circle: Circle
    private var accounts: [String: InviteeAccount] = [:]
    private var ticks = 0
    private var dirty = false
    /// Whether the node is serving (list then shows open streams).
    private var live = false
    private var timer: RepeatedTask?

    public init(circle: Circle, directory: DataDirectory) {
        var circle = circle
        circle.giveEveryoneATunnelID()
        self.circle = circle
        self.directory = directory
        rebuild(now: Date())
    }

    // MARK: The circle file

    /// The circle saved in `directory`; nil when no share node was ever set up there.
    public static func load(from directory: DataDirectory) throws -> Circle? {
        guard let text = try directory.readSecret(fileName) else { return nil }
        do {
            return try decoder.decode(Circle.self, from: Data(text.utf8))
        } catch {
            throw DataDirectory.StorageError(description: "\(directory.path)/\(fileName) is not a readable circle (\(error)): restore it from a backup, or move it away to start a new circle (everyone then needs a new invite)")
        }
    }

    public func save() throws {
        let text = try lock.withLock { () throws -> String in
            dirty = false
            return String(decoding: try Self.encoder.encode(circle), as: UTF8.self)
        }
        try directory.writeSecret(Self.fileName, text)
    }

    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }()
    private static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()

    // MARK: Serving

    public var service: ShareService { lock.withLock { circle.service } }

    /// The account of an invitee whose credentials a listener accepted.
    func account(for clientID: String) -> InviteeAccount? {
        lock.withLock { accounts[clientID] }
    }

    /// Starts the fair-share ticks and periodic recording (a running node).
    public func start(on eventLoop: EventLoop) {
        lock.withLock {
            live = true
            timer = eventLoop.scheduleRepeatedTask(initialDelay: Self.tickInterval, delay: Self.tickInterval) { [self] _ in tick() }
        }
    }

    /// Stops ticking and saves what was counted.
    public func stop() throws {
        lock.withLock {
            timer?.cancel()
            timer = nil
            live = false
        }
        record()
        try save()
    }

    // MARK: Requests

    public func handle(_ request: ShareRequest) -> ShareReply {
        let now = Date()
        do {
            var reply = ShareReply()
            switch request {
            case .invite(let name, let limits):
                reply.invitee = try change { try $0.invite(name, limits: limits, now: now) }
            case .show(let name):
                reply.invitee = try lock.withLock {
                    guard let invitee = circle.invitee(named: name), invitee.isActive else {
                        throw ShareError("nobody called “\(name)” is invited: `raha share invite \(name)` invites them")
                    }
                    return invitee
                }
            case .revoke(let name):
                reply.invitee = try change { try $0.revoke(name, now: now) }
            case .limit(let name, let limitsChange):
                reply.invitee = try change { try $0.changeLimits(of: name, limitsChange) }
            case .total(let rate):
                try change { $0.totalRate = rate }
            case .list:
                record()
                reply.circle = lock.withLock {
                    circle.invitees.map { ShareReply.Status(invitee: $0, openStreams: live ? accounts[$0.name]?.openStreams ?? 0 : nil) }
                }
            }
            lock.withLock {
                reply.service = circle.service
                reply.totalRate = circle.totalRate
                reply.running = live
            }
            if case .list = request {} else { try save() }
            return reply
        } catch {
            return .failure("\(error)")
        }
    }

    /// Applies `body` to the circle, then brings roster and accounts in line.
    @discardableResult
    private func change<T>(_ body: (inout Circle) throws -> T) throws -> T {
        let result = try lock.withLock { try body(&circle) }
        rebuild(now: Date())
        return result
    }

    /// Makes roster and accounts match the circle: revoked invitees lose
    /// their credentials and are cut off, limits take effect at once.
    private func rebuild(now: Date) {
        let (clients, updates) = lock.withLock { () -> ([ClientRoster.Client], [(InviteeAccount, Invitee)]) in
            var clients: [ClientRoster.Client] = []
            var updates: [(InviteeAccount, Invitee)] = []
            for invitee in circle.invitees {
                if let account = accounts[invitee.name] {
                    updates.append((account, invitee))
                } else {
                    accounts[invitee.name] = InviteeAccount(invitee: invitee, total: total, now: now)
                }
                guard invitee.isActive else { continue }
                // The password is random, never empty: the credential cannot fail.
                let credential = try! ShadowsocksCredential(method: .chacha20IETFPoly1305, password: invitee.shadowsocksPassword)
                clients.append(.init(id: invitee.name, shadowsocks: credential, trojanPassword: invitee.trojanPassword,
                                     dnsID: invitee.dnsID.flatMap { Base64.decode($0) }))
            }
            return (clients, updates)
        }
        roster.replace(with: clients)
        for (account, invitee) in updates { account.update(invitee) }
        // A new total cap holds at once; the next tick divides it.
        total.set(lock.withLock { circle.totalRate })
    }

    // MARK: Ticks

    private func tick() {
        divideTotal()
        let due = lock.withLock { () -> Bool in
            ticks += 1
            return ticks % Self.ticksPerRecord == 0
        }
        if due {
            record()
            if lock.withLock({ dirty }) { try? save() }
        }
    }

    /// Moves every account's unrecorded traffic into the circle, and tells
    /// each account this month's total (which starts again at 0 when the
    /// month turns, so a quota reached last month no longer holds).
    func record(at now: Date = Date()) {
        let month = ShareUsage.month(of: now)
        lock.withLock {
            for (name, account) in accounts {
                let (up, down, seen) = account.takeUnrecorded()
                if up > 0 || down > 0 || seen != nil {
                    circle.record(name, up: up, down: down, seen: seen)
                    dirty = true
                }
                let usage = circle.invitee(named: name)?.usage
                account.recorded(thisMonth: usage?.month == month ? usage!.total : 0)
            }
        }
    }

    /// Sets each invitee's pacing: their own cap, or, under a total cap,
    /// their max-min fair share of it (which never exceeds their own cap).
    private func divideTotal() {
        let (total, accounts) = lock.withLock { (circle.totalRate, Array(self.accounts.values)) }
        self.total.set(total)
        let ticks = accounts.map { $0.tick() }
        guard let total else {
            for (account, tick) in zip(accounts, ticks) { account.setRates(up: tick.rate, down: tick.rate) }
            return
        }
        let seconds = Double(Self.tickInterval.nanoseconds) / 1e9
        let caps = ticks.map { $0.rate.map(Double.init) ?? .infinity }
        func shares(_ direction: InviteeAccount.Direction) -> [Int64] {
            let activity = ticks.map { $0.activity[direction.rawValue] }
            // Who is using the link now, and how much they would use: as much as
            // they can get when they were held back, else a margin over what they used.
            let using = accounts.indices.filter { activity[$0].bytes > 0 || activity[$0].heldBack }
            let wants = using.map { index in
                min(caps[index], activity[index].heldBack ? .infinity : Double(activity[index].bytes) / seconds * 1.5 + 65_536)
            }
            // The shares add up to a little under the cap, so each person's own
            // share is what holds them back, not the shared ceiling (where
            // more connections would mean more turns).
            let divided = FairShare.divide(Double(total) * 0.95, among: wants)
            // Someone starting now gets what one more user would.
            let newcomer = Double(total) / Double(using.count + 1)
            var out = caps.map { Int64(min($0, newcomer)) }
            for (slot, index) in using.enumerated() { out[index] = max(Int64(divided[slot]), 1_000) }
            return out
        }
        let up = shares(.up), down = shares(.down)
        for (index, account) in accounts.enumerated() { account.setRates(up: up[index], down: down[index]) }
    }
}
