import Foundation
import NIOCore
import RahaWire

// Seed inputs for each target: the well-formed messages the unit tests use,
// written in each target's input format (a first byte of choices, then the
// message), so that fuzzing starts from inside every protocol rather than at
// its front door. `raha-fuzz --seeds DIR` writes them out.

enum Seeds {
    static func text(_ mode: UInt8, _ s: String) -> [UInt8] { [mode] + Array(s.utf8) }

    static func bytes(_ write: (inout ByteBuffer) -> Void) -> [UInt8] {
        var buffer = ByteBuffer()
        write(&buffer)
        return Array(buffer.readableBytesView)
    }

    static let example = Endpoint(host: .domain("example.com"), port: 443)
    static let loopback = Endpoint(host: .ipv4([127, 0, 0, 1]), port: 53)
    static let v6 = Endpoint(host: .ipv6([0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]), port: 8443)

    static var socks5: [[UInt8]] {
        [
            [0, 5, 1, 0] + bytes { SOCKS5Request(command: .connect, destination: example).write(to: &$0) } + Array("GET / HTTP/1.1\r\n\r\n".utf8),
            [2, 5, 2, 0, 2] + bytes { SOCKS5Request(command: .connect, destination: loopback).write(to: &$0) },
            [1, 5, 1, 2, 1, 4] + Array("raha".utf8) + [6] + Array("secret".utf8) + bytes { SOCKS5Request(command: .udpAssociate, destination: v6).write(to: &$0) },
            [0] + bytes { SOCKS5UDPDatagram(destination: loopback, payload: ByteBuffer(bytes: [1, 2, 3])).write(to: &$0) },
        ]
    }

