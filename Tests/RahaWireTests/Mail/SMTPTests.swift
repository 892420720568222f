import Testing
@testable import RahaWire

@Suite struct SMTPReplyParserTests {
    @Test func readsSingleAndMultiLineRepliesSplitAnywhere() throws {
        let text = "220 mail.example ESMTP\r\n250-mail.example\r\n250-SIZE 10240000\r\n250 AUTH PLAIN LOGIN\r\n354 go ahead\n250\r\n"
        let bytes = Array(text.utf8)
        for cut in 0...bytes.count {
            var parser = SMTPReplyParser()
            var replies: [SMTPReply] = []
            parser.feed(bytes[..<cut])
            while let reply = try parser.next() { replies.append(reply) }
            parser.feed(bytes[cut...])
            while let reply = try parser.next() { replies.append(reply) }
            #expect(replies == [
                SMTPReply(code: 220, lines: ["mail.example ESMTP"]),
                SMTPReply(code: 250, lines: ["mail.example", "SIZE 10240000", "AUTH PLAIN LOGIN"]),
                SMTPReply(code: 354, lines: ["go ahead"]),
                SMTPReply(code: 250, lines: [""]),
            ], "cut at \(cut)")
        }
    }

    @Test func refusesWhatIsNotAReply() {
        for (text, mention) in [("HTTP/1.1 400 Bad Request\r\n", "not a reply line"), ("25 short\r\n", "not a reply line"),
                                ("250x\r\n", "not a reply line"), ("250-a\r\n251 b\r\n", "changed the code"),
                                (String(repeating: "2", count: 5000), "more than 4096 bytes")] {
            var parser = SMTPReplyParser()
            parser.feed(Array(text.utf8))
            #expect(throws: MailError.self) { while try parser.next() != nil {} }
            do { while try parser.next() != nil {} } catch let error as MailError {
                #expect(error.reason.contains(mention), "\(error.reason)")
                #expect(error.kind == .protocolViolation)
            } catch {}
        }
    }
}

/// Drives a machine through a scripted server: each reply in turn, collecting what the client sent.
private struct Transcript {
    var machine: SMTPClientMachine
    var sent: [String] = []
    var actions: [SMTPClientMachine.Action] = []

    mutating func server(_ code: Int, _ lines: String...) {
        take(machine.receive(SMTPReply(code: code, lines: lines.isEmpty ? [""] : lines)))
    }

    mutating func take(_ new: [SMTPClientMachine.Action]) {
        for action in new {
            if case .send(let bytes) = action { sent.append(String(decoding: bytes, as: UTF8.self)) } else { actions.append(action) }
        }
    }
}

@Suite struct SMTPClientMachineTests {
    static let message = SMTPMessage(from: "alice@domestic.test", recipients: ["bob@outside.test"], content: Array("Subject: hi\n\nhello\n".utf8))

