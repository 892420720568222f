import Foundation
import GRDB
import NIOCore
import RahaWire

/// A mail account the courier uses: the address, the login, and the two servers.
public struct MailAccount: Codable, Hashable, Sendable {
    public var address: String
    public var user: String
    public var password: String
    public var smtp: MailServer
    public var imap: MailServer
    public var disguise: MailDisguise
    /// Envelope bytes per mail at most (base64 makes the mail a third larger).
    public var chunkSize: Int

    public init(address: String, user: String? = nil, password: String, smtp: MailServer, imap: MailServer,
                disguise: MailDisguise = .default, chunkSize: Int = 192 * 1024) {
        self.address = address
        self.user = user ?? address
        self.password = password
        self.smtp = smtp
        self.imap = imap
        self.disguise = disguise
        self.chunkSize = chunkSize
    }
}

/// A person you write to: a name you chose, their address and identity.
public struct Contact: Hashable, Sendable {
    public var name: String
    public var address: String
    public var identity: PublicIdentity
}

/// One message in the history.
public struct MessageRecord: Hashable, Sendable {
    public enum State: String, Sendable {
        /// Outgoing, waiting for the mail server to accept it.
        case queued
        /// Outgoing, accepted by the mail server.
        case sent
        /// Outgoing, and the contact's Raha acknowledged it.
        case delivered
        /// Outgoing, refused for good by the mail server.
        case failed
        /// Incoming.
        case received
    }

    public var id: String
    public var contact: String
    public var outgoing: Bool
    public var body: String
    public var state: State
    public var created: Date
}

/// End-to-end encrypted messaging over ordinary mail: contacts by invite,
/// messages sealed to them, carried by the courier (outbox → SMTP → the
/// contact's mailbox → IMAP → their store), acknowledged back.
///
/// Everything lives in one directory (mode 0700): `account.json` and
/// `identity.key` (0600) and the store `mail.sqlite` (0600).
public final class Messenger: @unchecked Sendable {
    public let directory: String
    public let account: MailAccount
    public let identity: EnvelopeIdentity
    public let store: MailStore
    /// The largest envelope accepted (after decompression: the same).
    public static let maximumEnvelopeSize = 16 << 20

    /// What an envelope carries, as JSON: "text" (a message), "ack" (its
    /// acknowledgement), "page-request" (a URL for a gateway) and "page" (the
    /// gateway's rendering, or an error).
    struct Payload: Codable {
        var type: String
        var id: String
        var body: String?
        var sent: Double?
        var url: String?
        var title: String?
        var links: [String]?
        var error: String?
    }

    /// Opens the messenger of `directory`, made by `setUp`.
    public init(directory: String) throws {
        let accountPath = directory + "/account.json"
        guard let accountData = FileManager.default.contents(atPath: accountPath) else {
            throw MailError(.permanent, "no mail account in \(directory): run `raha mail setup` first")
        }
        try Self.checkPrivate(accountPath)
        do {
            account = try JSONDecoder().decode(MailAccount.self, from: accountData)
        } catch {
            throw MailError(.permanent, "\(accountPath) is damaged (\(error)): run `raha mail setup` again")
        }
        let identityPath = directory + "/identity.key"
        try Self.checkPrivate(identityPath)
        guard let text = FileManager.default.contents(atPath: identityPath),
              let bytes = Base64.decode(String(decoding: text, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)),
              let identity = try? EnvelopeIdentity(storedBytes: bytes) else {
            throw MailError(.permanent, "\(identityPath) is missing or damaged: restore it from a backup, or run `raha mail setup` to make a new identity (contacts must then add your new invite)")
        }
        self.directory = directory
        self.identity = identity
        // Messages and contacts: as private as the keys.
        try Self.checkPrivate(directory + "/mail.sqlite")
        store = try MailStore(path: directory + "/mail.sqlite")
    }

