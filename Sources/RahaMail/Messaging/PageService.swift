import Foundation
import GRDB
import RahaText
import RahaWire

/// A page as the text-only browser shows it: the gateway's rendering (or why it failed).
public struct FetchedPage: Hashable, Sendable {
    public var id: String
    public var url: String
    public var title: String
    public var body: String
    public var links: [String]
    public var error: String?
    public var received: Date

    /// What `raha browse` prints: the rendering, or the error.
    public var text: String {
        if let error { return "\(url): \(error)\n" }
        return ReadablePage(title: title, body: body, links: links, isArticle: true).text
    }
}

/// What a gateway allows each contact, and how large a page may be.
public struct GatewayPolicy: Sendable {
    public var requestsPerDay = 300
    /// Rendered bytes sent to one contact in a day.
    public var bytesPerDay = 20 << 20
    /// HTML fetched per page at most.
    public var maximumPageBytes = 5 << 20
    /// Rendered text sent per page at most (the rest is cut, and says so).
    public var maximumTextBytes = 256 << 10
    /// Fetch pages at private, loopback and link-local addresses (tests only).
    public var allowPrivate = false

    public init() {}
}

extension Messenger {
    // MARK: Browsing (inside)

    /// Asks the gateway contact for `url`; the answer comes back as a page (see `page(for:)`).
    @discardableResult
    public func requestPage(_ url: String, via gatewayName: String, now: Date = Date()) throws -> String {
        let id = Hex.encode(SecureRandom.bytes(16))
        try store.database.write { db in
            guard let gateway = try Self.contact(db, named: gatewayName) else {
                throw MailError(.permanent, "no contact named \"\(gatewayName)\": add the gateway's invite with `raha mail add INVITE --name \(gatewayName)`")
            }
            try db.execute(sql: "INSERT INTO page_requests (id, contact, url, incoming, state, created) VALUES (?, ?, ?, 0, 'pending', ?)",
                           arguments: [id, gateway.name, url, now.timeIntervalSince1970])
            try queue(db, Payload(type: "page-request", id: id, url: url), to: gateway, messageID: nil, now: now)
        }
        return id
    }

    /// The answer to a request, once it arrived.
    public func page(for requestID: String) throws -> FetchedPage? {
        try store.database.read { db in try Row.fetchOne(db, sql: "SELECT * FROM pages WHERE id = ?", arguments: [requestID]).map(Self.page) }
    }

