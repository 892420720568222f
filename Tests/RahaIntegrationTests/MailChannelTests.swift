import Foundation
import NIOCore
import NIOPosix
import RahaMail
import RahaTransport
import RahaWire
import Testing

extension RahaIntegration {
    /// The mail channel's clients against Debian's Postfix and Dovecot on
    /// loopback: submission with STARTTLS and with TLS from the start, relay
    /// from domestic.test to outside.test, and IMAP reading, IDLE and
    /// deleting over TLS and STARTTLS.
    @Suite("Mail channel (Postfix and Dovecot)")
    struct MailChannel {
        private static func message(_ token: String, to recipient: String = "bob@outside.test") -> SMTPMessage {
            let body = """
            From: alice@domestic.test
            To: \(recipient)
            Subject: hello \(token)
            Message-ID: <\(token)@domestic.test>

            A line.
            .a line that starts with a dot
            \(token)

            """
            return SMTPMessage(from: "alice@domestic.test", recipients: [recipient], content: Array(body.utf8))
        }

        /// New messages in the account's INBOX, waiting with IDLE until `count` are there (hang guard: 2 minutes).
        private static func waitForMessages(_ count: Int, in session: IMAPSession, servers: MailServers) async throws -> [UInt64] {
            _ = try await session.select()
            for _ in 0..<24 {
                let uids = try await session.uids(after: 0)
                if uids.count >= count { return uids }
                _ = try await session.waitForMail(timeout: .seconds(5))
            }
            throw TestFailure("only \(try await session.uids(after: 0).count) of \(count) messages arrived in 2 minutes.\n\(servers.logs)")
        }

        @Test("Submitted over STARTTLS and over TLS to domestic.test's Postfix, relayed to outside.test, read with IMAP over TLS: every byte of both messages arrives, dots and all; deleted, they are gone")
        func submitRelayAndRead() async throws {
            let servers = try MailServers()
            defer { servers.stop() }
            let pin = servers.certificate.sha256
            let alice = (user: "alice@domestic.test", password: servers.accounts["alice@domestic.test"]!)
            let tokens = ["token-\(UUID().uuidString)", "token-\(UUID().uuidString)"]
            let overSTARTTLS = await SMTPSender.send([Self.message(tokens[0])],
                                                     via: MailServer(host: "127.0.0.1", port: Int(servers.domestic.submissionPort), security: .starttls, pin: pin),
                                                     credentials: alice)
            let overTLS = await SMTPSender.send([Self.message(tokens[1])],
                                                via: MailServer(host: "127.0.0.1", port: Int(servers.domestic.submissionTLSPort), security: .tls, pin: pin),
                                                credentials: alice)
            for result in overSTARTTLS + overTLS {
                guard case .success(let delivery) = result else { Issue.record("not accepted: \(result)\n\(servers.logs)"); return }
                #expect(delivery.accepted == ["bob@outside.test"] && delivery.reply.code == 250)
            }

            let imaps = MailServer(host: "127.0.0.1", port: Int(servers.imapTLSPort), security: .tls, pin: pin)
            try await IMAPSession.withSession(server: imaps, user: "bob@outside.test", password: servers.accounts["bob@outside.test"]!) { session in
                let uids = try await Self.waitForMessages(2, in: session, servers: servers)
                var bodies: [String] = []
                for uid in uids {
                    let body = try #require(try await session.fetch(uid: uid))
                    bodies.append(String(decoding: body, as: UTF8.self))
                }
                for token in tokens {
                    let body = try #require(bodies.first { $0.contains("Subject: hello \(token)") }, "\(bodies)")
                    // As written, with CRLF line ends, the dot-stuffing undone by the server.
                    #expect(body.contains("\r\n\r\nA line.\r\n.a line that starts with a dot\r\n\(token)\r\n"), "\(body)")
                }
                try await session.delete(uids: uids)
                #expect(try await session.uids(after: 0).isEmpty)
            }
        }

