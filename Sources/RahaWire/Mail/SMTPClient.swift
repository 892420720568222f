
/// One message to submit: the envelope's reverse path and recipients, and
/// the RFC 5322 message itself (line ends become CRLF when sent).
public struct SMTPMessage: Hashable, Sendable {
    public var from: String
    public var recipients: [String]
    public var content: [UInt8]

    public init(from: String, recipients: [String], content: [UInt8]) {
        self.from = from
        self.recipients = recipients
        self.content = content
    }
}

/// How the connection to the submission server is protected.
public enum SMTPSecurity: Hashable, Sendable {
    /// TLS from the first byte (port 465, RFC 8314).
    case implicitTLS
    /// Plain at first, then STARTTLS before anything else (port 587, RFC 3207);
    /// a server that does not offer it is refused.
    case startTLS
    /// No TLS at all: only for servers on loopback or a link you trust.
    case none
}

/// What the server said about one message.
public struct SMTPDelivery: Hashable, Sendable {
    /// The recipients the server took.
    public var accepted: [String]
    /// The recipients it refused, with its reply.
    public var refused: [String: SMTPReply]
    /// Its reply to the end of the data ("250 2.0.0 Ok: queued as …").
    public var reply: SMTPReply
}

/// The client side of SMTP submission (RFC 5321, 3207, 4954) as a pure state
/// machine: replies in, actions out. It greets with EHLO, upgrades with
/// STARTTLS when asked to, logs in with AUTH PLAIN or LOGIN, then submits
/// each message in turn (MAIL, RCPT for each recipient, DATA with
/// dot-stuffing) and says QUIT. The caller moves the bytes and starts TLS
/// when told to.
public struct SMTPClientMachine: Sendable {
    public enum Action: Hashable, Sendable {
        case send([UInt8])
        /// Start TLS on the connection now, then call `tlsEstablished()`.
        case startTLS
        /// Every message was dealt with: one result each, in order. QUIT has
        /// been sent; the connection may be closed.
        case finished([Result<SMTPDelivery, MailError>])
        /// The session failed before every message was dealt with; the
        /// results so far come with the error. Close the connection.
        case failed(MailError, [Result<SMTPDelivery, MailError>])
    }

    private enum State: Sendable {
        case greeting
        case ehlo
        case startTLS
        case awaitingTLS
        case authPlain
        case authLogin(step: Int)
        case mailFrom
        case recipient(Int)
        case data
        case body
        case reset
        case done
    }

    public let clientName: String
    public let security: SMTPSecurity
    public let credentials: (user: String, password: String)?
    private let messages: [SMTPMessage]
    private var state: State = .greeting
    private var tlsActive: Bool
    private var capabilities: [String: String] = [:]
    private var results: [Result<SMTPDelivery, MailError>] = []
    private var accepted: [String] = []
    private var refused: [String: SMTPReply] = [:]

    /// `clientName` goes in EHLO (a domain, or an address literal such as
    /// "[127.0.0.1]"). With `.implicitTLS` the caller starts TLS before the
    /// greeting.
    public init(clientName: String, security: SMTPSecurity, credentials: (user: String, password: String)?, messages: [SMTPMessage]) {
        self.clientName = clientName
        self.security = security
        self.credentials = credentials
        self.messages = messages
        tlsActive = security == .implicitTLS
    }

    /// The messages dealt with so far, in order.
    public var completed: [Result<SMTPDelivery, MailError>] { results }

    /// The server's extensions from its last EHLO reply, keyword uppercased → parameters.
    public var serverExtensions: [String: String] { capabilities }

