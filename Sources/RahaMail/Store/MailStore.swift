import Foundation
import GRDB
import RahaWire

/// The courier's durable state, in one SQLite file (through GRDB): the
/// outbox of mails waiting to be sent, the chunks of envelopes not yet
/// whole, which envelopes were already delivered, how far the mailbox was
/// read, contacts and messages.
///
/// Every step that moves a message is one transaction, committed before
/// anything outside is told (the mail server, the user), so a process
/// killed at any moment loses nothing and, after restart, shows nothing twice:
/// - a mail is deleted from the server only after its chunk is committed,
///   and a chunk of an envelope already delivered is dropped;
/// - a mail stays queued until the server has accepted it; one sent again
///   after a crash is dropped by the receiver as a duplicate.
public final class MailStore: @unchecked Sendable {
    let database: DatabaseQueue

    /// Opens (creating if needed, mode 0600) and migrates the store at `path`.
    public init(path: String) throws {
        let existed = FileManager.default.fileExists(atPath: path)
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        do {
            database = try DatabaseQueue(path: path, configuration: configuration)
        } catch {
            throw MailError(.permanent, "the mail store \(path) cannot be opened (\(error)): check the data directory")
        }
        if !existed { chmod(path, 0o600) }
        try migrate()
    }

    private func migrate() throws {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE outbox (
                  id INTEGER PRIMARY KEY AUTOINCREMENT,
                  message_id TEXT,
                  recipient TEXT NOT NULL,
                  content BLOB NOT NULL,
                  state TEXT NOT NULL DEFAULT 'queued',
                  attempts INTEGER NOT NULL DEFAULT 0,
                  next_attempt REAL NOT NULL,
                  last_error TEXT,
                  created REAL NOT NULL);
                CREATE INDEX outbox_due ON outbox(state, next_attempt);
                CREATE TABLE chunks (
                  envelope_id BLOB NOT NULL, idx INTEGER NOT NULL, count INTEGER NOT NULL, bytes BLOB NOT NULL,
                  received REAL NOT NULL, PRIMARY KEY (envelope_id, idx));
                CREATE TABLE envelopes_done (envelope_id BLOB PRIMARY KEY, finished REAL NOT NULL);
                CREATE TABLE mailbox (uid_validity INTEGER PRIMARY KEY, last_uid INTEGER NOT NULL);
                CREATE TABLE pending_deletes (uid_validity INTEGER NOT NULL, uid INTEGER NOT NULL, PRIMARY KEY (uid_validity, uid));
                CREATE TABLE contacts (
                  name TEXT PRIMARY KEY, address TEXT NOT NULL, identity BLOB NOT NULL UNIQUE, added REAL NOT NULL);
                CREATE TABLE messages (
                  id TEXT PRIMARY KEY, contact TEXT NOT NULL, outgoing INTEGER NOT NULL, body TEXT NOT NULL,
                  state TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
                """)
        }
        migrator.registerMigration("v2 pages") { db in
            try db.execute(sql: """
                CREATE TABLE page_requests (
                  id TEXT PRIMARY KEY, contact TEXT NOT NULL, url TEXT NOT NULL, incoming INTEGER NOT NULL,
                  state TEXT NOT NULL, created REAL NOT NULL);
                CREATE TABLE pages (
                  id TEXT PRIMARY KEY, url TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL, links TEXT NOT NULL,
                  error TEXT, received REAL NOT NULL);
                CREATE INDEX pages_url ON pages(url, received);
                CREATE TABLE usage (contact TEXT NOT NULL, day TEXT NOT NULL, requests INTEGER NOT NULL, bytes INTEGER NOT NULL,
                  PRIMARY KEY (contact, day));
                CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                """)
        }
        migrator.registerMigration("v3 held") { db in
            try db.execute(sql: "CREATE TABLE held (identity BLOB NOT NULL, envelope BLOB NOT NULL, received REAL NOT NULL)")
        }
        try migrator.migrate(database)
    }

    // MARK: Outbox

    public struct OutgoingMail: Hashable, Sendable {
        public var id: Int64
        public var messageID: String?
        public var recipient: String
        public var content: [UInt8]
        public var attempts: Int
    }

    /// Queues mails (in the caller's transaction).
    static func enqueue(_ db: Database, mails: [(recipient: String, content: [UInt8])], messageID: String?, now: Date) throws {
        for mail in mails {
            try db.execute(sql: "INSERT INTO outbox (message_id, recipient, content, next_attempt, created) VALUES (?, ?, ?, ?, ?)",
                           arguments: [messageID, mail.recipient, Data(mail.content), now.timeIntervalSince1970, now.timeIntervalSince1970])
        }
    }

    /// Queued mails whose time has come, oldest first.
    public func dueMails(now: Date, limit: Int = 50) throws -> [OutgoingMail] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM outbox WHERE state = 'queued' AND next_attempt <= ? ORDER BY id LIMIT ?",
                             arguments: [now.timeIntervalSince1970, limit]).map { row in
                OutgoingMail(id: row["id"], messageID: row["message_id"], recipient: row["recipient"],
                             content: Array(row["content"] as Data), attempts: row["attempts"])
            }
        }
    }

    /// Records what the server said about each mail: accepted (and the
    /// message sent when its last mail is), to be retried with backoff, or
    /// failed for good (and the message with it).
    public func record(_ outcomes: [(mail: OutgoingMail, result: Result<Void, MailError>)], now: Date) throws {
        try database.write { db in
            for (mail, result) in outcomes {
                switch result {
                case .success:
                    try db.execute(sql: "UPDATE outbox SET state = 'sent', attempts = attempts + 1, last_error = NULL WHERE id = ?", arguments: [mail.id])
                    if let message = mail.messageID,
                       try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM outbox WHERE message_id = ? AND state != 'sent'", arguments: [message]) == 0 {
                        try db.execute(sql: "UPDATE messages SET state = 'sent', updated = ? WHERE id = ? AND state = 'queued'",
                                       arguments: [now.timeIntervalSince1970, message])
                    }
                case .failure(let error) where error.isRetryable:
                    let delay = Self.backoff(attempts: mail.attempts + 1)
                    try db.execute(sql: "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt = ? WHERE id = ?",
                                   arguments: [error.reason, now.timeIntervalSince1970 + delay, mail.id])
                case .failure(let error):
                    try db.execute(sql: "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ? WHERE id = ?",
                                   arguments: [error.reason, mail.id])
                    if let message = mail.messageID {
                        try db.execute(sql: "UPDATE messages SET state = 'failed', updated = ? WHERE id = ?", arguments: [now.timeIntervalSince1970, message])
                    }
                }
            }
        }
    }

    /// Seconds before the next try: 30 s doubling to at most an hour, with up to 20% jitter.
    static func backoff(attempts: Int) -> Double {
        let base = min(3600, 30 * pow(2, Double(max(0, attempts - 1))))
        return base * Double.random(in: 0.8...1.0)
    }

    /// Queued mails and the reason of the last failure, for status displays.
    public func queueSummary() throws -> (queued: Int, lastError: String?) {
        try database.read { db in
            (try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM outbox WHERE state = 'queued'") ?? 0,
             try String.fetchOne(db, sql: "SELECT last_error FROM outbox WHERE state = 'queued' AND last_error IS NOT NULL ORDER BY id DESC LIMIT 1"))
        }
    }

    // MARK: Inbox

    /// What became of one received chunk.
    public enum ChunkOutcome: Equatable, Sendable {
        /// Kept; its envelope still misses pieces.
        case stored
        /// The last piece: the envelope was handed to `deliver` in the same transaction.
        case delivered
        /// Its envelope was delivered before: dropped.
        case duplicate
        /// Not usable (its envelope grew too large, or `deliver` refused it): dropped for good.
        case rejected(String)
    }

    /// Takes one chunk that arrived in the mailbox under `uid`: stores it,
    /// and when its envelope is whole hands it to `deliver`, all in one
    /// transaction that also advances the mailbox's read mark and notes the
    /// mail for deletion. Throwing from `deliver` rejects the envelope.
    public func receive(_ chunk: EnvelopeChunk, uid: UInt64, uidValidity: UInt64, maximumEnvelopeSize: Int, now: Date,
                        deliver: (Database, [UInt8]) throws -> Void) throws -> ChunkOutcome {
        try database.write { db in
            try Self.markRead(db, uid: uid, uidValidity: uidValidity)
            try db.execute(sql: "INSERT OR IGNORE INTO pending_deletes (uid_validity, uid) VALUES (?, ?)", arguments: [Int64(uidValidity), Int64(uid)])
            let id = Data(chunk.id)
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM envelopes_done WHERE envelope_id = ?", arguments: [id]) ?? false {
                return .duplicate
            }
            func finish(_ outcome: ChunkOutcome) throws -> ChunkOutcome {
                try db.execute(sql: "DELETE FROM chunks WHERE envelope_id = ?", arguments: [id])
                try db.execute(sql: "INSERT OR IGNORE INTO envelopes_done (envelope_id, finished) VALUES (?, ?)", arguments: [id, now.timeIntervalSince1970])
                return outcome
            }
            if let known = try Int.fetchOne(db, sql: "SELECT count FROM chunks WHERE envelope_id = ? LIMIT 1", arguments: [id]), known != chunk.count {
                return try finish(.rejected("its pieces disagree on how many there are"))
            }
            try db.execute(sql: "INSERT OR IGNORE INTO chunks (envelope_id, idx, count, bytes, received) VALUES (?, ?, ?, ?, ?)",
                           arguments: [id, chunk.index, chunk.count, Data(chunk.bytes), now.timeIntervalSince1970])
            let size = try Int.fetchOne(db, sql: "SELECT SUM(LENGTH(bytes)) FROM chunks WHERE envelope_id = ?", arguments: [id]) ?? 0
            guard size <= maximumEnvelopeSize else { return try finish(.rejected("it is larger than \(maximumEnvelopeSize) bytes")) }
            let pieces = try Data.fetchAll(db, sql: "SELECT bytes FROM chunks WHERE envelope_id = ? ORDER BY idx", arguments: [id])
            guard pieces.count == chunk.count else { return .stored }
            let envelope = pieces.flatMap { Array($0) }
            do {
                try deliver(db, envelope)
            } catch {
                return try finish(.rejected("\(error)"))
            }
            return try finish(.delivered)
        }
    }

    /// The highest UID read in the mailbox with this UIDVALIDITY (0: none).
    public func lastUID(uidValidity: UInt64) throws -> UInt64 {
        try database.read { db in
            UInt64(try Int64.fetchOne(db, sql: "SELECT last_uid FROM mailbox WHERE uid_validity = ?", arguments: [Int64(uidValidity)]) ?? 0)
        }
    }

    /// Marks a mail that is not the courier's as read, so it is not fetched again.
    public func skip(uid: UInt64, uidValidity: UInt64) throws {
        try database.write { db in try Self.markRead(db, uid: uid, uidValidity: uidValidity) }
    }

    /// Moves the mailbox's read mark up to `uid` (never down).
    private static func markRead(_ db: Database, uid: UInt64, uidValidity: UInt64) throws {
        try db.execute(sql: "INSERT INTO mailbox (uid_validity, last_uid) VALUES (?, ?) ON CONFLICT(uid_validity) DO UPDATE SET last_uid = max(last_uid, excluded.last_uid)",
                       arguments: [Int64(uidValidity), Int64(uid)])
    }

    /// Mails whose chunks are stored and may be deleted from the server.
    public func pendingDeletes(uidValidity: UInt64) throws -> [UInt64] {
        try database.read { db in
            try Int64.fetchAll(db, sql: "SELECT uid FROM pending_deletes WHERE uid_validity = ? ORDER BY uid", arguments: [Int64(uidValidity)]).map { UInt64($0) }
        }
    }

    /// The server deleted them (or the mailbox changed): forget them.
    public func deleted(uids: [UInt64], uidValidity: UInt64) throws {
        try database.write { db in
            for uid in uids {
                try db.execute(sql: "DELETE FROM pending_deletes WHERE uid_validity = ? AND uid = ?", arguments: [Int64(uidValidity), Int64(uid)])
            }
            try db.execute(sql: "DELETE FROM pending_deletes WHERE uid_validity != ?", arguments: [Int64(uidValidity)])
        }
    }
}