        /// A messenger for one of the test accounts, in a fresh directory.
        static func messenger(_ address: String, servers: MailServers, chunkSize: Int = 192 * 1024) throws -> Messenger {
            let directory = try Paths.temporaryDirectory("messenger")
            ProcessRegistry.shared.removeAtExit(directory.path)
            let domain = address.hasSuffix("@domestic.test") ? servers.domestic : servers.outside
            let pin = servers.certificate.sha256
            let account = MailAccount(address: address, password: servers.accounts[address]!,
                                      smtp: .init(host: "127.0.0.1", port: Int(domain.submissionPort), security: .starttls, pin: pin),
                                      imap: .init(host: "127.0.0.1", port: Int(servers.imapTLSPort), security: .tls, pin: pin),
                                      chunkSize: chunkSize)
            return try Messenger.setUp(directory: directory.path + "/mail", account: account)
        }

        /// Receives until `count` messages arrived (hang guard: 24 rounds of up to 5 s).
        static func receive(_ count: Int, _ messenger: Messenger, servers: MailServers) async throws -> [MessageRecord] {
            var arrived: [MessageRecord] = []
            for _ in 0..<24 where arrived.count < count {
                arrived += try await messenger.receive(waitingUpTo: .seconds(5))
            }
            guard arrived.count >= count else { throw TestFailure("\(arrived.count) of \(count) messages arrived.\n\(servers.logs)") }
            return arrived
        }

        @Test("Messaging between domestic.test and outside.test: invites exchanged, a message sealed, split across mails, relayed, reassembled and opened; the acknowledgement makes it delivered; nothing shows twice after a restart")
        func messaging() async throws {
            let servers = try MailServers()
            defer { servers.stop() }
            // Small chunks so the long message takes several mails.
            let alice = try Self.messenger("alice@domestic.test", servers: servers, chunkSize: 2000)
            let bob = try Self.messenger("bob@outside.test", servers: servers)
            try alice.addContact(try MailInvite(parsing: bob.invite.text), name: "bob")
            try bob.addContact(try MailInvite(parsing: alice.invite.text), name: "alice")

            var generator = SystemRandomNumberGenerator()
            let long = (0..<3000).map { _ in String(UInt64.random(in: 0...UInt64.max, using: &generator), radix: 36) }.joined(separator: " ")
            let ids = [try alice.send("salam Bob ☀", to: "bob"), try alice.send(long, to: "bob")]
            #expect(try alice.messages().map(\.state) == [.queued, .queued])
            let (sent, error) = try await alice.sendDue()
            #expect(error == nil && sent > 3, "the long message took several mails: \(sent), \(String(describing: error))")
            #expect(try alice.messages().map(\.state) == [.sent, .sent])

            let arrived = try await Self.receive(2, bob, servers: servers)
            #expect(Set(arrived.map(\.id)) == Set(ids))
            #expect(Set(arrived.map(\.body)) == ["salam Bob ☀", long])
            #expect(arrived.allSatisfy { $0.contact == "alice" && !$0.outgoing && $0.state == .received })

            // Bob's acknowledgements go back; Alice sees both delivered.
            _ = try await bob.sendDue()
            for _ in 0..<24 where try alice.messages().contains(where: { $0.state != .delivered }) {
                _ = try await alice.receive(waitingUpTo: .seconds(5))
            }
            #expect(try alice.messages().map(\.state) == [.delivered, .delivered], "\(servers.logs)")

            // Reopened from disk: the same history, nothing new, nothing twice.
            let reopened = try Messenger(directory: bob.directory)
            #expect(try reopened.messages().count == 2)
            #expect(try await reopened.receive().isEmpty)
            // Bob's mailbox is empty: every courier mail was deleted once stored.
            try await IMAPSession.withSession(server: bob.account.imap, user: "bob@outside.test", password: servers.accounts["bob@outside.test"]!) { session in
                _ = try await session.select()
                #expect(try await session.uids(after: 0).isEmpty)
            }
        }