    /// The next actions after a server reply.
    public mutating func receive(_ reply: SMTPReply) -> [Action] {
        if reply.code == 421 { return fail(reply, doing: "closing the connection") }
        switch state {
        case .greeting:
            guard reply.code == 220 else { return fail(reply, doing: "greeting") }
            return ehlo()
        case .ehlo:
            guard reply.isPositive else { return fail(reply, doing: "EHLO") }
            capabilities = Self.extensions(of: reply)
            if security == .startTLS && !tlsActive {
                guard capabilities["STARTTLS"] != nil else {
                    return fail(MailError(.security, "the mail server does not offer STARTTLS, so the account's password and mail would cross the network in clear: use its TLS port (465) or check the server name"))
                }
                state = .startTLS
                return [.send(Self.line("STARTTLS"))]
            }
            return authenticate()
        case .startTLS:
            guard reply.code == 220 else { return fail(reply, doing: "STARTTLS") }
            state = .awaitingTLS
            return [.startTLS]
        case .awaitingTLS:
            return fail(MailError.protocolViolation("the mail server sent \"\(reply)\" before TLS started"))
        case .authPlain:
            return authenticated(reply)
        case .authLogin(let step):
            guard step < 2 else { return authenticated(reply) }
            guard reply.code == 334, let credentials else { return authenticated(reply) }
            state = .authLogin(step: step + 1)
            let value = step == 0 ? credentials.user : credentials.password
            return [.send(Self.line(Base64.encode(Array(value.utf8))))]
        case .mailFrom:
            guard reply.isPositive else { return messageFailed(reply, doing: "MAIL FROM") }
            return nextRecipient(0)
        case .recipient(let index):
            let recipient = messages[results.count].recipients[index]
            if reply.isPositive { accepted.append(recipient) } else { refused[recipient] = reply }
            return nextRecipient(index + 1)
        case .data:
            guard reply.code == 354 else { return messageFailed(reply, doing: "DATA") }
            state = .body
            return [.send(Self.dotStuffed(messages[results.count].content))]
        case .body:
            if reply.isPositive {
                results.append(.success(SMTPDelivery(accepted: accepted, refused: refused, reply: reply)))
            } else {
                results.append(.failure(Self.error(reply, doing: "the end of the message")))
            }
            return startMessage()
        case .reset:
            guard reply.isPositive else { return fail(reply, doing: "RSET") }
            return startMessage()
        case .done:
            return []
        }
    }

    /// TLS is up after STARTTLS: greet again (RFC 3207 forgets what was said before).
    public mutating func tlsEstablished() -> [Action] {
        guard case .awaitingTLS = state else { return [] }
        tlsActive = true
        return ehlo()
    }

    /// The connection closed before the session ended.
    public mutating func connectionClosed() -> [Action] {
        if case .done = state { return [] }
        return fail(MailError(.transient, "the mail server closed the connection in the middle of the session: try again later"))
    }

    // MARK: Steps

    private mutating func ehlo() -> [Action] {
        state = .ehlo
        return [.send(Self.line("EHLO \(clientName)"))]
    }

    private mutating func authenticate() -> [Action] {
        guard let credentials else { return startMessage() }
        guard tlsActive || security == .none else {
            return fail(MailError(.security, "refusing to send the password without TLS"))
        }
        let mechanisms = Set((capabilities["AUTH"] ?? "").uppercased().split(separator: " ").map(String.init))
        if mechanisms.contains("PLAIN") {
            state = .authPlain
            let token = [0] + Array(credentials.user.utf8) + [0] + Array(credentials.password.utf8)
            return [.send(Self.line("AUTH PLAIN " + Base64.encode(token)))]
        }
        if mechanisms.contains("LOGIN") {
            state = .authLogin(step: 0)
            return [.send(Self.line("AUTH LOGIN"))]
        }
        let offered = mechanisms.isEmpty ? "no login at all" : "only " + mechanisms.sorted().joined(separator: ", ")
        return fail(MailError(.security, "the mail server offers \(offered) on this connection, and Raha logs in with PLAIN or LOGIN: check the port (submission is 587 or 465)"))
    }

    private mutating func authenticated(_ reply: SMTPReply) -> [Action] {
        guard reply.code == 235 else {
            if reply.code == 535 || reply.code == 534 || reply.code == 530 {
                return fail(MailError(.authentication, "the mail server refused the account's name or password (\(reply)): check them with `raha mail setup`"))
            }
            return fail(reply, doing: "AUTH")
        }
        return startMessage()
    }

