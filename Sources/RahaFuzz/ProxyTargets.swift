import NIOCore
import RahaWire

// The local proxy's fronts: what a browser or app on the user's machine (or
// anything that reaches the port) sends.

extension FuzzTarget {
    /// SOCKS5 negotiation (with and without username/password) and UDP
    /// ASSOCIATE datagram headers.
    static let socks5 = FuzzTarget("socks5", "SOCKS5 greeting, credentials, request; UDP datagram header", seeds: { Seeds.socks5 }) { data in
        var input = FuzzInput(data)
        let seed = input.byte()
        let credentials = seed & 1 == 1 ? ProxyCredentials(username: "raha", password: "secret") : nil
        let message = input.rest()
        sameInDribbles(message, seed: seed, "a SOCKS5 negotiation") { socks5Outcome(credentials, $0) }

        if let datagram = try? SOCKS5UDPDatagram.parse(ByteBuffer(bytes: message)) {
            var written = ByteBuffer()
            datagram.write(to: &written)
            let again = try? SOCKS5UDPDatagram.parse(written)
            check(again == datagram, "a SOCKS5 UDP datagram read back differently")
        }
    }

    /// HTTP proxy request heads (CONNECT and absolute-form), then the body's
    /// framing (Content-Length or chunked) over what follows.
    static let httpProxy = FuzzTarget("http-proxy", "HTTP proxy request head, proxy request, request body framing", seeds: { Seeds.httpProxy }) { data in
        var input = FuzzInput(data)
        let seed = input.byte()
        let message = input.rest()
        sameInDribbles(message, seed: seed, "an HTTP request") { httpOutcome(request: true, $0) }

        var buffer = ByteBuffer(bytes: message)
        guard let head = try? HTTPRequestHead.read(from: &buffer) else { return }
        _ = head.proxyBasicCredentials
        var written = ByteBuffer()
        _ = head.serialize(into: &written)
        let again = try? HTTPRequestHead.read(from: &written)
        check(again == head, "an HTTP request head read back differently: \(head) then \(String(describing: again))")
        if case .forward(let rewritten, _)? = try? HTTPProxyRequest(head: head) {
            var out = ByteBuffer()
            _ = rewritten.serialize(into: &out)
            check((try? HTTPRequestHead.read(from: &out)) == rewritten, "a rewritten request does not read back")
        }
    }

    /// What comes back from a web server: response heads, body framing, and
    /// the online-config fetcher's reader.
    static let httpResponse = FuzzTarget("http-response", "HTTP response head, body framing, online-config response reader", seeds: { Seeds.httpResponse }) { data in
        var input = FuzzInput(data)
        let seed = input.byte()
        let message = input.rest()
        sameInDribbles(message, seed: seed, "an HTTP response") { httpOutcome(request: false, $0) }
        sameInDribbles(message, seed: seed, "a web response", webResponse)
    }
}

private func describe(_ response: WebResponseReader.Response) -> String {
    "\(response.status) \(response.location ?? "-") \(response.body)"
}

/// Everything a SOCKS5 server machine does with `pieces` arriving in turn,
/// up to the end of the negotiation, and how many bytes it left unread.
private func socks5Outcome(_ credentials: ProxyCredentials?, _ pieces: [[UInt8]]) -> [String] {
    var machine = SOCKS5ServerStateMachine(credentials: credentials)
    var buffer = ByteBuffer()
    var outcome: [String] = []
    for (index, piece) in pieces.enumerated() {
        buffer.writeBytes(piece)
        while true {
            let action = machine.receive(&buffer)
            switch action {
            case .needMoreData:
                break
            case .send(let reply):
                outcome.append("send \(Array(reply.readableBytesView))")
                continue
            case .connect, .udpAssociate, .fail:
                let unread = buffer.readableBytes + pieces[(index + 1)...].reduce(0) { $0 + $1.count }
                if case .fail(let reply, _) = action {
                    outcome.append("fail \(reply.map { Array($0.readableBytesView) } ?? [])")
                } else {
                    outcome.append("\(action)")
                }
                check(machine.isFailed == (outcome.last!.hasPrefix("fail")), "a SOCKS5 machine's state disagrees with its last action")
                return outcome + ["unread \(unread)"]
            }
            break
        }
    }
    return outcome + ["waiting"]
}

/// An HTTP head read from `pieces` arriving in turn, then its body framed
/// over the rest: the head, the body bytes, whether the body completed, and
/// the first error.
private func httpOutcome(request: Bool, _ pieces: [[UInt8]]) -> [String] {
    var buffer = ByteBuffer()
    var outcome: [String] = []
    var framer: HTTPBodyFramer?
    var body: [UInt8] = []
    do {
        for piece in pieces {
            buffer.writeBytes(piece)
            if framer == nil {
                if request {
                    guard let head = try HTTPRequestHead.read(from: &buffer, maxHeadBytes: 4096) else { continue }
                    outcome.append("\(head) \(head.headers)")
                    framer = try HTTPBodyFramer(request: head)
                } else {
                    guard let head = try HTTPResponseHead.read(from: &buffer, maxHeadBytes: 4096) else { continue }
                    outcome.append("\(head) \(head.headers)")
                    framer = try HTTPBodyFramer(response: head, requestMethod: "GET")
                }
            }
            let slice = try framer!.readBody(from: &buffer)
            body += slice.readableBytesView
            if framer!.isComplete { break }
        }
        try framer?.endOfInput()
    } catch {
        // Body bytes already measured before the error was found may be
        // more or fewer depending on how the bytes arrived: only the head
        // and the error must agree.
        return outcome + ["error \(error)"]
    }
    return outcome + ["body \(body)", "complete \(framer?.isComplete ?? false)"]
}

private func webResponse(_ pieces: [[UInt8]]) -> String {
    var reader = WebResponseReader(maxBodyBytes: 4096)
    do {
        for piece in pieces {
            var buffer = ByteBuffer(bytes: piece)
            if let response = try reader.receive(&buffer) { return describe(response) }
        }
        return describe(try reader.endOfInput())
    } catch {
        return "error \(error)"
    }
}