        @Test("With a server that offers no IDLE the courier polls: the message still arrives while the receiver waits")
        func pollingWithoutIdle() async throws {
            let servers = try MailServers(idle: false)
            defer { servers.stop() }
            let alice = try Self.messenger("alice@domestic.test", servers: servers)
            let bob = try Self.messenger("bob@outside.test", servers: servers)
            try alice.addContact(bob.invite, name: "bob")
            try bob.addContact(alice.invite, name: "alice")
            try await IMAPSession.withSession(server: bob.account.imap, user: "bob@outside.test", password: servers.accounts["bob@outside.test"]!) { session in
                #expect(!session.capabilities.contains("IDLE"), "\(session.capabilities)")
            }
            try alice.send("polled", to: "bob")
            _ = try await alice.sendDue()
            let arrived = try await Self.receive(1, bob, servers: servers)
            #expect(arrived.map(\.body) == ["polled"])
        }

        @Test("A message from someone not yet a contact is held, named by fingerprint, and delivered (and acknowledged) once they are added")
        func strangersAreHeldUntilAdded() async throws {
            let servers = try MailServers()
            defer { servers.stop() }
            let alice = try Self.messenger("alice@domestic.test", servers: servers)
            let bob = try Self.messenger("bob@outside.test", servers: servers)
            try alice.addContact(bob.invite, name: "bob")
            try alice.send("salam, it is Alice", to: "bob")
            _ = try await alice.sendDue()
            for _ in 0..<24 where try bob.heldSenders().isEmpty {
                #expect(try await bob.receive(waitingUpTo: .seconds(5)).isEmpty, "nothing shows from a stranger")
            }
            #expect(try bob.heldSenders().map(\.fingerprint) == [alice.identity.publicIdentity.fingerprint])
            #expect(try bob.messages().isEmpty)
            try bob.addContact(alice.invite, name: "alice")
            #expect(try bob.messages().map(\.body) == ["salam, it is Alice"])
            #expect(try bob.heldSenders().isEmpty)
            _ = try await bob.sendDue()
            for _ in 0..<24 where try alice.messages().first?.state != .delivered {
                _ = try await alice.receive(waitingUpTo: .seconds(5))
            }
            #expect(try alice.messages().first?.state == .delivered)
        }

        @Test("Messages ride the DNS tunnel: Alice's courier reaches the mail servers only through raha connect, whose one key is a dns:// key through unbound to raha bridge; Bob's reply comes back the same way")
        func messagingOverTheDNSTunnel() async throws {
            let servers = try MailServers()
            defer { servers.stop() }
            let running = Processes()
            defer { running.stopAll() }
            let zone = "t.raha.test"
            let bridgePort = try Ports.free()
            let (bridge, keys) = try Peers.bridge(["dns://\(zone)@127.0.0.1:\(bridgePort)"])
            running.add(bridge)
            let unbound = try Unbound(stubZones: [.init(zone: zone, server: "127.0.0.1@\(bridgePort)")])
            defer { unbound.stop() }
            let key = try #require(keys.first) + "&resolver=udp://127.0.0.1:\(unbound.port)"
            let (connect, proxyPort) = try Peers.connect([key])
            running.add(connect)
            #expect(try connect.waitForLine(startingWith: "Using ").contains("DNS tunnel"))

            var alice = try Self.messenger("alice@domestic.test", servers: servers)
            var account = alice.account
            account.smtp.proxy = "127.0.0.1:\(proxyPort)"
            account.smtp.proxyOnly = true
            account.imap.proxy = "127.0.0.1:\(proxyPort)"
            account.imap.proxyOnly = true
            alice = try Messenger.setUp(directory: alice.directory, account: account)
            let bob = try Self.messenger("bob@outside.test", servers: servers)
            try alice.addContact(bob.invite, name: "bob")
            try bob.addContact(alice.invite, name: "alice")

            try alice.send("salam over DNS", to: "bob")
            let (sent, error) = try await alice.sendDue()
            #expect(sent == 1 && error == nil, "\(String(describing: error))\n\(connect.output)")
            let arrived = try await Self.receive(1, bob, servers: servers)
            #expect(arrived.map(\.body) == ["salam over DNS"])
            try bob.send("and back", to: "alice")
            _ = try await bob.sendDue()
            let reply = try await Self.receive(1, alice, servers: servers)
            #expect(reply.map(\.body) == ["and back"])
            for _ in 0..<24 where try alice.messages().first(where: \.outgoing)?.state != .delivered {
                _ = try await alice.receive(waitingUpTo: .seconds(5))
            }
            #expect(try alice.messages().first(where: \.outgoing)?.state == .delivered)
            #expect(!connect.output.contains("127.0.0.1:\(servers.domestic.submissionPort)"), "raha connect logged a destination")
            // Without the tunnel Alice's courier cannot reach her servers at all: it only ever went through it.
            connect.stop()
            try alice.send("no tunnel", to: "bob")
            let (none, failure) = try await alice.sendDue()
            #expect(none == 0 && failure?.reason.contains("could not reach the proxy") == true, "\(String(describing: failure))")
        }

