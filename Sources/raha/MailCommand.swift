import ArgumentParser
import Foundation
import NIOCore
import RahaBridge
import RahaMail
import RahaQR
import RahaWire

/// `raha mail …`: end-to-end encrypted messaging carried by ordinary mail.
struct MailCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mail",
        abstract: "Encrypted messages over any mail account (for when only mail gets through).",
        discussion: """
        Set up once with your mail account, swap invites with a contact, then send:
          raha mail setup --address me@example.org --smtp mail.example.org:587 --imap mail.example.org:993
          raha mail invite                      # give this to your contact
          raha mail add 'raha-invite://…' --name sara
          raha mail send sara 'salam'
          raha mail watch                       # stay connected: new messages as they come
        Messages are sealed to your contact's key and signed with yours; the mail
        servers see only ordinary mails with an attachment. The password is read
        from --password-file, else $RAHA_MAIL_PASSWORD, else asked for.
        """,
        subcommands: [Setup.self, Invite.self, Add.self, Contacts.self, Send.self, Inbox.self, Watch.self]
    )

    struct Location: ParsableArguments {
        @Option(help: "Data directory (default: as for raha bridge); the mail state is in its mail/ folder.")
        var data: String?

        var directory: String { (data ?? DataDirectory.defaultPath) + "/mail" }

        func messenger() throws -> Messenger {
            do { return try Messenger(directory: directory) } catch { throw UsageFailure("\(error)") }
        }
    }

    struct Setup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Store the mail account (mode 0600) and make your identity if there is none.")

        @Option(help: "Your mail address.") var address: String
        @Option(help: "The login name (default: the address).") var user: String?
        @Option(help: "A file holding the password (else $RAHA_MAIL_PASSWORD, else asked).") var passwordFile: String?
        @Option(help: "Submission server HOST:PORT (587 means STARTTLS, 465 TLS).") var smtp: String
        @Option(help: "IMAP server HOST:PORT (993 means TLS, 143 STARTTLS).") var imap: String
        @Option(help: "Override the SMTP security: tls, starttls or none (none only for a server you trust the path to).") var smtpSecurity: String?
        @Option(help: "Override the IMAP security: tls, starttls or none.") var imapSecurity: String?
        @Option(help: "The name the servers' certificates carry, when the host is an address.") var serverName: String?
        @Option(help: "SHA-256 of the servers' certificate (hex), for servers whose CA this system does not know.") var pin: String?
        @Option(help: "A SOCKS5 proxy HOST:PORT (raha connect's, e.g. 127.0.0.1:1080) to reach the mail servers through when they cannot be reached directly: any live tunnel, the DNS tunnel included.") var proxy: String?
        @Flag(help: "Always reach the mail servers through --proxy.") var proxyOnly = false
        @Option(help: "Subject of the courier's mails.") var subject = MailDisguise.default.subject
        @Option(help: "Text of the courier's mails.") var body = MailDisguise.default.body
        @Option(help: "File name of the courier's attachments.") var attachment = MailDisguise.default.attachmentName
        @OptionGroup var location: Location

        func run() throws {
            if let proxy {
                do { _ = try Endpoint(parsing: proxy, defaultPort: 1080) } catch { throw UsageFailure("--proxy: \(error)") }
            } else if proxyOnly {
                throw UsageFailure("--proxy-only needs --proxy HOST:PORT")
            }
            let password = try readPassword()
            let account = MailAccount(address: address, user: user, password: password,
                                      smtp: try server(smtp, security: smtpSecurity, defaults: [465: .tls, 587: .starttls, 25: .starttls], what: "--smtp"),
                                      imap: try server(imap, security: imapSecurity, defaults: [993: .tls, 143: .starttls], what: "--imap"),
                                      disguise: MailDisguise(subject: subject, body: body, attachmentName: attachment))
            let messenger: Messenger
            do { messenger = try Messenger.setUp(directory: location.directory, account: account) } catch { throw UsageFailure("\(error)") }
            print("Mail account \(address) saved in \(location.directory).")
            print("Your identity: \(messenger.identity.publicIdentity.fingerprint) (compare it with your contacts in person or by voice)")
            print("Your invite, to give to contacts:")
            printAccessKey(messenger.invite.text, qr: false)
        }

        private func readPassword() throws -> String {
            if let passwordFile {
                guard let data = FileManager.default.contents(atPath: passwordFile) else { throw UsageFailure("--password-file: cannot read \(passwordFile)") }
                return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .newlines)
            }
            if let password = ProcessInfo.processInfo.environment["RAHA_MAIL_PASSWORD"], !password.isEmpty { return password }
            if isatty(0) != 0, let typed = getpass("Mail password for \(address): ") { return String(cString: typed) }
            guard let line = readLine(strippingNewline: true), !line.isEmpty else {
                throw UsageFailure("no password: give --password-file FILE, set RAHA_MAIL_PASSWORD, or type it when asked")
            }
            return line
        }

        private func server(_ text: String, security: String?, defaults: [Int: MailServer.Security], what: String) throws -> MailServer {
            let endpoint: Endpoint
            do { endpoint = try Endpoint(parsing: text, defaultPort: 0) } catch { throw UsageFailure("\(what): \(error)") }
            guard endpoint.port != 0 else { throw UsageFailure("\(what) \(text): give the port too, e.g. \(text):\(defaults.keys.sorted().last!)") }
            let chosen: MailServer.Security
            if let security {
                guard let named = MailServer.Security(rawValue: security.lowercased()) else {
                    throw UsageFailure("\(what)-security \(security): use tls, starttls or none")
                }
                chosen = named
            } else {
                guard let known = defaults[Int(endpoint.port)] else {
                    throw UsageFailure("\(what) \(text): port \(endpoint.port) is not a standard one; say how to protect it with \(what)-security tls or starttls")
                }
                chosen = known
            }
            if let pin, MailServer.bytes(hex: pin) == nil { throw UsageFailure("--pin must be a SHA-256 in hex (64 digits, colons allowed)") }
            return MailServer(host: endpoint.hostText, port: Int(endpoint.port), security: chosen, serverName: serverName, pin: pin,
                                      proxy: proxy, proxyOnly: proxyOnly)
        }
    }

    struct Invite: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print your invite (text and QR) for a contact to add.")
        @Option(help: "The name your contact sees for you.") var name: String?
        @Flag(help: "Print only the text, no QR code.") var noQR = false
        @Option(help: "Also write the QR code to this PNG file (to send as a picture).") var png: String?
        @OptionGroup var location: Location

        func run() throws {
            let messenger = try location.messenger()
            var invite = messenger.invite
            invite.name = name
            print("Identity \(messenger.identity.publicIdentity.fingerprint)")
            printAccessKey(invite.text, qr: !noQR)
            if let png {
                do {
                    try Data(try QRCode(invite.text).png()).write(to: URL(fileURLWithPath: png))
                } catch { throw UsageFailure("--png \(png): \(error)") }
                print("QR code written to \(png)")
            }
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a contact from their invite.")
        @Argument(help: "The invite (raha-invite://…).") var invite: String
        @Option(help: "Your name for them (default: the invite's).") var name: String?
        @OptionGroup var location: Location

        func run() throws {
            let messenger = try location.messenger()
            do {
                let contact = try messenger.addContact(try MailInvite(parsing: invite), name: name)
                print("Added \(contact.name) <\(contact.address)>, identity \(contact.identity.fingerprint)")
            } catch { throw UsageFailure("\(error)") }
        }
    }

    struct Contacts: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List your contacts.")
        @OptionGroup var location: Location

        func run() throws {
            let contacts = try location.messenger().contacts()
            if contacts.isEmpty { print("No contacts yet: add one with `raha mail add INVITE`.") }
            for contact in contacts { print("\(contact.name) <\(contact.address)> \(contact.identity.fingerprint)") }
        }
    }

    struct Send: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send a message: queued at once, sent now if the server answers, retried later if not.")
        @Argument(help: "The contact's name.") var contact: String
        @Argument(help: "The message.") var text: [String]
        @OptionGroup var location: Location

        func run() async throws {
            let messenger = try location.messenger()
            let body = text.joined(separator: " ")
            guard !body.isEmpty else { throw UsageFailure("the message is empty") }
            let id: String
            do { id = try messenger.send(body, to: contact) } catch { throw UsageFailure("\(error)") }
            let (_, error) = try await messenger.sendDue()
            let state = try messenger.messages(limit: 200).first { $0.id == id }?.state ?? .queued
            if let error, state == .queued {
                print("Queued (not sent yet: \(error.reason)); `raha mail watch` or the next send will retry.")
            } else {
                print("Message to \(contact): \(state.rawValue)")
            }
        }
    }

    struct Inbox: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Fetch new mail, send what waits, and show the latest messages with their status.")
        @Option(help: "How many messages to show.") var limit = 20
        @Flag(help: "Show what is stored without going online.") var offline = false
        @OptionGroup var location: Location

        func run() async throws {
            let messenger = try location.messenger()
            if !offline {
                do {
                    _ = try await messenger.sendDue()
                    try await messenger.receive()
                } catch {
                    print("(offline: \(error))")
                }
            }
            let messages = try messenger.messages(limit: limit)
            if messages.isEmpty { print("No messages.") }
            for message in messages { print(line(message)) }
            for (fingerprint, count) in try messenger.heldSenders() {
                print("\(count) message(s) held from identity \(fingerprint), not a contact yet: add their invite with `raha mail add` to read them")
            }
            let (queued, lastError) = try messenger.store.queueSummary()
            if queued > 0 { print("\(queued) mail(s) waiting to be sent" + (lastError.map { ": \($0)" } ?? "")) }
        }
    }

    struct Watch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stay connected: send what waits, and print messages and deliveries as they come (IMAP IDLE, else polling).")
        @Option(help: "Seconds to wait for new mail in one round.") var wait = 25
        @OptionGroup var location: Location

        func run() async throws {
            lineBufferedOutput()
            let messenger = try location.messenger()
            print("Watching \(messenger.account.address) (Ctrl-C to stop)")
            var states = Dictionary(try messenger.messages(limit: 200).map { ($0.id, $0.state) }, uniquingKeysWith: { a, _ in a })
            var pause = 0
            while true {
                do {
                    _ = try await messenger.sendDue()
                    let arrived = try await messenger.receive(waitingUpTo: .seconds(Int64(wait)))
                    for message in arrived { print(line(message)) }
                    for message in try messenger.messages(limit: 200) where message.outgoing && states[message.id] != message.state {
                        if states[message.id] != nil { print(line(message)) }
                        states[message.id] = message.state
                    }
                    for message in arrived { states[message.id] = message.state }
                    pause = 0
                } catch {
                    pause = min(300, max(5, pause * 2))
                    print("(\(error); trying again in \(pause) s)")
                    try await Task.sleep(nanoseconds: UInt64(pause) * 1_000_000_000)
                }
            }
        }
    }
}

/// "2026-11-21 17:40 → bob: salam (delivered)"
private func line(_ message: MessageRecord) -> String {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.dateFormat = "yyyy-MM-dd HH:mm"
    let when = formatter.string(from: message.created)
    return message.outgoing
        ? "\(when) → \(message.contact): \(message.body) (\(message.state.rawValue))"
        : "\(when) ← \(message.contact): \(message.body)"
}
