import Foundation
import RahaWire

// What mail servers send the courier (any server on the domestic network may
// be hostile), and the mails and envelopes in the mailbox.

private let recipient = EnvelopeIdentity()
private let sender = EnvelopeIdentity()

extension FuzzTarget {
    /// SMTP replies, read whole and in dribbles, then played to the
    /// submission client's state machine.
    static let smtp = FuzzTarget("smtp", "SMTP replies and the submission client's state machine", seeds: { Seeds.smtp }) { data in
        var input = FuzzInput(data)
        let seed = input.byte()
        let bytes = input.rest()
        let read = sameInDribbles(bytes, seed: seed, "SMTP replies") {
            parseAll($0, SMTPReplyParser(), feed: { $0.feed($1) }, next: { try $0.next() })
        }.items

        let messages = [SMTPMessage(from: "a@domestic.test", recipients: ["b@outside.test", "c@outside.test"], content: Array("Subject: x\r\n\r\nbody".utf8))]
        let security: SMTPSecurity = seed & 1 == 0 ? .startTLS : .implicitTLS
        var machine = SMTPClientMachine(clientName: "[127.0.0.1]", security: security, credentials: ("a", "p"), messages: messages)
        var ended = false
        for reply in read {
            for action in machine.receive(reply) {
                switch action {
                case .startTLS: _ = machine.tlsEstablished()
                case .finished(let results), .failed(_, let results):
                    check(results.count <= messages.count, "the SMTP client reported \(results.count) results for \(messages.count) message")
                    ended = true
                case .send: break
                }
            }
        }
        if !ended { _ = machine.connectionClosed() }
    }

    /// IMAP responses (literals, lists, quoted strings, response codes),
    /// read whole and in dribbles.
    static let imap = FuzzTarget("imap", "IMAP server responses", seeds: { Seeds.imap }) { data in
        var input = FuzzInput(data)
        let seed = input.byte()
        let bytes = input.rest()
        let read = sameInDribbles(bytes, seed: seed, "IMAP responses") {
            parseAll($0, IMAPResponseParser(), feed: { $0.feed($1) }, next: { try $0.next() })
        }.items
        read.forEach { _ = $0.summary }
    }

    /// Mails as the courier finds them in a mailbox (MIME, base64), the
    /// envelope chunks they carry, reassembly and opening; and a chunk the
    /// fuzzer chose, mailed under a subject it chose, must come out whole.
    static let mail = FuzzTarget("mail", "MIME mails, envelope chunks and reassembly, sealed envelopes, mail invites", seeds: { Seeds.mail }) { data in
        var input = FuzzInput(data)
        let seed = input.byte()
        let subject = String(decoding: input.piece(), as: UTF8.self)
        let bytes = input.rest()

        if let chunk = MailFormat.chunk(fromMail: bytes), let parsed = try? EnvelopeChunk(parsing: chunk) {
            var assembler = EnvelopeAssembler(maximumEnvelopeSize: 1 << 16, maximumPending: 4)
            if let envelope = try? assembler.add(parsed) {
                _ = try? Envelope.open(envelope, with: recipient, maxSize: 1 << 16)
            }
        }
        _ = try? EnvelopeChunk(parsing: bytes)
        _ = try? Envelope.open(bytes, with: recipient, maxSize: 1 << 16)
        _ = try? MailInvite(parsing: String(decoding: bytes, as: UTF8.self))

        let disguise = MailDisguise(subject: subject, body: subject + " body", attachmentName: subject.isEmpty ? "files.bin" : subject)
        let mail = MailFormat.compose(chunk: bytes, from: "a@domestic.test", to: "b@outside.test", disguise: disguise,
                                      date: Date(timeIntervalSince1970: 1_750_000_000))
        check(MailFormat.chunk(fromMail: mail) == bytes, "a composed mail did not give back its chunk")

        // Chunks of a real envelope, delivered in an order the fuzzer chose, reassemble to it.
        if seed & 1 == 1, let envelope = try? Envelope.seal(Array(bytes.prefix(2000)), from: sender, to: recipient.publicIdentity),
           let chunks = try? EnvelopeChunk.split(envelope, size: 64 + Int(seed >> 1)) {
            var assembler = EnvelopeAssembler(maximumEnvelopeSize: 1 << 16)
            var order = chunks
            if seed & 2 != 0 { order.reverse() }
            var whole: [UInt8]?
            for chunk in order {
                let parsed = try! EnvelopeChunk(parsing: chunk.serialized)
                if let done = try! assembler.add(parsed) { whole = done }
            }
            check(whole == envelope, "an envelope's chunks did not reassemble to it")
            let opened = try? Envelope.open(envelope, with: recipient, maxSize: 1 << 16)
            check(opened?.payload == Array(bytes.prefix(2000)) && opened?.sender == sender.publicIdentity, "an envelope did not open to what was sealed")
        }
    }
}