        /// `raha mail ARGUMENTS --data DATA` to its end; its output.
        @discardableResult
        static func mail(_ arguments: [String], data: String, password: String? = nil) throws -> String {
            let process = try ManagedProcess("raha mail \(arguments.first ?? "")", try Paths.rahaBinary(), ["mail"] + arguments + ["--data", data],
                                             environment: password.map { ["RAHA_MAIL_PASSWORD": $0] } ?? [:])
            defer { process.stop() }
            let status = try process.waitForExit()
            guard status == 0 else { throw TestFailure("raha mail \(arguments.joined(separator: " ")) exited \(status):\n\(process.output)") }
            return process.output
        }

        /// Two accounts set up with `raha mail setup` (each in a data directory
        /// of its own), each the other's contact by invite; their directories by name.
        static func pairWithCLI(_ first: (name: String, address: String), _ second: (name: String, address: String),
                                servers: MailServers) throws -> [String: String] {
            var data: [String: String] = [:]
            var invites: [String: String] = [:]
            for (who, address) in [first, second] {
                let domain = address.hasSuffix("@domestic.test") ? servers.domestic : servers.outside
                let directory = try Paths.temporaryDirectory("mail-\(who)")
                ProcessRegistry.shared.removeAtExit(directory.path)
                data[who] = directory.path
                let setup = try mail(["setup", "--address", address, "--smtp", "127.0.0.1:\(domain.submissionPort)", "--smtp-security", "starttls",
                                      "--imap", "127.0.0.1:\(servers.imapTLSPort)", "--imap-security", "tls", "--pin", servers.certificate.sha256],
                                     data: directory.path, password: servers.accounts[address]!)
                #expect(setup.contains("Mail account \(address) saved"), "\(setup)")
                let mode = try FileManager.default.attributesOfItem(atPath: directory.path + "/mail/account.json")[.posixPermissions] as? Int
                #expect(mode == 0o600, "the account file holds a password")
                let png = directory.appendingPathComponent("invite.png").path
                let invite = try mail(["invite", "--no-qr", "--name", who, "--png", png], data: directory.path)
                invites[who] = try #require(invite.split(separator: "\n").first { $0.hasPrefix("raha-invite://") }.map(String.init))
                // The PNG is the same invite, as a phone's scanner reads it.
                let scanned = try runCommand("zbarimg", try Paths.tool("zbarimg", package: "zbar-tools"), ["--raw", "-q", png])
                #expect(scanned.stdoutText.trimmingCharacters(in: .newlines) == invites[who], "\(scanned.output)")
            }
            try mail(["add", invites[second.name]!], data: data[first.name]!)
            try mail(["add", invites[first.name]!], data: data[second.name]!)
            return data
        }