    /// The newest answer for `url` received within `maxAge`.
    public func cachedPage(url: String, maxAge: TimeInterval, now: Date = Date()) throws -> FetchedPage? {
        try store.database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM pages WHERE url = ? AND error IS NULL AND received >= ? ORDER BY received DESC LIMIT 1",
                             arguments: [url, now.timeIntervalSince1970 - maxAge]).map(Self.page)
        }
    }

    /// The page shown last (for `raha browse N`), and remembering it.
    public var lastPageID: String? {
        get { try? store.database.read { db in try String.fetchOne(db, sql: "SELECT value FROM settings WHERE key = 'last-page'") } }
    }

    public func showed(_ page: FetchedPage) throws {
        try store.database.write { db in
            try db.execute(sql: "INSERT INTO settings (key, value) VALUES ('last-page', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", arguments: [page.id])
        }
    }

    static func page(_ row: Row) -> FetchedPage {
        let links = (try? JSONDecoder().decode([String].self, from: Data((row["links"] as String).utf8))) ?? []
        return FetchedPage(id: row["id"], url: row["url"], title: row["title"], body: row["body"], links: links, error: row["error"],
                           received: Date(timeIntervalSince1970: row["received"]))
    }

    func receivePage(_ db: Database, _ payload: Payload, from contact: Contact, now: Date) throws {
        // Only answers to requests sent to this contact count.
        guard let url = try String.fetchOne(db, sql: "SELECT url FROM page_requests WHERE id = ? AND contact = ? AND incoming = 0",
                                            arguments: [payload.id, contact.name]) else { return }
        let links = String(decoding: try JSONEncoder().encode(payload.links ?? []), as: UTF8.self)
        try db.execute(sql: "INSERT OR IGNORE INTO pages (id, url, title, body, links, error, received) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       arguments: [payload.id, url, payload.title ?? "", payload.body ?? "", links, payload.error, now.timeIntervalSince1970])
        try db.execute(sql: "UPDATE page_requests SET state = 'done' WHERE id = ?", arguments: [payload.id])
    }

    // MARK: Gateway (outside)

    func receivePageRequest(_ db: Database, _ payload: Payload, from contact: Contact, now: Date) throws {
        guard let url = payload.url else { return }
        try db.execute(sql: "INSERT OR IGNORE INTO page_requests (id, contact, url, incoming, state, created) VALUES (?, ?, ?, 1, 'pending', ?)",
                       arguments: [payload.id, contact.name, url, now.timeIntervalSince1970])
    }

    /// Fetches and answers every pending request from a contact: the page
    /// rendered by `RahaText.Reader`, or an error that says why (a bad URL,
    /// a private address, over quota, the site's failure). Each answer and
    /// the contact's usage are committed together, so a crash means the
    /// page is fetched again, never answered twice.
    @discardableResult
    public func servePendingRequests(policy: GatewayPolicy, now: Date = Date(),
                                     fetch: (URL, Int) async throws -> (body: [UInt8], contentType: String?)) async throws -> Int {
        let pending = try await store.database.read { db in
            try Row.fetchAll(db, sql: "SELECT id, contact, url FROM page_requests WHERE incoming = 1 AND state = 'pending' ORDER BY created")
                .map { (id: $0["id"] as String, contact: $0["contact"] as String, url: $0["url"] as String) }
        }
        let day = String(Int(now.timeIntervalSince1970) / 86_400)
        for request in pending {
            let usage = try await store.database.read { db in
                try Row.fetchOne(db, sql: "SELECT requests, bytes FROM usage WHERE contact = ? AND day = ?", arguments: [request.contact, day])
                    .map { (requests: $0["requests"] as Int, bytes: $0["bytes"] as Int) } ?? (requests: 0, bytes: 0)
            }
            var answer = Payload(type: "page", id: request.id)
            if usage.requests >= policy.requestsPerDay || usage.bytes >= policy.bytesPerDay {
                answer.error = "over today's quota (\(policy.requestsPerDay) pages, \(policy.bytesPerDay >> 20) MB): try again tomorrow"
            } else if let problem = Self.refusal(of: request.url, allowPrivate: policy.allowPrivate) {
                answer.error = problem
            } else {
                do {
                    let url = URL(string: request.url)!
                    let fetched = try await fetch(url, policy.maximumPageBytes)
                    let html = Charset.decode(fetched.body, contentType: fetched.contentType)
                    let page = Reader.read(html: html, url: url)
                    var body = page.body
                    if body.utf8.count > policy.maximumTextBytes {
                        body = String(decoding: Array(body.utf8.prefix(policy.maximumTextBytes)), as: UTF8.self) + "\n[cut: the page is longer than \(policy.maximumTextBytes >> 10) KB of text]"
                    }
                    answer.title = page.title
                    answer.body = body
                    answer.links = page.links
                } catch {
                    answer.error = "could not fetch the page: \(error)"
                }
            }
            let size = (answer.body?.utf8.count ?? 0) + (answer.links ?? []).reduce(0) { $0 + $1.utf8.count }
            let reply = answer
            try await store.database.write { db in
                guard let contact = try Self.contact(db, named: request.contact) else { return }
                try queue(db, reply, to: contact, messageID: nil, now: now)
                try db.execute(sql: """
                    INSERT INTO usage (contact, day, requests, bytes) VALUES (?, ?, 1, ?)
                    ON CONFLICT(contact, day) DO UPDATE SET requests = requests + 1, bytes = bytes + excluded.bytes
                    """, arguments: [request.contact, day, size])
                try db.execute(sql: "UPDATE page_requests SET state = 'done' WHERE id = ?", arguments: [request.id])
            }
        }
        return pending.count
    }

    /// Why a URL is not fetched, or nil: only http and https, and (unless
    /// allowed) not to an address `ExitPolicy` refuses, given literally, or
    /// localhost. Names are checked after resolution, by the fetcher's address filter.
    static func refusal(of text: String, allowPrivate: Bool) -> String? {
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = url.host, !host.isEmpty else {
            return "\(text) is not an http:// or https:// address"
        }
        guard !allowPrivate else { return nil }
        let lowered = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if lowered == "localhost" || lowered.hasSuffix(".localhost") { return "the gateway does not fetch its own machine's pages" }
        if let endpoint = try? Endpoint(parsing: lowered, defaultPort: 80) {
            let isPublic = switch endpoint.host {
            case .ipv4(let b): ExitPolicy.isPublicIPv4(UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3]))
            case .ipv6(let b): ExitPolicy.isPublicIPv6(b)
            case .domain: true
            }
            if !isPublic { return "the gateway does not fetch private or local addresses" }
        }
        return nil
    }
}