    /// Writes the account (and a new identity when there is none) to `directory`.
    @discardableResult
    public static func setUp(directory: String, account: MailAccount) throws -> Messenger {
        try MailInvite.checkAddress(account.address)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writePrivate(try encoder.encode(account), to: directory + "/account.json")
        let identityPath = directory + "/identity.key"
        if !FileManager.default.fileExists(atPath: identityPath) {
            try writePrivate(Data((Base64.encode(EnvelopeIdentity().storedBytes) + "\n").utf8), to: identityPath)
        }
        return try Messenger(directory: directory)
    }

    /// Refuses a secret file others can read.
    static func checkPrivate(_ path: String) throws {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              let mode = attributes[.posixPermissions] as? Int else { return }
        guard mode & 0o077 == 0 else {
            throw MailError(.security, "\(path) can be read by other users (mode \(String(mode & 0o777, radix: 8))): run `chmod 600 \(path)`")
        }
    }

    static func writePrivate(_ data: Data, to path: String) throws {
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw MailError(.permanent, "cannot write \(path): check the directory's permissions")
        }
        // rename(2) replaces the old file at once: a crash leaves the old or the new, never half of one.
        guard rename(temporary, path) == 0 else {
            throw MailError(.permanent, "cannot write \(path) (\(String(cString: strerror(errno)))): check the directory's permissions")
        }
    }

    // MARK: Contacts

    public var invite: MailInvite {
        // The address was checked at setup.
        try! MailInvite(address: account.address, identity: identity.publicIdentity, name: nil)
    }

    /// Adds the invite's owner under `name` (default: the invite's name, else the address).
    @discardableResult
    public func addContact(_ invite: MailInvite, name: String? = nil) throws -> Contact {
        let contact = Contact(name: name ?? invite.name ?? invite.address, address: invite.address, identity: invite.identity)
        guard contact.identity != identity.publicIdentity else { throw MailError(.permanent, "that invite is your own") }
        try store.database.write { db in
            if let existing = try String.fetchOne(db, sql: "SELECT name FROM contacts WHERE identity = ?", arguments: [Data(contact.identity.bytes)]) {
                throw MailError(.permanent, "that identity is already your contact \"\(existing)\"")
            }
            if try Self.contact(db, named: contact.name) != nil {
                throw MailError(.permanent, "you already have a contact named \"\(contact.name)\": give another with --name")
            }
            try db.execute(sql: "INSERT INTO contacts (name, address, identity, added) VALUES (?, ?, ?, ?)",
                           arguments: [contact.name, contact.address, Data(contact.identity.bytes), Date().timeIntervalSince1970])
            // What they sent before you added them is delivered now.
            let held = try Data.fetchAll(db, sql: "SELECT envelope FROM held WHERE identity = ? ORDER BY rowid", arguments: [Data(contact.identity.bytes)])
            try db.execute(sql: "DELETE FROM held WHERE identity = ?", arguments: [Data(contact.identity.bytes)])
            for envelope in held { _ = try? deliver(db, Array(envelope)) }
        }
        return contact
    }

    /// Envelopes from identities that are not contacts yet, by fingerprint.
    public func heldSenders() throws -> [(fingerprint: String, count: Int)] {
        try store.database.read { db in
            try Row.fetchAll(db, sql: "SELECT identity, COUNT(*) AS n FROM held GROUP BY identity").compactMap { row in
                (try? PublicIdentity(bytes: Array(row["identity"] as Data))).map { ($0.fingerprint, row["n"] as Int) }
            }
        }
    }

    public func contacts() throws -> [Contact] {
        try store.database.read { db in try Self.contacts(db, sql: "SELECT * FROM contacts ORDER BY name") }
    }

    static func contact(_ db: Database, named name: String) throws -> Contact? {
        try contacts(db, sql: "SELECT * FROM contacts WHERE name = ?", arguments: [name]).first
    }

    static func contacts(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> [Contact] {
        try Row.fetchAll(db, sql: sql, arguments: arguments).compactMap { row in
            guard let identity = try? PublicIdentity(bytes: Array(row["identity"] as Data)) else { return nil }
            return Contact(name: row["name"], address: row["address"], identity: identity)
        }
    }

    // MARK: Messages

    /// Seals `text` to the contact and queues its mails; the message is `queued` until the server takes them.
    @discardableResult
    public func send(_ text: String, to contactName: String, now: Date = Date()) throws -> String {
        let id = Hex.encode(SecureRandom.bytes(16))
        try store.database.write { db in
            guard let contact = try Self.contact(db, named: contactName) else {
                let names = try String.fetchAll(db, sql: "SELECT name FROM contacts ORDER BY name")
                throw MailError(.permanent, "no contact named \"\(contactName)\"" + (names.isEmpty ? ": add one with `raha mail add INVITE`" : "; contacts: " + names.joined(separator: ", ")))
            }
            try db.execute(sql: "INSERT INTO messages (id, contact, outgoing, body, state, created, updated) VALUES (?, ?, 1, ?, 'queued', ?, ?)",
                           arguments: [id, contact.name, text, now.timeIntervalSince1970, now.timeIntervalSince1970])
            try queue(db, Payload(type: "text", id: id, body: text, sent: now.timeIntervalSince1970), to: contact, messageID: id, now: now)
        }
        return id
    }

    /// Seals a payload to `contact` and queues its mails (in the caller's transaction).
    func queue(_ db: Database, _ payload: Payload, to contact: Contact, messageID: String?, now: Date) throws {
        let envelope = try Envelope.seal(Array(try JSONEncoder().encode(payload)), from: identity, to: contact.identity)
        let mails = try EnvelopeChunk.split(envelope, size: account.chunkSize).map { chunk in
            (recipient: contact.address,
             content: MailFormat.compose(chunk: chunk.serialized, from: account.address, to: contact.address, disguise: account.disguise, date: now))
        }
        try MailStore.enqueue(db, mails: mails, messageID: messageID, now: now)
    }

    /// The latest `limit` messages, oldest first.
    public func messages(limit: Int = 50) throws -> [MessageRecord] {
        try store.database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM (SELECT * FROM messages ORDER BY created DESC, rowid DESC LIMIT ?) ORDER BY created, rowid",
                             arguments: [limit]).map(Self.record)
        }
    }

    static func record(_ row: Row) -> MessageRecord {
        MessageRecord(id: row["id"], contact: row["contact"], outgoing: row["outgoing"], body: row["body"],
                      state: MessageRecord.State(rawValue: row["state"]) ?? .queued, created: Date(timeIntervalSince1970: row["created"]))
    }

    // MARK: Courier

    /// Sends every queued mail whose time has come, in batches over one
    /// connection each. Returns how many the server took and the last error.
    public func sendDue(now: Date = Date()) async throws -> (sent: Int, error: MailError?) {
        var sent = 0
        var lastError: MailError?
        while true {
            let due = try store.dueMails(now: now)
            guard !due.isEmpty else { break }
            let messages = due.map { SMTPMessage(from: account.address, recipients: [$0.recipient], content: $0.content) }
            let results = await SMTPSender.send(messages, via: account.smtp, credentials: (account.user, account.password))
            var outcomes: [(mail: MailStore.OutgoingMail, result: Result<Void, MailError>)] = []
            for (mail, result) in zip(due, results) {
                switch result {
                case .success(let delivery) where !delivery.accepted.isEmpty:
                    outcomes.append((mail, .success(())))
                    sent += 1
                case .success(let delivery):
                    let error = delivery.refused.values.first.map { SMTPClientMachine.error($0, doing: "RCPT TO") } ?? MailError(.permanent, "no recipient accepted")
                    outcomes.append((mail, .failure(error)))
                    lastError = error
                case .failure(let error):
                    outcomes.append((mail, .failure(error)))
                    lastError = error
                }
            }
            try store.record(outcomes, now: Date())
            if lastError != nil { break }
        }
        return (sent, lastError)
    }

    /// Reads new mail: stores each courier chunk, delivers whole envelopes
    /// (messages from contacts, acknowledgements), then deletes the mails
    /// it took from the server. Returns the messages that arrived.
    @discardableResult
    public func receive(waitingUpTo wait: TimeAmount? = nil) async throws -> [MessageRecord] {
        try await IMAPSession.withSession(server: account.imap, user: account.user, password: account.password) { session in
            var arrived: [MessageRecord] = []
            var waited = false
            while true {
                let (validity, _) = try await session.select()
                let last = try store.lastUID(uidValidity: validity)
                for uid in try await session.uids(after: last) {
                    guard let mail = try await session.fetch(uid: uid) else { continue }
                    guard let bytes = MailFormat.chunk(fromMail: mail), let chunk = try? EnvelopeChunk(parsing: bytes) else {
                        try store.skip(uid: uid, uidValidity: validity)
                        continue
                    }
                    var delivered: [MessageRecord] = []
                    _ = try store.receive(chunk, uid: uid, uidValidity: validity, maximumEnvelopeSize: Self.maximumEnvelopeSize, now: Date()) { db, envelope in
                        delivered = try self.deliver(db, envelope)
                    }
                    arrived += delivered
                }
                let deletable = try store.pendingDeletes(uidValidity: validity)
                if !deletable.isEmpty {
                    try await session.delete(uids: deletable)
                    try store.deleted(uids: deletable, uidValidity: validity)
                }
                guard let wait, arrived.isEmpty, !waited else { return arrived }
                waited = true
                guard try await session.waitForMail(timeout: wait) else { return arrived }
            }
        }
    }

    /// Opens an envelope and acts on it, inside the store's transaction.
    func deliver(_ db: Database, _ envelope: [UInt8]) throws -> [MessageRecord] {
        let (sender, bytes) = try Envelope.open(envelope, with: identity, maxSize: Self.maximumEnvelopeSize)
        guard let contact = try Self.contacts(db, sql: "SELECT * FROM contacts WHERE identity = ?", arguments: [Data(sender.bytes)]).first else {
            // Someone who added your invite before you added theirs: kept (at
            // most 100 from strangers) until you add them, then delivered.
            guard try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM held") ?? 0 < 100 else {
                throw MailError(.permanent, "an envelope from an identity that is not a contact (\(sender.fingerprint)), with 100 already held")
            }
            try db.execute(sql: "INSERT INTO held (identity, envelope, received) VALUES (?, ?, ?)",
                           arguments: [Data(sender.bytes), Data(envelope), Date().timeIntervalSince1970])
            return []
        }
        let payload = try JSONDecoder().decode(Payload.self, from: Data(bytes))
        let now = Date()
        switch payload.type {
        case "text":
            guard let body = payload.body else { return [] }
            let created = payload.sent.map { Date(timeIntervalSince1970: $0) } ?? now
            try db.execute(sql: "INSERT OR IGNORE INTO messages (id, contact, outgoing, body, state, created, updated) VALUES (?, ?, 0, ?, 'received', ?, ?)",
                           arguments: [payload.id, contact.name, body, created.timeIntervalSince1970, now.timeIntervalSince1970])
            let isNew = db.changesCount > 0
            // Acknowledge every copy: an earlier acknowledgement may have been lost.
            try queue(db, Payload(type: "ack", id: payload.id), to: contact, messageID: nil, now: now)
            return isNew ? [MessageRecord(id: payload.id, contact: contact.name, outgoing: false, body: body, state: .received, created: created)] : []
        case "ack":
            try db.execute(sql: "UPDATE messages SET state = 'delivered', updated = ? WHERE id = ? AND outgoing = 1 AND contact = ?",
                           arguments: [now.timeIntervalSince1970, payload.id, contact.name])
            return []
        case "page-request":
            try receivePageRequest(db, payload, from: contact, now: now)
            return []
        case "page":
            try receivePage(db, payload, from: contact, now: now)
            return []
        default:
            return []
        }
    }
}