    static var httpProxy: [[UInt8]] {
        [
            text(0, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Connection: keep-alive\r\n\r\n"),
            text(3, "GET http://example.com/a?b=c HTTP/1.1\r\nHost: example.com\r\nProxy-Authorization: Basic cmFoYTpzZWNyZXQ=\r\nContent-Length: 5\r\n\r\nhello"),
            text(5, "POST http://[2001:db8::1]:8080/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n5;x=y\r\nhello\r\n0\r\nTrailer: 1\r\n\r\n"),
            text(7, "GET http://example.com/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        ]
    }

    static var httpResponse: [[UInt8]] {
        [
            text(0, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello"),
            text(1, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            text(2, "HTTP/1.1 301 Moved Permanently\r\nLocation: https://example.org/keys.json\r\nContent-Length: 0\r\n\r\n"),
            text(3, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nuntil the end"),
        ]
    }

    static var shadowsocksStream: [[UInt8]] {
        var seeds: [[UInt8]] = []
        for (index, credential) in Fixtures.shadowsocks.enumerated() {
            // A client's request stream, and a bridge's response stream.
            var client = ShadowsocksClientSession(credential: credential, target: example)
            var out = ByteBuffer()
            client.seal(ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n").readableBytesView, into: &out, now: Fixtures.now)
            client.seal(ByteBuffer(string: "more").readableBytesView, into: &out, now: Fixtures.now)
            seeds.append([UInt8(index)] + Array(out.readableBytesView))
            var server = ShadowsocksServerSession(credential: credential)
            var response = ByteBuffer()
            server.seal(ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\n").readableBytesView, into: &response, now: Fixtures.now)
            seeds.append([UInt8(index)] + Array(response.readableBytesView))
        }
        // Chunks the fuzzer seals itself: legacy length + address and payload;
        // 2022's fixed header (clock stamped) + variable header.
        let address = bytes { _ = example.write(to: &$0) } + Array("hi".utf8)
        seeds.append([0x10] + [UInt8](repeating: 1, count: 32) + [2, 0, UInt8(address.count), UInt8(address.count)] + address)
        let variable = bytes { _ = example.write(to: &$0) } + [0, 0] + Array("hi".utf8)
        seeds.append([0x32] + [UInt8](repeating: 1, count: 32) + [11, 0] + [UInt8](repeating: 0, count: 8) + [0, UInt8(variable.count)]
            + [UInt8(variable.count)] + variable)
        return seeds
    }

    static var shadowsocksPacket: [[UInt8]] {
        var seeds: [[UInt8]] = []
        for (index, credential) in Fixtures.shadowsocks.enumerated() {
            var cache = ShadowsocksUDP.SubkeyCache()
            let datagram = ShadowsocksDatagram(endpoint: loopback, payload: [0x12, 0x34, 1, 0, 0, 1])
            seeds.append([UInt8(index)] + ShadowsocksUDP.seal(datagram, direction: .clientToServer, credential: credential,
                                                              sessionID: 5, packetID: 1, now: Fixtures.now, subkeyCache: &cache))
            seeds.append([UInt8(index) | 0x10] + bytes { _ = loopback.write(to: &$0) } + [0x12, 0x34, 1, 0, 0, 1])
        }
        return seeds
    }

    static var trojan: [[UInt8]] {
        let udpFrame = bytes { Trojan.UDPFrame(endpoint: loopback, payload: ByteBuffer(bytes: [1, 2, 3])).write(to: &$0) }
        return [
            [1, 1] + bytes { _ = example.write(to: &$0) } + [0x0d, 0x0a] + Array("GET / HTTP/1.1\r\n\r\n".utf8),
            [1, 3] + bytes { _ = loopback.write(to: &$0) } + [0x0d, 0x0a] + udpFrame + udpFrame,
            [0, 0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03] + [UInt8](repeating: 0xaa, count: 32),
            text(0, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
            [0, 0x80, 0x2e, 0x01, 0x03, 0x01],
            [0] + udpFrame,
        ]
    }

    static var mux: [[UInt8]] {
        let frames = [
            MuxFrame.open(stream: 1, to: example),
            MuxFrame(kind: .data, stream: 1, body: ByteBuffer(string: "hello")),
            MuxFrame.window(stream: 1, increment: 65536),
            MuxFrame(kind: .padding, stream: 0, body: ByteBuffer(bytes: [0, 0, 0])),
            MuxFrame.open(stream: 2, to: loopback),
            MuxFrame(kind: .finish, stream: 1),
            MuxFrame(kind: .reset, stream: 2, body: ByteBuffer(bytes: [1])),
            MuxFrame(kind: .goAway, stream: 0),
        ]
        let rendezvous = bytes { RendezvousDatagram.write(tag: 9, payload: ByteBuffer(string: "datagram"), to: &$0) }
        return [[0] + bytes { buffer in frames.forEach { $0.write(to: &buffer) } }, [3] + rendezvous + rendezvous]
    }

    static var webSocket: [[UInt8]] {
        let request = "GET /ws-fuzz?ed=2048 HTTP/1.1\r\nHost: cdn.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: AAECAw\r\n\r\n"
        let masked = bytes { WebSocketFrame.write(opcode: .binary, payload: ByteBuffer(string: "hello").readableBytesView, maskKey: 0x0102_0304, to: &$0) }
            + bytes { WebSocketFrame.write(opcode: .ping, payload: ByteBuffer(string: "p").readableBytesView, maskKey: 7, to: &$0) }
            + bytes { WebSocketFrame.write(opcode: .close, payload: WebSocketFrame.closePayload(code: 1000).readableBytesView, maskKey: 9, to: &$0) }
        let plain = bytes { WebSocketFrame.write(opcode: .binary, fin: false, payload: ByteBuffer(string: "he").readableBytesView, to: &$0) }
            + bytes { WebSocketFrame.write(opcode: .continuation, payload: ByteBuffer(string: "llo").readableBytesView, to: &$0) }
        let response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        return [text(1, request) + masked, [1] + masked, text(0, response) + plain, [0] + plain]
    }

    static var dnsMessage: [[UInt8]] {
        let name = try! DNSName("www.example.com")
        let query = DNSMessage.query(id: 0x1234, name: name, type: .a, udpPayloadSize: 1232)
        let response = DNSMessage.response(to: query, answers: [
            DNSRecord(name: name, ttl: 60, data: .cname(try! DNSName("example.com"))),
            DNSRecord(name: try! DNSName("example.com"), ttl: 60, data: .a([93, 184, 216, 34])),
            DNSRecord(name: name, ttl: 60, data: .aaaa([UInt8](repeating: 0x20, count: 16))),
            DNSRecord(name: name, ttl: 0, data: .txt([Array("v=spf1".utf8), []])),
        ], authorities: [DNSRecord(name: try! DNSName("example.com"), ttl: 0, data: .soa(DNSSOA(
            primaryServer: try! DNSName("ns.example.com"), responsibleMailbox: try! DNSName("hostmaster.example.com"),
            serial: 1, refresh: 2, retry: 3, expire: 4, minimum: 5)))])
        return [[0] + (try! query.serialize()), [1] + (try! response.serialize()), [2] + (try! response.serializeForTCP()) + (try! query.serializeForTCP())]
    }

    static var dnsTunnel: [[UInt8]] {
        let zone = Fixtures.zone
        let segment = ARQSegment(session: 0x0102_0304_0506_0708, flags: [], sequence: 1, acknowledgement: 0, window: 64, payload: Array("data".utf8)).encoded()
        let query = try! DNSTunnelCodec.query(payload: [0] + segment, zone: zone, shaping: .default, id: 9, udpPayloadSize: 1232)
        let response = DNSTunnelCodec.response(to: query, payload: segment)
        var initiator = try! NoiseStream(role: .initiator(responderStatic: Fixtures.bridgeKey.publicKey))
        return [
            [0] + (try! query.serialize()),
            [0] + (try! response.serialize()),
            [0] + initiator.takeOutbound(),
            [0] + DNSTunnelEncoding.base32.encode(Array("abcdefgh".utf8)),
            [0, 5] + Array("hello".utf8) + [3] + Array("abc".utf8),
        ]
    }

    static var arq: [[UInt8]] {
        let segments = [
            ARQSegment(session: 0x0102_0304_0506_0708, flags: [], sequence: 0x0506_0708, acknowledgement: 0x0102_0304, window: 64, payload: Array("hello".utf8)),
            ARQSegment(session: 0x0102_0304_0506_0708, flags: .fin, sequence: 0x0506_070d, acknowledgement: 0x0102_0304, window: 64),
        ].map { $0.encoded() }
        var raw: [UInt8] = [2]
        for segment in segments { raw += [UInt8(segment.count)] + segment + [10] }
        // A conversation: queue, send, deliver, answer, deliver back, wait; repeated.
        let conversation: [UInt8] = [1] + Array(repeating: [0, 0, 1, 200, 4, 0, 3, 200, 5, 0, 7, 0, 2, 200, 4, 0, 6, 0, 15, 0], count: 8).joined()
        return [raw, conversation]
    }

    static var smtp: [[UInt8]] {
        [text(0, "220 mail.domestic.test ESMTP\r\n250-mail.domestic.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n220 2.0.0 Ready\r\n"
            + "250-mail.domestic.test\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 10240000\r\n235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n"
            + "250 2.1.5 Ok\r\n550 5.1.1 <c@outside.test>: Recipient address rejected\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued\r\n221 2.0.0 Bye\r\n"),
         text(1, "220 hi\r\n250 hi\r\n334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n535 5.7.8 no\r\n")]
    }

    static var imap: [[UInt8]] {
        [text(0, "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN IDLE] Dovecot ready.\r\na1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"
            + "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n* 3 EXISTS\r\n* OK [UIDVALIDITY 1700000000] UIDs valid\r\n"
            + "a2 OK [READ-WRITE] Select completed.\r\n* SEARCH 1 2 3\r\na3 OK Search completed\r\n"
            + "* 1 FETCH (UID 5 BODY[] {11}\r\nhello world)\r\na4 OK Fetch completed\r\n+ idling\r\n* 4 EXISTS\r\n"
            + "* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n* 2 FETCH (UID 6 BODY[] \"quoted \\\"x\\\"\" FLAGS NIL)\r\na5 NO [TRYCREATE] no\r\n")]
    }

    static var mail: [[UInt8]] {
        let chunk = EnvelopeChunk(id: [UInt8](repeating: 3, count: EnvelopeChunk.idLength), index: 0, count: 1, bytes: Array("sealed".utf8)).serialized
        let subject = Array("Files".utf8)
        let mail = MailFormat.compose(chunk: chunk, from: "a@domestic.test", to: "b@outside.test",
                                      disguise: MailDisguise(subject: "سلام", body: "متن", attachmentName: "files.bin"),
                                      date: Date(timeIntervalSince1970: 1_750_000_000))
        return [[0, UInt8(subject.count)] + subject + mail, [1, 0] + Array("a message to seal".utf8)]
    }

    static var accessKey: [[UInt8]] {
        let server = Endpoint(host: .domain("bridge.example.org"), port: 8388)
        let ss = ShadowsocksKey.generate(method: .chacha20IETFPoly1305, server: server, tag: "home").uri
        let ss2022 = ShadowsocksKey.generate(method: .blake3AES256GCM, server: server).uri
        let trojan = TrojanKey.generate(server: Endpoint(host: .ipv4([192, 0, 2, 1]), port: 443), sni: "www.example.org").uri
        let ws = TrojanKey.generate(server: server, sni: "cdn.example.org", webSocket: true, tag: "cdn").uri
        let dns = try! DNSTunnelKey(zone: try! DNSName("t.example.org"), publicKey: [UInt8](repeating: 5, count: 32),
                                    clientID: [UInt8](repeating: 6, count: 16)).text
        let bundle = try! AccessBundle(members: [trojan, ss, dns]).uri
        let sip008 = "{\"version\":1,\"servers\":[{\"server\":\"192.0.2.1\",\"server_port\":8388,\"password\":\"p\",\"method\":\"chacha20-ietf-poly1305\"}]}"
        let invite = try! MailInvite(address: "someone@domestic.test", identity: EnvelopeIdentity().publicIdentity, name: "Sara").text
        return [ss, ss2022, trojan, ws, dns, bundle, sip008, invite, "https://example.org/keys.json", "40M", "30000-40000", "[2001:db8::1]:443"]
            .map { Array($0.utf8) }
    }

    static var html: [[UInt8]] {
        [text(0, "<!doctype html><html><head><title>News &amp; more</title><script>x()</script></head><body><nav><a href=\"/\">Home</a></nav>"
            + "<article><h1>Title</h1><p>First <b>para</b> with <a href=\"https://example.org/a\">a link</a>.</p><ul><li>one<li>two</ul>"
            + "<table><tr><td>1</td><td>2</td></tr></table><pre>  code\n</pre><img alt=\"x\" src=\"i.png\"></article></body></html>"),
         text(1, "<html><head><meta charset=\"windows-1256\"></head><body><p>\u{00C7}\u{00E1}</p></body></html>")]
    }
}
