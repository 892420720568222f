import Foundation
import NIOCore
import RahaMail
import Testing

extension RahaIntegration {
    /// The mail channel's clients against Debian's Postfix and Dovecot on
    /// loopback: submission with STARTTLS and with TLS from the start, relay
    /// from domestic.test to outside.test, and IMAP reading, IDLE and
    /// deleting over TLS and STARTTLS.
    @Suite("Mail channel (Postfix and Dovecot)")
    struct MailChannel {
        private static func pin(_ servers: MailServers) -> [UInt8] {
            let hex = Array(servers.certificate.sha256.utf8)
            return stride(from: 0, to: hex.count, by: 2).map { UInt8(String(decoding: hex[$0..<($0 + 2)], as: UTF8.self), radix: 16)! }
        }

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
            let pin = Self.pin(servers)
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

        @Test("IMAP with STARTTLS: IDLE wakes on new mail; wrong passwords are refused with a message that says so, for SMTP and IMAP")
        func idleAndWrongPasswords() async throws {
            let servers = try MailServers()
            defer { servers.stop() }
            let pin = Self.pin(servers)
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