        @Test("raha mail, killed with SIGKILL again and again while sending and while receiving: after restarts every message arrives exactly once and is marked delivered")
        func killedAnyTimeLosesNothing() throws {
            let servers = try MailServers()
            defer { servers.stop() }
            let data = try Self.pairWithCLI(("alice", "alice@domestic.test"), ("bob", "bob@outside.test"), servers: servers)
            #expect(try Self.mail(["contacts"], data: data["alice"]!).contains("bob <bob@outside.test>"))

            // Twelve messages, each `raha mail send` killed at another moment.
            let texts = (1...12).map { "message \($0) " + String(repeating: "x", count: $0 * 500) }
            for (index, text) in texts.enumerated() {
                let process = try ManagedProcess("raha mail send", try Paths.rahaBinary(), ["mail", "send", "bob", text, "--data", data["alice"]!])
                // Killed at once, or 40, 80 … 440 ms later: before the message is queued, after, mid-SMTP or after.
                usleep(UInt32(index * 40_000))
                kill(process.pid, SIGKILL)
                _ = try process.waitForExit()
            }
            let queued = try Self.mail(["inbox", "--offline", "--limit", "50"], data: data["alice"]!)
            // A send killed before its transaction committed queued nothing: send those again.
            for text in texts where !queued.contains("→ bob: \(text) (") {
                try Self.mail(["send", "bob", text], data: data["alice"]!)
            }
            // Bob's receiver is killed mid-round a few times while Alice's sender is killed too.
            for round in 0..<4 {
                let sender = try ManagedProcess("raha mail inbox (alice)", try Paths.rahaBinary(), ["mail", "inbox", "--data", data["alice"]!])
                let receiver = try ManagedProcess("raha mail watch (bob)", try Paths.rahaBinary(), ["mail", "watch", "--wait", "2", "--data", data["bob"]!])
                usleep(UInt32(100_000 + round * 150_000))
                kill(sender.pid, SIGKILL)
                kill(receiver.pid, SIGKILL)
                _ = try sender.waitForExit()
                _ = try receiver.waitForExit()
            }
            // Then left to finish: each side until the other's mail is all in (hang guard: 30 rounds).
            var bobInbox = ""
            for _ in 0..<30 {
                try Self.mail(["inbox"], data: data["alice"]!)
                bobInbox = try Self.mail(["inbox", "--limit", "50"], data: data["bob"]!)
                let aliceView = try Self.mail(["inbox", "--limit", "50"], data: data["alice"]!)
                if texts.allSatisfy({ bobInbox.contains("← alice: \($0)\n") }) && aliceView.components(separatedBy: "(delivered)").count - 1 == texts.count { break }
                usleep(500_000)
            }
            for text in texts {
                #expect(bobInbox.components(separatedBy: "← alice: \(text)\n").count - 1 == 1, "\(text.prefix(12)) shows exactly once:\n\(bobInbox)\n\(servers.logs)")
            }
            let aliceView = try Self.mail(["inbox", "--offline", "--limit", "50"], data: data["alice"]!)
            #expect(aliceView.components(separatedBy: "(delivered)").count - 1 == texts.count, "\(aliceView)")
            #expect(!aliceView.contains("(queued)") && !aliceView.contains("(failed)"))
        }

