import NIOCore
import Testing
@testable import RahaWire

/// Reads `chunks` one after another and returns the data stream joined and
/// the other events in order.
private func readAll(_ chunks: [[UInt8]], requireMasked: Bool = false) throws -> (data: [UInt8], control: [WebSocketFrameReader.Event]) {
    var reader = WebSocketFrameReader(requireMasked: requireMasked)
    var data: [UInt8] = []
    var control: [WebSocketFrameReader.Event] = []
    for chunk in chunks {
        var buffer = ByteBuffer(bytes: chunk)
        let events = try reader.read(&buffer)
        #expect(buffer.readableBytes == 0, "the reader always consumes everything")
        for event in events {
            if case .data(let piece) = event {
                #expect(piece.readableBytes > 0, "no empty data pieces")
                data += piece.readableBytesView
            } else {
                control.append(event)
            }
        }
    }
    return (data, control)
}

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// The reader's error for `input`, or nil when it reads without one.
private func readError(_ input: [UInt8], requireMasked: Bool = false) -> WireError? {
    do {
        _ = try readAll([input], requireMasked: requireMasked)
        return nil
    } catch let error as WireError {
        return error
    } catch {
        return nil
    }
}

@Suite struct WebSocketFrameTests {
    // RFC 6455 section 5.7.
    let unmaskedHello: [UInt8] = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
    let maskedHello: [UInt8] = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
    let fragmentedHello: [UInt8] = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]
    let unmaskedPing: [UInt8] = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
    let maskedPong: [UInt8] = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
    var binary256: [UInt8] { [0x82, 0x7E, 0x01, 0x00] + (0..<256).map { UInt8(truncatingIfNeeded: $0 &* 7) } }
    var binary64K: [UInt8] { [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0] + (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) } }

    @Test func readsTheRFCExamples() throws {
        #expect(try readAll([unmaskedHello]).data == bytes("Hello"))
        #expect(try readAll([maskedHello]).data == bytes("Hello"))
        #expect(try readAll([maskedHello], requireMasked: true).data == bytes("Hello"))
        #expect(try readAll([fragmentedHello]).data == bytes("Hello"))
        let ping = try readAll([unmaskedPing])
        #expect(ping.data.isEmpty && ping.control == [.ping(ByteBuffer(string: "Hello"))])
        let pong = try readAll([maskedPong])
        #expect(pong.data.isEmpty && pong.control == [.pong(ByteBuffer(string: "Hello"))])
        let b256 = try readAll([binary256]).data
        #expect(b256 == Array(binary256.dropFirst(4)))
        let b64K = try readAll([binary64K]).data
        #expect(b64K == Array(binary64K.dropFirst(10)))
    }

    @Test func writesTheRFCExamples() {
        var out = ByteBuffer()
        WebSocketFrame.write(opcode: .text, payload: ByteBuffer(string: "Hello").readableBytesView, to: &out)
        #expect(Array(out.readableBytesView) == unmaskedHello)
        out.clear()
        WebSocketFrame.write(opcode: .text, payload: ByteBuffer(string: "Hello").readableBytesView, maskKey: 0x37fa213d, to: &out)
        #expect(Array(out.readableBytesView) == maskedHello)
        out.clear()
        WebSocketFrame.write(opcode: .text, fin: false, payload: ByteBuffer(string: "Hel").readableBytesView, to: &out)
        WebSocketFrame.write(opcode: .continuation, payload: ByteBuffer(string: "lo").readableBytesView, to: &out)
        #expect(Array(out.readableBytesView) == fragmentedHello)
        out.clear()
        WebSocketFrame.write(opcode: .ping, payload: ByteBuffer(string: "Hello").readableBytesView, to: &out)
        #expect(Array(out.readableBytesView) == unmaskedPing)
        out.clear()
        WebSocketFrame.write(opcode: .pong, payload: ByteBuffer(string: "Hello").readableBytesView, maskKey: 0x37fa213d, to: &out)
        #expect(Array(out.readableBytesView) == maskedPong)
        out.clear()
        WebSocketFrame.write(opcode: .binary, payload: ByteBuffer(bytes: binary256.dropFirst(4)).readableBytesView, to: &out)
        #expect(Array(out.readableBytesView) == binary256)
        out.clear()
        WebSocketFrame.write(opcode: .binary, payload: ByteBuffer(bytes: binary64K.dropFirst(10)).readableBytesView, to: &out)
        let same = Array(out.readableBytesView) == binary64K
        #expect(same)
    }

    @Test func lengthsUseTheirShortestForm() {
        for (length, header) in [(0, [0x82, 0x00]), (125, [0x82, 0x7D]), (126, [0x82, 0x7E, 0x00, 0x7E]),
                                 (65535, [0x82, 0x7E, 0xFF, 0xFF]), (65536, [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])] as [(Int, [UInt8])] {
            var out = ByteBuffer()
            WebSocketFrame.writeHeader(opcode: .binary, length: length, to: &out)
            #expect(Array(out.readableBytesView) == header, "length \(length)")
            #expect(WebSocketFrame.headerLength(payloadLength: length, masked: false) == header.count)
            out.clear()
            WebSocketFrame.writeHeader(opcode: .binary, length: length, maskKey: 0x01020304, to: &out)
            var expected = header
            expected[1] |= 0x80
            #expect(Array(out.readableBytesView) == expected + [1, 2, 3, 4])
            #expect(WebSocketFrame.headerLength(payloadLength: length, masked: true) == header.count + 4)
        }
    }

    @Test func theFastMaskAgreesWithTheDefinitionAtEveryPhaseAndLength() {
        var rng = SeededGenerator(seed: 6455)
        let key: UInt32 = 0xA1B2C3D4
        let keyBytes: [UInt8] = [0xA1, 0xB2, 0xC3, 0xD4]
        for length in 0..<80 {
            for phase in 0..<4 {
                let plain = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
                var buffer = ByteBuffer(bytes: plain)
                WebSocketFrame.mask(&buffer, key: key, phase: phase)
                let expected = plain.enumerated().map { $0.element ^ keyBytes[($0.offset + phase) % 4] }
                #expect(Array(buffer.readableBytesView) == expected, "length \(length), phase \(phase)")
                WebSocketFrame.mask(&buffer, key: key, phase: phase)
                #expect(Array(buffer.readableBytesView) == plain, "masking twice unmasks")
            }
        }
    }

    /// Every example back to back, then read whole, byte by byte and split at every byte.
    @Test func aStreamOfFramesReadsTheSameHoweverItIsCut() throws {
        let stream = unmaskedHello + maskedHello + fragmentedHello[..<5] + unmaskedPing + fragmentedHello[5...] + maskedPong
            + binary256 + [0x88, 0x82, 0x11, 0x22, 0x33, 0x44, 0x03 ^ 0x11, 0xE8 ^ 0x22]
        let expectedData = bytes("HelloHelloHello") + Array(binary256.dropFirst(4))
        let expectedControl: [WebSocketFrameReader.Event] = [.ping(ByteBuffer(string: "Hello")), .pong(ByteBuffer(string: "Hello")),
                                                             .close(code: 1000, reason: "")]
        let whole = try readAll([stream])
        #expect(whole.data == expectedData && whole.control == expectedControl)
        let byteByByte = try readAll(stream.map { [$0] })
        #expect(byteByByte.data == expectedData && byteByByte.control == expectedControl)
        for cut in 0...stream.count {
            let split = try readAll([Array(stream[..<cut]), Array(stream[cut...])])
            #expect(split.data == expectedData && split.control == expectedControl, "cut at \(cut)")
        }
    }

    @Test func aLargeMaskedFrameIsUnmaskedInPiecesAsTheyArrive() throws {
        var rng = SeededGenerator(seed: 1)
        let payload = (0..<200_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var frame = ByteBuffer()
        WebSocketFrame.write(opcode: .binary, payload: ByteBuffer(bytes: payload).readableBytesView, maskKey: 0xDEADBEEF, to: &frame)
        let all = Array(frame.readableBytesView)
        var chunks: [[UInt8]] = []
        var i = 0
        while i < all.count {
            let n = min(Int.random(in: 1...9000, using: &rng), all.count - i)
            chunks.append(Array(all[i..<(i + n)]))
            i += n
        }
        var reader = WebSocketFrameReader(requireMasked: true)
        var received: [UInt8] = []
        var reads = 0
        for chunk in chunks {
            var buffer = ByteBuffer(bytes: chunk)
            for event in try reader.read(&buffer) {
                guard case .data(let piece) = event else { Issue.record("unexpected \(event)"); continue }
                received += piece.readableBytesView
                reads += 1
            }
        }
        let same = received == payload
        #expect(same)
        #expect(reads > 1, "payload is handed on before the frame is complete")
    }

    @Test func closeCarriesItsCodeAndReasonAndEndsTheStream() throws {
        var withReason = ByteBuffer()
        WebSocketFrame.write(opcode: .close, payload: WebSocketFrame.closePayload(code: 1001, reason: "bye").readableBytesView, to: &withReason)
        let after = unmaskedHello
        let read = try readAll([Array(withReason.readableBytesView) + after])
        #expect(read.control == [.close(code: 1001, reason: "bye")])
        #expect(read.data.isEmpty, "bytes after Close are ignored")
        let empty = try readAll([[0x88, 0x00]])
        #expect(empty.control == [.close(code: nil, reason: "")])
        var reader = WebSocketFrameReader(requireMasked: false)
        var buffer = ByteBuffer(bytes: [0x88, 0x00])
        _ = try reader.read(&buffer)
        #expect(reader.isClosed)
    }

    @Test func emptyFramesYieldNothingButEmptyControlFramesDo() throws {
        let read = try readAll([[0x82, 0x00, 0x89, 0x00, 0x8A, 0x80, 1, 2, 3, 4]])
        #expect(read.data.isEmpty)
        #expect(read.control == [.ping(ByteBuffer()), .pong(ByteBuffer())])
    }

    @Test func protocolViolationsAreClearErrors() {
        let cases: [(String, [UInt8], Bool, WireError.Code, String)] = [
            ("RSV1 (compression)", [0xC1, 0x00], false, .malformed, "reserved bits"),
            ("RSV3", [0x92, 0x00], false, .malformed, "reserved bits"),
            ("control frame over 125 bytes", [0x89, 0x7E, 0x00, 0x7E] + Array(repeating: 0, count: 126), false, .tooLarge, "at most 125"),
            ("fragmented ping", [0x09, 0x00], false, .malformed, "fragmented"),
            ("unmasked client frame", unmaskedHello, true, .malformed, "must mask"),
            ("64-bit length with the top bit set", [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1], false, .malformed, "top bit"),
            ("Close with one byte", [0x88, 0x01, 0x03], false, .malformed, "one byte"),
            ("continuation with nothing to continue", [0x80, 0x01, 0x41], false, .malformed, "continuation"),
            ("new message inside a fragmented one", [0x01, 0x01, 0x41, 0x81, 0x01, 0x42], false, .malformed, "before the fragmented message"),
        ] + ([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] as [UInt8]).map { op in
            ("opcode \(op)", [0x80 | op, 0x00], false, .malformed, "reserved opcode")
        }
        for (name, input, requireMasked, code, phrase) in cases {
            let error = readError(input, requireMasked: requireMasked)
            #expect(error?.code == code, "\(name)")
            #expect(error?.reason.contains(phrase) == true, "\(name): \(error?.reason ?? "no error")")
        }
    }

    @Test func errorsAreSeenAsSoonAsTheirBytesArriveAndStick() throws {
        var reader = WebSocketFrameReader(requireMasked: true)
        var first = ByteBuffer(bytes: [0x82])
        #expect(try reader.read(&first).isEmpty)
        var second = ByteBuffer(bytes: [0x05])
        #expect(throws: WireError.self) { try reader.read(&second) }
        var good = ByteBuffer(bytes: maskedHello)
        #expect(throws: WireError.self, "a failed reader stays failed") { try reader.read(&good) }
    }

    @Test func garbageNeverCrashesTheReader() {
        var rng = SeededGenerator(seed: 42)
        for _ in 0..<300 {
            let garbage = (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            var reader = WebSocketFrameReader(requireMasked: Bool.random(using: &rng))
            var buffer = ByteBuffer(bytes: garbage)
            _ = try? reader.read(&buffer)
        }
    }
}

@Suite struct WebSocketHandshakeTests {
    // RFC 6455 section 1.3 and 4.1.
    let rfcKey = "dGhlIHNhbXBsZSBub25jZQ=="
    let rfcRequest = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n"

    func request(_ target: String = "/chat", version: String = "HTTP/1.1", fields: [String]? = nil) -> ByteBuffer {
        let defaults = ["Host: bridge.example", "Upgrade: websocket", "Connection: Upgrade",
                        "Sec-WebSocket-Key: \(rfcKey)", "Sec-WebSocket-Version: 13"]
        return ByteBuffer(string: "GET \(target) \(version)\r\n" + (fields ?? defaults).map { $0 + "\r\n" }.joined() + "\r\n")
    }

    func decide(_ buffer: ByteBuffer, path: String = "/chat") -> WebSocketHandshake.RequestDecision {
        WebSocketHandshake.readRequest(from: buffer, path: path)
    }

    /// RFC 6455 section 1.3 (also what Python's hashlib and base64 give).
    @Test func acceptValueIsTheRFCs() {
        #expect(WebSocketHandshake.acceptValue(forKey: rfcKey) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test func keysAreSixteenFreshBytes() {
        let a = WebSocketHandshake.makeKey(), b = WebSocketHandshake.makeKey()
        #expect(a.count == 24 && Base64.decode(a)?.count == 16)
        #expect(a != b)
    }

    @Test func theRFCRequestIsAnUpgradeAndNothingIsDecidedBeforeItEnds() {
        let whole = ByteBuffer(string: rfcRequest)
        #expect(decide(whole) == .upgrade(key: rfcKey, headLength: whole.readableBytes, earlyData: nil),
                "a real subprotocol list is not early data")
        for cut in 0..<whole.readableBytes {
            #expect(decide(whole.getSlice(at: 0, length: cut)!) == .needMoreData, "cut at \(cut)")
        }
        #expect(whole.readableBytes == rfcRequest.utf8.count, "nothing consumed")
    }

    @Test func theClientRequestLooksLikeABrowserAndTheServerAcceptsIt() throws {
        let key = WebSocketHandshake.makeKey()
        var buffer = WebSocketHandshake.clientRequest(path: "ray", host: "cdn.example:8443", key: key)
        let length = buffer.readableBytes
        #expect(WebSocketHandshake.readRequest(from: buffer, path: "/ray") == .upgrade(key: key, headLength: length, earlyData: nil))
        let head = try #require(try HTTPRequestHead.read(from: &buffer))
        #expect(head.method == "GET" && head.target == "/ray" && head.version == .http1_1)
        #expect(head.value(of: "Host") == "cdn.example:8443")
        #expect(head.value(of: "User-Agent")?.hasPrefix("Mozilla/5.0") == true)
        #expect(head.value(of: "Upgrade") == "websocket" && head.value(of: "Connection") == "Upgrade")
        #expect(head.value(of: "Sec-WebSocket-Version") == "13" && head.value(of: "Sec-WebSocket-Key") == key)
        #expect(!head.contains("Sec-WebSocket-Extensions"), "no compression is offered")
        let withQuery = WebSocketHandshake.clientRequest(path: "/ray?ed=2048", host: "h", key: key)
        #expect(String(buffer: withQuery).hasPrefix("GET /ray?ed=2048 HTTP/1.1\r\n"))
    }

    @Test func theQueryIsIgnoredOnBothSides() {
        let withQuery = request("/chat?ed=2048")
        #expect(decide(withQuery) == .upgrade(key: rfcKey, headLength: withQuery.readableBytes, earlyData: nil))
        #expect(decide(withQuery, path: "/chat?ed=2048") == .upgrade(key: rfcKey, headLength: withQuery.readableBytes, earlyData: nil))
        let plain = request("/chat")
        #expect(decide(plain, path: "/chat?ed=2048") == .upgrade(key: rfcKey, headLength: plain.readableBytes, earlyData: nil))
        #expect(decide(plain, path: "chat") == .upgrade(key: rfcKey, headLength: plain.readableBytes, earlyData: nil), "the configured path may lack its slash")
    }

    @Test func pathsAreComparedAsSentOrPercentDecoded() {
        let encoded = WebSocketHandshake.clientRequest(path: "/a b/\u{0434}", host: "h", key: rfcKey)
        #expect(String(buffer: encoded).hasPrefix("GET /a%20b/%D0%B4 HTTP/1.1\r\n"), "what a target cannot carry is encoded")
        #expect(decide(encoded, path: "/a b/\u{0434}") == .upgrade(key: rfcKey, headLength: encoded.readableBytes, earlyData: nil))
        #expect(decide(encoded, path: "/a%20b/%D0%B4") == .upgrade(key: rfcKey, headLength: encoded.readableBytes, earlyData: nil))
        #expect(decide(request("/%73ecret"), path: "/secret") != .reject)
        #expect(decide(request("/%7"), path: "/%7") != .reject)
        #expect(decide(request("/%zz"), path: "/secret") == .reject)
    }

    @Test(arguments: ["/", "/cha", "/chat/", "/Chat", "/chatx", "/chat%20", "//chat", "http://bridge.example/chat", "*"])
    func anyOtherPathIsRejected(target: String) {
        #expect(decide(request(target)) == .reject)
    }

    @Test func aWrongRequestLineIsRejectedAsSoonAsItIsComplete() {
        #expect(decide(ByteBuffer(string: "GET /wrong HTTP/1.1\r\n")) == .reject)
        #expect(decide(ByteBuffer(string: "GET /chat HTTP/1.0\r\n")) == .reject)
        #expect(decide(ByteBuffer(string: "GET /chat HTTP/2.0\r\n")) == .reject)
        #expect(decide(ByteBuffer(string: "GET  /chat HTTP/1.1\r\n")) == .reject)
        #expect(decide(ByteBuffer(string: "GET /chat HTTP/1.1\r\n")) == .needMoreData)
        #expect(decide(ByteBuffer(string: "GET /wrong HTTP/1.1")) == .needMoreData, "not before the line ends")
    }

    @Test func otherMethodsAreRejectedOnTheirFirstByte() {
        #expect(decide(ByteBuffer(string: "P")) == .reject)
        #expect(decide(ByteBuffer(string: "G")) == .needMoreData)
        #expect(decide(ByteBuffer(string: "GE")) == .needMoreData)
        #expect(decide(ByteBuffer(string: "GETX")) == .reject)
        #expect(decide(ByteBuffer(string: "get /chat HTTP/1.1\r\n\r\n")) == .reject)
        #expect(decide(ByteBuffer(string: "\r\nGET /chat HTTP/1.1\r\n")) == .reject)
        #expect(decide(ByteBuffer()) == .needMoreData)
    }

    @Test func missingOrWrongWebSocketFieldsAreRejected() {
        let key = "Sec-WebSocket-Key: \(rfcKey)"
        let cases: [(String, [String])] = [
            ("no Upgrade", ["Connection: Upgrade", key, "Sec-WebSocket-Version: 13"]),
            ("Upgrade to h2c", ["Upgrade: h2c", "Connection: Upgrade", key, "Sec-WebSocket-Version: 13"]),
            ("no Connection", ["Upgrade: websocket", key, "Sec-WebSocket-Version: 13"]),
            ("Connection: keep-alive", ["Upgrade: websocket", "Connection: keep-alive", key, "Sec-WebSocket-Version: 13"]),
            ("no version", ["Upgrade: websocket", "Connection: Upgrade", key]),
            ("version 8", ["Upgrade: websocket", "Connection: Upgrade", key, "Sec-WebSocket-Version: 8"]),
            ("two versions", ["Upgrade: websocket", "Connection: Upgrade", key, "Sec-WebSocket-Version: 13, 8"]),
            ("no key", ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"]),
            ("empty key", ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key:", "Sec-WebSocket-Version: 13"]),
            ("short key", ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: AAAA", "Sec-WebSocket-Version: 13"]),
            ("not base64", ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==", "Sec-WebSocket-Version: 13"]),
            ("two keys", ["Upgrade: websocket", "Connection: Upgrade", key, key, "Sec-WebSocket-Version: 13"]),
        ]
        for (name, fields) in cases {
            #expect(decide(request(fields: fields)) == .reject, "\(name)")
        }
    }

    @Test func fieldsAreReadAsTokensInAnyCase() {
        // Firefox's Connection field, nginx's lowercase upgrade, Go's canonical field names.
        let buffer = request(fields: ["host: x", "upgrade: WebSocket", "connection: keep-alive, upgrade",
                                      "Sec-Websocket-Key: \(rfcKey)", "Sec-Websocket-Version: 13"])
        #expect(decide(buffer) == .upgrade(key: rfcKey, headLength: buffer.readableBytes, earlyData: nil))
    }

    @Test func framesAfterTheHeadAreNotPartOfIt() {
        let head = request()
        var withFrames = head
        withFrames.writeBytes([0x82, 0x81, 1, 2, 3, 4, 0x41 ^ 1])
        #expect(decide(withFrames) == .upgrade(key: rfcKey, headLength: head.readableBytes, earlyData: nil))
    }

    @Test func xrayEarlyDataComesFromTheProtocolField() {
        let early = Array("trojan header and more".utf8)
        let header = Base64.encode(early, urlSafe: true, padded: false)
        let buffer = request(fields: ["Host: x", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: \(rfcKey)",
                                      "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: \(header)"])
        #expect(decide(buffer) == .upgrade(key: rfcKey, headLength: buffer.readableBytes,
                                           earlyData: .init(bytes: early, header: header)))
        let response = WebSocketHandshake.serverResponse(accept: "x", subprotocol: header)
        #expect(String(buffer: response).contains("\r\nSec-WebSocket-Protocol: \(header)\r\n"))
    }

    @Test func anOversizedHeadIsRejectedAndAShorterOneWaits() {
        let start = "GET /chat HTTP/1.1\r\nX-Padding: "
        let almost = ByteBuffer(string: start + String(repeating: "a", count: WebSocketHandshake.maxRequestHeadLength - start.utf8.count - 1))
        #expect(decide(almost) == .needMoreData)
        let over = ByteBuffer(string: start + String(repeating: "a", count: WebSocketHandshake.maxRequestHeadLength))
        #expect(decide(over) == .reject)
        let longLine = ByteBuffer(string: "GET /" + String(repeating: "a", count: 9000))
        #expect(decide(longLine) == .reject)
    }

    @Test func garbageIsRejectedAtOnce() {
        #expect(decide(ByteBuffer(bytes: [0x16, 0x03, 0x01, 0x02, 0x00])) == .reject, "a TLS ClientHello")
        #expect(decide(ByteBuffer(bytes: [0x00, 0xff])) == .reject)
        #expect(decide(ByteBuffer(bytes: Array("GET /chat\u{0}".utf8))) == .reject, "a control byte")
        #expect(decide(ByteBuffer(string: "SSH-2.0-OpenSSH_9.2\r\n")) == .reject)
        #expect(decide(ByteBuffer(string: "GET /chat HTTP/1.1\nHost: x\n\n")) == .reject, "bare LF")
    }

    @Test func serverResponseIsTheUsual101() {
        let response = WebSocketHandshake.serverResponse(accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        #expect(String(buffer: response) == "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    }

    @Test func theClientAcceptsTheRightAnswerAndKeepsTheFramesAfterIt() {
        let accept = WebSocketHandshake.acceptValue(forKey: rfcKey)
        var buffer = WebSocketHandshake.serverResponse(accept: accept)
        let headLength = buffer.readableBytes
        buffer.writeBytes([0x82, 0x01, 0x41])
        for cut in 0..<headLength {
            var partial = buffer.getSlice(at: 0, length: cut)!
            #expect(WebSocketHandshake.readResponse(from: &partial, expectedAccept: accept) == .needMoreData)
            #expect(partial.readableBytes == cut)
        }
        #expect(WebSocketHandshake.readResponse(from: &buffer, expectedAccept: accept) == .accepted)
        #expect(Array(buffer.readableBytesView) == [0x82, 0x01, 0x41])
        // nginx in front: its own fields and lowercase tokens.
        var nginx = ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\nServer: nginx\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: \(accept)\r\n\r\n")
        #expect(WebSocketHandshake.readResponse(from: &nginx, expectedAccept: accept) == .accepted)
    }

    @Test func everyOtherAnswerIsRejectedWithAReason() {
        let accept = WebSocketHandshake.acceptValue(forKey: rfcKey)
        let cases: [(String, WireError.Code, String)] = [
            ("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", .refused, "HTTP/1.1 404 Not Found"),
            ("HTTP/1.1 200 OK\r\n\r\n", .refused, "HTTP/1.1 200 OK"),
            ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n", .malformed, "Sec-WebSocket-Accept"),
            ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", .malformed, "Sec-WebSocket-Accept"),
            ("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: \(accept)\r\n\r\n", .malformed, "Upgrade"),
            ("\u{16}\u{3}\u{3}", .malformed, "HTTP"),
        ]
        for (answer, code, phrase) in cases {
            var buffer = ByteBuffer(string: answer)
            let decision = WebSocketHandshake.readResponse(from: &buffer, expectedAccept: accept)
            guard case .rejected(let error) = decision else {
                Issue.record("\(answer.debugDescription) was \(decision)")
                continue
            }
            #expect(error.code == code, "\(answer.debugDescription)")
            #expect(error.reason.contains(phrase), "\(error.reason)")
            #expect(buffer.readableBytes == answer.utf8.count, "nothing consumed")
        }
    }
}