    @Test func submitsOverSTARTTLSWithAuthPlain() {
        var t = Transcript(machine: SMTPClientMachine(clientName: "[127.0.0.1]", security: .startTLS,
                                                      credentials: ("alice", "secret"), messages: [Self.message]))
        t.server(220, "mail.example ESMTP")
        #expect(t.sent == ["EHLO [127.0.0.1]\r\n"])
        t.server(250, "mail.example", "STARTTLS", "SIZE 1000")
        #expect(t.sent.last == "STARTTLS\r\n")
        t.server(220, "ready")
        #expect(t.actions == [.startTLS])
        t.take(t.machine.tlsEstablished())
        #expect(t.sent.last == "EHLO [127.0.0.1]\r\n", "greets again after TLS")
        t.server(250, "mail.example", "AUTH PLAIN LOGIN", "SIZE 1000")
        #expect(t.sent.last == "AUTH PLAIN " + Base64.encode(Array("\0alice\0secret".utf8)) + "\r\n")
        t.server(235, "2.7.0 Authentication successful")
        #expect(t.sent.last == "MAIL FROM:<alice@domestic.test> SIZE=22\r\n")
        t.server(250, "2.1.0 Ok")
        #expect(t.sent.last == "RCPT TO:<bob@outside.test>\r\n")
        t.server(250, "2.1.5 Ok")
        #expect(t.sent.last == "DATA\r\n")
        t.server(354, "End data with <CR><LF>.<CR><LF>")
        #expect(t.sent.last == "Subject: hi\r\n\r\nhello\r\n.\r\n")
        t.server(250, "2.0.0 Ok: queued as ABC")
        #expect(t.sent.last == "QUIT\r\n")
        #expect(t.actions.last == .finished([.success(SMTPDelivery(accepted: ["bob@outside.test"], refused: [:],
                                                                         reply: SMTPReply(code: 250, lines: ["2.0.0 Ok: queued as ABC"])))]))
    }

    @Test func logsInWithAuthLoginWhenPlainIsNotOffered() {
        var t = Transcript(machine: SMTPClientMachine(clientName: "x", security: .implicitTLS, credentials: ("alice", "pw"), messages: []))
        t.server(220)
        t.server(250, "x", "AUTH LOGIN")
        #expect(t.sent.last == "AUTH LOGIN\r\n")
        t.server(334, "VXNlcm5hbWU6")
        #expect(t.sent.last == Base64.encode(Array("alice".utf8)) + "\r\n")
        t.server(334, "UGFzc3dvcmQ6")
        #expect(t.sent.last == Base64.encode(Array("pw".utf8)) + "\r\n")
        t.server(235)
        #expect(t.sent.last == "QUIT\r\n")
        #expect(t.actions == [.finished([])])
    }

    @Test func refusesToGoOnWithoutTheSecurityAsked() {
        var noTLS = Transcript(machine: SMTPClientMachine(clientName: "x", security: .startTLS, credentials: ("a", "b"), messages: [Self.message]))
        noTLS.server(220)
        noTLS.server(250, "x", "AUTH PLAIN")
        guard case .failed(let error, _) = noTLS.actions.last else { Issue.record("\(noTLS.actions)"); return }
        #expect(error.kind == .security && error.reason.contains("does not offer STARTTLS"))
        #expect(!noTLS.sent.contains { $0.hasPrefix("AUTH") }, "no password in clear")

        var noMechanism = Transcript(machine: SMTPClientMachine(clientName: "x", security: .implicitTLS, credentials: ("a", "b"), messages: [Self.message]))
        noMechanism.server(220)
        noMechanism.server(250, "x", "AUTH CRAM-MD5 XOAUTH2")
        guard case .failed(let error2, _) = noMechanism.actions.last else { Issue.record("\(noMechanism.actions)"); return }
        #expect(error2.reason.contains("offers only CRAM-MD5, XOAUTH2"))

        var wrongPassword = Transcript(machine: SMTPClientMachine(clientName: "x", security: .implicitTLS, credentials: ("a", "b"), messages: [Self.message]))
        wrongPassword.server(220)
        wrongPassword.server(250, "x", "AUTH PLAIN")
        wrongPassword.server(535, "5.7.8 Error: authentication failed")
        guard case .failed(let error3, _) = wrongPassword.actions.last else { Issue.record("\(wrongPassword.actions)"); return }
        #expect(error3.kind == .authentication && error3.reason.contains("refused the account's name or password"))
    }

    @Test func aRefusedMessageDoesNotStopTheNext() {
        let two = SMTPMessage(from: "a@d.test", recipients: ["x@o.test", "y@o.test"], content: Array("b".utf8))
        var t = Transcript(machine: SMTPClientMachine(clientName: "x", security: .none, credentials: nil, messages: [Self.message, two]))
        t.server(220)
        t.server(250, "x")
        #expect(t.sent.last == "MAIL FROM:<alice@domestic.test>\r\n", "no SIZE when not offered")
        t.server(250)
        t.server(550, "5.1.1 no such user")
        #expect(t.sent.last == "RSET\r\n", "every recipient refused: the transaction is reset")
        t.server(250)
        #expect(t.sent.last == "MAIL FROM:<a@d.test>\r\n")
        t.server(250)
        t.server(450, "4.2.0 greylisted")
        #expect(t.sent.last == "RCPT TO:<y@o.test>\r\n")
        t.server(250)
        t.server(354)
        t.server(250, "queued")
        guard case .finished(let results) = t.actions.last, results.count == 2 else { Issue.record("\(t.actions)"); return }
        guard case .failure(let first) = results[0] else { Issue.record("\(results[0])"); return }
        #expect(first.kind == .permanent && first.reason.contains("550 5.1.1 no such user"))
        guard case .success(let delivery) = results[1] else { Issue.record("\(results[1])"); return }
        #expect(delivery.accepted == ["y@o.test"] && delivery.refused["x@o.test"]?.code == 450)
    }

    @Test func aServerClosingMidwayIsTransient() {
        var t = Transcript(machine: SMTPClientMachine(clientName: "x", security: .none, credentials: nil, messages: [Self.message]))
        t.server(220)
        t.server(421, "4.3.2 shutting down")
        guard case .failed(let error, let results) = t.actions.last else { Issue.record("\(t.actions)"); return }
        #expect(error.kind == .transient && error.isRetryable && results.isEmpty)

        var closed = Transcript(machine: SMTPClientMachine(clientName: "x", security: .none, credentials: nil, messages: [Self.message]))
        closed.server(220)
        closed.take(closed.machine.connectionClosed())
        guard case .failed(let error2, _) = closed.actions.last else { Issue.record("\(closed.actions)"); return }
        #expect(error2.kind == .transient)
    }

    @Test func dataIsDotStuffedWithCRLFLineEnds() {
        let stuffed = SMTPClientMachine.dotStuffed(Array(".a\n..b\r\nc\r.\nend".utf8))
        #expect(String(decoding: stuffed, as: UTF8.self) == "..a\r\n...b\r\nc\r\n..\r\nend\r\n.\r\n")
        #expect(String(decoding: SMTPClientMachine.dotStuffed([]), as: UTF8.self) == ".\r\n")
    }
}
