import NIOConcurrencyHelpers
import NIOCore
import RahaWire

/// A logged-in IMAP session (RFC 9051 and 3501, the subset a courier needs):
/// select a mailbox, list new messages by UID, fetch them whole, delete them
/// once stored, and wait for new mail with IDLE (RFC 2177) or by polling.
public final class IMAPSession {
    private let socket: MailSocket
    private var parser = IMAPResponseParser()
    private var tagCounter = 0
    /// What the server said it can do (uppercased), after login.
    public private(set) var capabilities: Set<String> = []

    private init(socket: MailSocket) {
        self.socket = socket
    }

    /// Connects, upgrades with STARTTLS when the server asks for it, logs in
    /// (AUTHENTICATE PLAIN, or LOGIN when PLAIN is not offered), runs
    /// `body`, and logs out.
    public static func withSession<T>(server: MailServer, user: String, password: String,
                                      _ body: (IMAPSession) async throws -> T) async throws -> T {
        try await MailSocket.withConnection(to: server) { socket in
            let session = IMAPSession(socket: socket)
            let greeting = try await session.nextResponse()
            switch greeting.status {
            case .ok?, .preauth?: break
            case .bye?: throw MailError(.transient, "the IMAP server turned the connection away (\(greeting.summary)): try again later")
            default: throw MailError.protocolViolation("the IMAP server greeted with \"\(greeting.summary)\"")
            }
            try await session.refreshCapabilities(from: greeting)
            if server.security == .starttls {
                guard session.capabilities.contains("STARTTLS") else {
                    throw MailError(.security, "the IMAP server does not offer STARTTLS, so the password and mail would cross the network in clear: use its TLS port (993) or check the server name")
                }
                _ = try await session.command("STARTTLS")
                try await socket.startTLS()
                session.capabilities = []
                try await session.refreshCapabilities(from: nil)
            }
            if greeting.status != .preauth { try await session.logIn(user: user, password: password, plaintextAllowed: server.security == .none) }
            let result = try await body(session)
            _ = try? await session.command("LOGOUT")
            return result
        }
    }

    // MARK: Mailbox

    /// Selects `mailbox`: its UIDVALIDITY (UIDs mean the same only while it
    /// stays the same) and how many messages it has.
    public func select(_ mailbox: String = "INBOX") async throws -> (uidValidity: UInt64, messages: Int) {
        let responses = try await command("SELECT " + Self.quoted(mailbox))
        var validity: UInt64 = 0
        var exists = 0
        for response in responses {
            if response.code.first?.keyword == "UIDVALIDITY", let value = response.code.dropFirst().first?.number { validity = value }
            if response.data.count == 2, let count = response.data[0].number, response.data[1].keyword == "EXISTS" { exists = Int(count) }
        }
        return (validity, exists)
    }

    /// UIDs of the messages above `uid`, ascending.
    public func uids(after uid: UInt64) async throws -> [UInt64] {
        let responses = try await command("UID SEARCH UID \(uid + 1):*")
        var out: [UInt64] = []
        for response in responses where response.data.first?.keyword == "SEARCH" {
            out += response.data.dropFirst().compactMap(\.number).filter { $0 > uid }
        }
        return out.sorted()
    }

    /// The whole message with this UID (without marking it read), or nil if it is gone.
    public func fetch(uid: UInt64) async throws -> [UInt8]? {
        let responses = try await command("UID FETCH \(uid) (UID BODY.PEEK[])")
        for response in responses {
            guard response.data.count == 3, response.data[1].keyword == "FETCH", case .list(let items) = response.data[2] else { continue }
            var fetchedUID: UInt64?
            var body: [UInt8]?
            var index = 0
            while index + 1 < items.count {
                switch items[index].keyword {
                case "UID"?: fetchedUID = items[index + 1].number
                case "BODY[]"?: body = items[index + 1].bytes
                default: break
                }
                index += 2
            }
            if fetchedUID == uid, let body { return body }
        }
        return nil
    }

    /// Deletes these messages for good (flag \Deleted, then expunge just
    /// them with UIDPLUS, or every deleted message without it).
    public func delete(uids: [UInt64]) async throws {
        guard !uids.isEmpty else { return }
        let set = uids.map(String.init).joined(separator: ",")
        _ = try await command("UID STORE \(set) +FLAGS.SILENT (\\Deleted)")
        _ = try await command(capabilities.contains("UIDPLUS") ? "UID EXPUNGE \(set)" : "EXPUNGE")
    }