    private mutating func startMessage() -> [Action] {
        guard results.count < messages.count else { return quit() }
        let message = messages[results.count]
        accepted = []
        refused = [:]
        state = .mailFrom
        var command = "MAIL FROM:<\(message.from)>"
        // The size as sent: CRLF line ends and dot-stuffing, without the closing ".".
        if capabilities["SIZE"] != nil { command += " SIZE=\(Self.dotStuffed(message.content).count - 3)" }
        return [.send(Self.line(command))]
    }

    private mutating func nextRecipient(_ index: Int) -> [Action] {
        let message = messages[results.count]
        if index < message.recipients.count {
            state = .recipient(index)
            return [.send(Self.line("RCPT TO:<\(message.recipients[index])>"))]
        }
        guard !accepted.isEmpty else {
            let first = message.recipients.first.flatMap { refused[$0] }
            results.append(.failure(first.map { Self.error($0, doing: "RCPT TO") }
                ?? MailError(.permanent, "the message has no recipients")))
            return reset()
        }
        state = .data
        return [.send(Self.line("DATA"))]
    }

    /// The current message failed at MAIL or DATA: note it, reset, go on with the next.
    private mutating func messageFailed(_ reply: SMTPReply, doing command: String) -> [Action] {
        results.append(.failure(Self.error(reply, doing: command)))
        return reset()
    }

    /// RSET after a failed transaction; its reply starts the next message.
    private mutating func reset() -> [Action] {
        guard results.count < messages.count else { return quit() }
        state = .reset
        return [.send(Self.line("RSET"))]
    }

    private mutating func quit() -> [Action] {
        state = .done
        return [.send(Self.line("QUIT")), .finished(results)]
    }

    private mutating func fail(_ reply: SMTPReply, doing command: String) -> [Action] {
        fail(Self.error(reply, doing: command))
    }

    private mutating func fail(_ error: MailError) -> [Action] {
        state = .done
        return [.failed(error, results)]
    }

    // MARK: Wire helpers

    /// The error for a refusal: 4xx transient, 5xx permanent.
    public static func error(_ reply: SMTPReply, doing command: String) -> MailError {
        if reply.isTransient {
            return MailError(.transient, "the mail server refused \(command) for now (\(reply)): it will be tried again")
        }
        if (500..<600).contains(reply.code) {
            return MailError(.permanent, "the mail server refused \(command) (\(reply))")
        }
        return MailError.protocolViolation("the mail server answered \(command) with \"\(reply)\", which SMTP does not allow there")
    }

    /// EHLO reply lines after the first: keyword (uppercased) → the rest.
    static func extensions(of reply: SMTPReply) -> [String: String] {
        var out: [String: String] = [:]
        for line in reply.lines.dropFirst() {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard let keyword = parts.first else { continue }
            out[keyword.uppercased()] = parts.count > 1 ? String(parts[1]) : ""
        }
        return out
    }

    static func line(_ text: String) -> [UInt8] {
        Array(text.utf8) + [0x0D, 0x0A]
    }

    /// The message for DATA: every line end CRLF, a "." doubled at the start
    /// of a line (RFC 5321 section 4.5.2), and the closing ".".
    static func dotStuffed(_ content: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(content.count + content.count / 64 + 5)
        var atLineStart = true
        var index = 0
        while index < content.count {
            let byte = content[index]
            if atLineStart && byte == 0x2E { out.append(0x2E) }
            switch byte {
            case 0x0D where index + 1 < content.count && content[index + 1] == 0x0A:
                out += [0x0D, 0x0A]
                index += 1
                atLineStart = true
            case 0x0D, 0x0A:
                out += [0x0D, 0x0A]
                atLineStart = true
            default:
                out.append(byte)
                atLineStart = false
            }
            index += 1
        }
        if !atLineStart { out += [0x0D, 0x0A] }
        return out + [0x2E, 0x0D, 0x0A]
    }
}
