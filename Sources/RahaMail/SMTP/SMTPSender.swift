import RahaWire
/// Submits messages to a mail server over one connection: `SMTPClientMachine` over a `MailSocket`.
public enum SMTPSender {
    /// One result per message, in order: the server's acceptance, or why
    /// not. A session that breaks off gives the messages it did not finish
    /// its error, so the caller's outbox knows each message's fate (one whose
    /// end of data was sent but not answered counts as not sent: the server
    /// may still deliver it, so the receiving side must drop duplicates).
    public static func send(_ messages: [SMTPMessage], via server: MailServer, credentials: (user: String, password: String)?,
                            clientName: String = "[127.0.0.1]") async -> [Result<SMTPDelivery, MailError>] {
        guard !messages.isEmpty else { return [] }
        let security: SMTPSecurity = switch server.security {
        case .tls: .implicitTLS
        case .starttls: .startTLS
        case .none: .none
        }
        var results: [Result<SMTPDelivery, MailError>] = []
        do {
            results = try await MailSocket.withConnection(to: server) { socket in
                var machine = SMTPClientMachine(clientName: clientName, security: security, credentials: credentials, messages: messages)
                var parser = SMTPReplyParser()
                var pending: [SMTPClientMachine.Action] = []
                do {
                while true {
                    if pending.isEmpty {
                        guard var buffer = try await socket.read() else {
                            pending = machine.connectionClosed()
                            continue
                        }
                        parser.feed(buffer.readBytes(length: buffer.readableBytes) ?? [])
                        while let reply = try parser.next() { pending += machine.receive(reply) }
                        continue
                    }
                    let action = pending.removeFirst()
                    switch action {
                    case .send(let bytes):
                        try await socket.write(bytes)
                    case .startTLS:
                        try await socket.startTLS()
                        pending += machine.tlsEstablished()
                    case .finished(let done):
                        return done
                    case .failed(let error, let done):
                        return done + Array(repeating: .failure(error), count: messages.count - done.count)
                    }
                }
                } catch {
                    let failure = error as? MailError ?? MailError(.transient, "sending failed: \(error)")
                    let done = machine.completed
                    return done + Array(repeating: .failure(failure), count: messages.count - done.count)
                }
            }
        } catch let error as MailError {
            results += Array(repeating: .failure(error), count: messages.count - results.count)
        } catch {
            results += Array(repeating: .failure(MailError(.transient, "sending failed: \(error)")), count: messages.count - results.count)
        }
        return results
    }
}