    /// Waits up to `timeout` for new mail in the selected mailbox: true when
    /// the server announced a new message. With IDLE the server says so at
    /// once; without it, a NOOP every `pollInterval` asks.
    public func waitForMail(timeout: TimeAmount, pollInterval: TimeAmount = .seconds(2)) async throws -> Bool {
        guard capabilities.contains("IDLE") else {
            let deadline = NIODeadline.now() + timeout
            while true {
                if try await command("NOOP").contains(where: { $0.data.count == 2 && $0.data[1].keyword == "EXISTS" }) { return true }
                let left = deadline - .now()
                guard left > .zero else { return false }
                try await Task.sleep(nanoseconds: UInt64(min(left, pollInterval).nanoseconds))
            }
        }
        let tag = nextTag()
        try await socket.write(Array("\(tag) IDLE\r\n".utf8))
        // DONE goes once: when new mail is announced or at the timeout, whichever is first.
        let done = NIOLockedValueBox(false)
        let timer = socket.scheduleWrite(Array("DONE\r\n".utf8), in: timeout, unless: done)
        var newMail = false
        while true {
            let response = try await nextResponse()
            switch response.kind {
            case .continuation:
                continue
            case .tagged(let completed) where completed == tag:
                guard response.status == .ok else { throw Self.refusal(response, to: "IDLE") }
                return newMail
            case .tagged:
                continue
            case .untagged:
                if response.status == .bye { throw MailError(.transient, "the IMAP server ended the session (\(response.summary))") }
                if response.data.count == 2, response.data[1].keyword == "EXISTS" {
                    newMail = true
                    timer.cancel()
                    if done.withLockedValue({ sent in defer { sent = true }; return !sent }) { try await socket.write(Array("DONE\r\n".utf8)) }
                }
            }
        }
    }

    // MARK: Commands

    /// Sends a command and reads until its completion; returns the untagged
    /// responses in between. NO and BAD throw with the server's words.
    @discardableResult
    func command(_ text: String) async throws -> [IMAPResponse] {
        let tag = nextTag()
        try await socket.write(Array("\(tag) \(text)\r\n".utf8))
        var untagged: [IMAPResponse] = []
        while true {
            let response = try await nextResponse()
            switch response.kind {
            case .tagged(let completed) where completed == tag:
                guard response.status == .ok else { throw Self.refusal(response, to: text.split(separator: " ").prefix(2).joined(separator: " ")) }
                if response.code.first?.keyword == "CAPABILITY" { capabilities = Self.capabilitySet(response.code.dropFirst()) }
                return untagged
            case .tagged:
                continue
            case .continuation:
                throw MailError.protocolViolation("the IMAP server asked for more of a command that has no more (\(response.summary))")
            case .untagged:
                if response.status == .bye && !text.hasPrefix("LOGOUT") {
                    throw MailError(.transient, "the IMAP server ended the session (\(response.summary)): try again later")
                }
                if response.data.first?.keyword == "CAPABILITY" { capabilities = Self.capabilitySet(response.data.dropFirst()) }
                untagged.append(response)
            }
        }
    }

    private func nextResponse() async throws -> IMAPResponse {
        while true {
            if let response = try parser.next() { return response }
            guard var buffer = try await socket.read() else {
                throw MailError(.transient, "the IMAP server closed the connection: try again later")
            }
            parser.feed(buffer.readBytes(length: buffer.readableBytes) ?? [])
        }
    }

    private func nextTag() -> String {
        tagCounter += 1
        return "R\(tagCounter)"
    }

    private func refreshCapabilities(from greeting: IMAPResponse?) async throws {
        if let greeting, greeting.code.first?.keyword == "CAPABILITY" {
            capabilities = Self.capabilitySet(greeting.code.dropFirst())
        } else {
            try await command("CAPABILITY")
        }
    }

    private func logIn(user: String, password: String, plaintextAllowed: Bool) async throws {
        do {
            if capabilities.contains("AUTH=PLAIN") {
                let token = Base64.encode([0] + Array(user.utf8) + [0] + Array(password.utf8))
                if capabilities.contains("SASL-IR") {
                    try await command("AUTHENTICATE PLAIN " + token)
                } else {
                    try await authenticateWithContinuation(token)
                }
            } else if !capabilities.contains("LOGINDISABLED") {
                try await command("LOGIN " + Self.quoted(user) + " " + Self.quoted(password))
            } else {
                throw MailError(.security, plaintextAllowed
                    ? "the IMAP server allows no login on this connection"
                    : "the IMAP server allows no login on this connection: use its TLS port (993) or STARTTLS (143)")
            }
        } catch let error as MailError where error.kind == .permanent {
            throw MailError(.authentication, "the IMAP server refused the account's name or password (\(error.reason)): check them with `raha mail setup`")
        }
        // Servers may offer more once logged in.
        try await command("CAPABILITY")
    }

    private func authenticateWithContinuation(_ token: String) async throws {
        let tag = nextTag()
        try await socket.write(Array("\(tag) AUTHENTICATE PLAIN\r\n".utf8))
        while true {
            let response = try await nextResponse()
            switch response.kind {
            case .continuation:
                try await socket.write(Array((token + "\r\n").utf8))
            case .tagged(let completed) where completed == tag:
                guard response.status == .ok else { throw Self.refusal(response, to: "AUTHENTICATE") }
                return
            default:
                continue
            }
        }
    }

    // MARK: Helpers

    static func refusal(_ response: IMAPResponse, to command: String) -> MailError {
        let transient = response.code.first?.keyword.map { ["UNAVAILABLE", "INUSE", "LIMIT", "SERVERBUG"].contains($0) } ?? false
        return MailError(transient ? .transient : .permanent, "the IMAP server refused \(command) (\(response.summary))")
    }

    static func capabilitySet(_ values: some Sequence<IMAPValue>) -> Set<String> {
        Set(values.compactMap(\.keyword))
    }

    /// A quoted string (RFC 9051): backslash before " and \.
    static func quoted(_ text: String) -> String {
        var out = "\""
        for character in text {
            if character == "\\" || character == "\"" { out.append("\\") }
            out.append(character)
        }
        return out + "\""
    }
}