        @Test("The text-only browser over mail: raha browse asks raha gateway through Postfix and Dovecot, gets the article without its furniture, follows link N, and is held to its quota")
        func browseThroughTheGateway() throws {
            let servers = try MailServers()
            defer { servers.stop() }
            let origin = try Origin.shared()
            let pages = Paths.packageRoot.appendingPathComponent("Tests/RahaTextTests/Pages")
            for name in ["news-article.html", "wiki-page.html"] {
                try? FileManager.default.removeItem(at: origin.directory.appendingPathComponent(name))
                try FileManager.default.copyItem(at: pages.appendingPathComponent(name), to: origin.directory.appendingPathComponent(name))
            }
            let data = try Self.pairWithCLI(("reader", "alice@domestic.test"), ("gateway", "gateway@outside.test"), servers: servers)
            let gateway = try ManagedProcess("raha gateway", try Paths.rahaBinary(),
                                             ["gateway", "--allow-private", "--wait", "2", "--requests-per-day", "3", "--data", data["gateway"]!])
            defer { gateway.stop() }
            _ = try gateway.waitForLine(startingWith: "Gateway gateway@outside.test serving 1 contact")

            func browse(_ arguments: [String]) throws -> (Int32, String) {
                let process = try ManagedProcess("raha browse", try Paths.rahaBinary(), ["browse"] + arguments + ["--timeout", "90", "--data", data["reader"]!])
                defer { process.stop() }
                return (try process.waitForExit(), process.output)
            }
            let article = "http://127.0.0.1:\(origin.port)/news-article.html"
            let (status, shown) = try browse([article])
            #expect(status == 0, "\(shown)\n\(gateway.output)\n\(servers.logs)")
            #expect(shown.hasPrefix("Rivers Return to the Valley After Record Rains\n\n"), "\(shown)")
            #expect(shown.contains("ARTICLE-START") && shown.contains("ARTICLE-END") && !shown.contains("FURNITURE-"), "\(shown)")
            #expect(shown.contains("full water report[1] online") && shown.hasSuffix("[1] http://127.0.0.1:\(origin.port)/reports/water-2026.pdf\n"))

            // The same address again comes from the cache: no second request, so the quota is untouched.
            let (_, again) = try browse([article])
            #expect(again == shown)
            // Link 1 of the last page: the gateway fetches it and says what went wrong (the site has no such file).
            let (_, followed) = try browse(["1"])
            #expect(followed.contains("http://127.0.0.1:\(origin.port)/reports/water-2026.pdf: could not fetch the page") && followed.contains("404"), "\(followed)")
            // Request 2 was that link; request 3 is allowed, request 4 is over the quota of 3 a day.
            let (_, wiki) = try browse(["http://127.0.0.1:\(origin.port)/wiki-page.html"])
            #expect(wiki.hasPrefix("Qanat\n") && wiki.contains("### Maintenance"), "\(wiki)")
            let (_, refused) = try browse(["http://127.0.0.1:\(origin.port)/news-article.html", "--reload"])
            #expect(refused.contains("over today's quota (3 pages"), "\(refused)")
            #expect(gateway.output.contains("Answered"), "\(gateway.output)")
            // The gateway counts what it answered and never says what: no address, page or site in its output.
            for page in ["news-article", "wiki-page", "water-2026", ":\(origin.port)", "127.0.0.1"] {
                #expect(!gateway.output.contains(page), "the gateway wrote “\(page)”:\n\(gateway.output)")
            }
        }

        @Test("raha text fetches a URL itself and renders it; a fetcher that keeps off private addresses refuses a name that resolves to loopback")
        func textFromAURLAndPrivateAddresses() async throws {
            let origin = try Origin.shared()
            let pages = Paths.packageRoot.appendingPathComponent("Tests/RahaTextTests/Pages")
            try? FileManager.default.removeItem(at: origin.directory.appendingPathComponent("wiki-page.html"))
            try FileManager.default.copyItem(at: pages.appendingPathComponent("wiki-page.html"), to: origin.directory.appendingPathComponent("wiki-page.html"))
            let text = try runCommand("raha text", try Paths.rahaBinary(), ["text", "http://127.0.0.1:\(origin.port)/wiki-page.html"])
            #expect(text.status == 0 && text.stdoutText.hasPrefix("Qanat\n") && text.stdoutText.contains("[1] http://127.0.0.1:\(origin.port)/wiki/Iran"),
                    "\(text.output)")
            var fetcher = WebFetcher(maxBodyBytes: 1 << 20)
            fetcher.what = "page"
            fetcher.addressFilter = { RahaWire.ExitPolicy(allowPrivate: false).allows($0) }
            do {
                _ = try await fetcher.get(try WebURL(parsing: "http://localhost:\(origin.port)/wiki-page.html"), group: MultiThreadedEventLoopGroup.singleton)
                Issue.record("fetched a page from loopback")
            } catch let error as WireError {
                #expect(error.reason.contains("its address is private or local"), "\(error)")
            }
        }

