import Foundation
import GRDB
import Testing
@testable import RahaMail
import RahaWire

@Suite struct MailStoreTests {
    private func store() throws -> (MailStore, String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("raha-store-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return (try MailStore(path: directory + "/mail.sqlite"), directory + "/mail.sqlite")
    }

    @Test func chunksDeliverOnceWhateverTheOrderAndRepeats() throws {
        let (store, path) = try store()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let envelope = Array(repeating: UInt8(5), count: 2500)
        let chunks = try EnvelopeChunk.split(envelope, size: 1000)
        var delivered: [[UInt8]] = []
        var outcomes: [MailStore.ChunkOutcome] = []
        for (uid, chunk) in zip(UInt64(1)..., [chunks[2], chunks[0], chunks[2], chunks[1], chunks[0]]) {
            outcomes.append(try store.receive(chunk, uid: uid, uidValidity: 7, maximumEnvelopeSize: 10_000, now: Date()) { _, bytes in
                delivered.append(bytes)
            })
        }
        #expect(outcomes == [.stored, .stored, .stored, .delivered, .duplicate])
        #expect(delivered == [envelope])
        #expect(try store.lastUID(uidValidity: 7) == 5)
        #expect(try store.pendingDeletes(uidValidity: 7) == [1, 2, 3, 4, 5], "every mail taken may go")
        try store.deleted(uids: [1, 2, 3], uidValidity: 7)
        #expect(try store.pendingDeletes(uidValidity: 7) == [4, 5])
        try store.deleted(uids: [], uidValidity: 8)
        #expect(try store.pendingDeletes(uidValidity: 7).isEmpty, "a new UIDVALIDITY forgets the old mailbox's UIDs")
        try store.skip(uid: 9, uidValidity: 8)
        #expect(try store.lastUID(uidValidity: 8) == 9)
    }

    @Test func envelopesThatCannotBeUsedAreDroppedForGood() throws {
        let (store, path) = try store()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        struct Refused: Error {}
        let single = try EnvelopeChunk.split([1, 2, 3], size: 10)[0]
        #expect(try store.receive(single, uid: 1, uidValidity: 1, maximumEnvelopeSize: 100, now: Date()) { _, _ in throw Refused() } == .rejected("Refused()"))
        #expect(try store.receive(single, uid: 2, uidValidity: 1, maximumEnvelopeSize: 100, now: Date()) { _, _ in } == .duplicate)
        let big = try EnvelopeChunk.split(Array(repeating: 0, count: 300), size: 150)
        guard case .rejected = try store.receive(big[0], uid: 3, uidValidity: 1, maximumEnvelopeSize: 100, now: Date(), deliver: { _, _ in }) else {
            Issue.record("an envelope beyond the size limit was kept")
            return
        }
        let id = Array(repeating: UInt8(4), count: 16)
        _ = try store.receive(EnvelopeChunk(id: id, index: 0, count: 3, bytes: [1]), uid: 4, uidValidity: 1, maximumEnvelopeSize: 100, now: Date()) { _, _ in }
        #expect(try store.receive(EnvelopeChunk(id: id, index: 1, count: 2, bytes: [1]), uid: 5, uidValidity: 1, maximumEnvelopeSize: 100, now: Date()) { _, _ in }
                == .rejected("its pieces disagree on how many there are"))
    }

    @Test func theOutboxRetriesWithBackoffAndGivesUpOnPermanentRefusals() throws {
        let (store, path) = try store()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        let now = Date(timeIntervalSince1970: 1_000_000)
        try store.database.write { db in
            try db.execute(sql: "INSERT INTO messages (id, contact, outgoing, body, state, created, updated) VALUES ('m', 'bob', 1, 'hi', 'queued', 0, 0)")
            try MailStore.enqueue(db, mails: [("b@o.test", [1]), ("b@o.test", [2])], messageID: "m", now: now)
            try MailStore.enqueue(db, mails: [("c@o.test", [3])], messageID: nil, now: now)
        }
        let due = try store.dueMails(now: now)
        #expect(due.map(\.content) == [[1], [2], [3]])
        try store.record([(due[0], .success(())), (due[1], .failure(MailError(.transient, "greylisted"))),
                          (due[2], .failure(MailError(.permanent, "no such user")))], now: now)
        #expect(try store.dueMails(now: now).isEmpty, "the retry waits")
        let later = try store.dueMails(now: now.addingTimeInterval(30))
        #expect(later.map(\.content) == [[2]] && later[0].attempts == 1)
        let summary = try store.queueSummary()
        #expect(summary.queued == 1 && summary.lastError == "greylisted")
        let state = try store.database.read { db in try String.fetchOne(db, sql: "SELECT state FROM messages WHERE id = 'm'") }
        #expect(state == "queued", "a message is sent only when all its mails are")
        try store.record([(later[0], .success(()))], now: now)
        #expect(try store.database.read { db in try String.fetchOne(db, sql: "SELECT state FROM messages WHERE id = 'm'") } == "sent")
        // Backoff: 30 s doubling, at most an hour, 80-100%.
        for (attempts, base) in [(1, 30.0), (2, 60.0), (5, 480.0), (20, 3600.0)] {
            let delay = MailStore.backoff(attempts: attempts)
            #expect(delay >= base * 0.8 && delay <= base, "\(attempts): \(delay)")
        }
    }
}

@Suite struct MailInviteTests {
    @Test func roundTripsAndSaysWhatIsWrong() throws {
        let identity = EnvelopeIdentity().publicIdentity
        let invite = try MailInvite(address: "sara+raha@example.org", identity: identity, name: "Sara ☀")
        #expect(invite.text.hasPrefix("raha-invite://sara+raha@example.org?id="))
        #expect(try MailInvite(parsing: "  " + invite.text + "\n") == invite)
        #expect(try MailInvite(parsing: try MailInvite(address: "a@b.c", identity: identity, name: nil).text).name == nil)
        for (text, mention) in [("https://example.org", "starts with raha-invite://"),
                                ("raha-invite://a@b.c", "id= must be the 64-byte identity"),
                                ("raha-invite://a@b.c?id=AAAA", "id= must be the 64-byte identity"),
                                (invite.text.replacingOccurrences(of: "sara+raha@example.org", with: "nobody"), "is not a mail address")] {
            do {
                _ = try MailInvite(parsing: text)
                Issue.record("parsed \(text)")
            } catch let error as WireError {
                #expect(error.reason.contains(mention), "\(error.reason)")
            }
        }
    }
}

@Suite struct GatewayRefusalTests {
    @Test func onlyPublicHTTPAddressesAreFetched() {
        for url in ["ftp://example.org/x", "file:///etc/passwd", "javascript:alert(1)", "https://"] {
            #expect(Messenger.refusal(of: url, allowPrivate: false)?.contains("is not an http:// or https:// address") == true, "\(url)")
        }
        for url in ["http://127.0.0.1/", "http://10.1.2.3:8080/x", "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data",
                    "http://[::1]/", "http://[fd00::1]/", "http://[::ffff:10.0.0.1]/", "http://localhost:631/", "http://100.64.0.1/"] {
            #expect(Messenger.refusal(of: url, allowPrivate: false) != nil, "\(url)")
            #expect(Messenger.refusal(of: url, allowPrivate: true) == nil, "\(url) with private addresses allowed")
        }
        for url in ["https://example.org/news", "http://93.184.216.34/", "http://[2606:2800:220:1::]/"] {
            #expect(Messenger.refusal(of: url, allowPrivate: false) == nil, "\(url)")
        }
    }
}