        @Test("raha text against lynx -dump -nolist, the reference rendering: of the article lynx shows, raha keeps at least 95% of the words, and none of the furniture lynx shows too", arguments: ["news-article", "wiki-page", "heavy-scripts"])
        func textAgainstLynx(_ name: String) throws {
            let file = Paths.packageRoot.appendingPathComponent("Tests/RahaTextTests/Pages/\(name).html").path
            let lynx = try runCommand("lynx", try Paths.tool("lynx", package: "lynx"),
                                      ["-dump", "-nolist", "-force_html", "-assume_charset=utf-8", "-display_charset=utf-8", file])
            let ours = try runCommand("raha text", try Paths.rahaBinary(), ["text", file])
            #expect(lynx.status == 0 && ours.status == 0, "\(lynx.output)\n\(ours.output)")
            let reference = lynx.stdoutText
            let start = try #require(reference.range(of: "ARTICLE-START")), end = try #require(reference.range(of: "ARTICLE-END"))
            let article = reference[start.lowerBound..<end.upperBound].split(separator: "\n").filter { !$0.contains("FURNITURE-") }.joined(separator: " ")
            let wanted = article.split { !$0.isLetter && !$0.isNumber }.map { $0.lowercased() }
            var pool: [String: Int] = [:]
            for word in ours.stdoutText.split(whereSeparator: { !$0.isLetter && !$0.isNumber }) { pool[word.lowercased(), default: 0] += 1 }
            let found = wanted.filter { word in
                guard (pool[word] ?? 0) > 0 else { return false }
                pool[word]! -= 1
                return true
            }.count
            #expect(Double(found) >= 0.95 * Double(wanted.count), "\(name): \(found) of \(wanted.count) words\n\(ours.stdoutText)")
            #expect(reference.contains("FURNITURE-") && !ours.stdoutText.contains("FURNITURE-"))
        }

        @Test("IMAP with STARTTLS: IDLE wakes on new mail; wrong passwords are refused with a message that says so, for SMTP and IMAP")
        func idleAndWrongPasswords() async throws {
            let servers = try MailServers()
            defer { servers.stop() }
            let pin = servers.certificate.sha256
            let imap = MailServer(host: "127.0.0.1", port: Int(servers.imapPort), security: .starttls, pin: pin)
            let submission = MailServer(host: "127.0.0.1", port: Int(servers.domestic.submissionPort), security: .starttls, pin: pin)
            try await IMAPSession.withSession(server: imap, user: "bob@outside.test", password: servers.accounts["bob@outside.test"]!) { session in
                #expect(session.capabilities.contains("IDLE"))
                _ = try await session.select()
                #expect(try await session.uids(after: 0).isEmpty)
                // Nothing arrives: IDLE ends at its timeout with no new mail.
                #expect(try await session.waitForMail(timeout: .milliseconds(300)) == false)
                let sent = await SMTPSender.send([Self.message("idle-\(UUID().uuidString)")], via: submission,
                                                 credentials: ("alice@domestic.test", servers.accounts["alice@domestic.test"]!))
                guard case .success = sent.first else { Issue.record("not accepted: \(sent)\n\(servers.logs)"); return }
                var woke = false
                for _ in 0..<24 where !woke {
                    woke = try await session.waitForMail(timeout: .seconds(5))
                }
                #expect(woke, "IDLE never announced the new message.\n\(servers.logs)")
            }

            let refused = await SMTPSender.send([Self.message("x")], via: submission, credentials: ("alice@domestic.test", "wrong"))
            guard case .failure(let smtpError) = refused.first else { Issue.record("accepted with a wrong password"); return }
            #expect(smtpError.kind == .authentication && smtpError.reason.contains("refused the account's name or password"), "\(smtpError)")
            do {
                try await IMAPSession.withSession(server: imap, user: "bob@outside.test", password: "wrong") { _ in }
                Issue.record("logged in with a wrong password")
            } catch let error as MailError {
                #expect(error.kind == .authentication && error.reason.contains("refused the account's name or password"), "\(error)")
            }
        }
    }
}
