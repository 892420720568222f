import NIOCore
import NIOEmbedded
import Testing
@testable import RahaTransport
@testable import RahaWire

/// Records what reaches the end of a pipeline: payload, half-closes, errors.
private final class StreamLog: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var payload: [UInt8] = []
    var reads = 0
    var inputClosed = 0
    var requests: [Endpoint] = []
    var errors: [Error] = []
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        payload += unwrapInboundIn(data).readableBytesView
        reads += 1
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event { inputClosed += 1 }
        if let event = event as? ProxyRequestEvent { requests.append(event.target) }
    }
    func errorCaught(context: ChannelHandlerContext, error: Error) { errors.append(error) }
}

/// Fallback sites as EmbeddedChannels that record half-closes (see `ReadCounter`).
private final class Sites: @unchecked Sendable {
    let loop: EmbeddedEventLoop
    var opened: [(channel: EmbeddedChannel, counter: ReadCounter)] = []
    init(loop: EmbeddedEventLoop) { self.loop = loop }

    var dialer: FallbackDialer {
        { [self] _ in
            let site = EmbeddedChannel(loop: loop)
            let counter = ReadCounter()
            try! site.pipeline.syncOperations.addHandler(counter)
            opened.append((site, counter))
            return site.connect(to: try! SocketAddress(ipAddress: "127.0.0.1", port: 80)).map { site }
        }
    }
}

private func outbound(_ channel: EmbeddedChannel) throws -> [UInt8] {
    var all: [UInt8] = []
    while let b = try channel.readOutbound(as: ByteBuffer.self) { all += b.readableBytesView }
    return all
}

/// Moves bytes both ways until neither side has anything to send, handing
/// them over in pieces of at most `piece` bytes.
private func pump(_ a: EmbeddedChannel, _ b: EmbeddedChannel, piece: Int = .max) throws {
    var moved = true
    while moved {
        moved = false
        for (from, to) in [(a, b), (b, a)] {
            while let buffer = try from.readOutbound(as: ByteBuffer.self) {
                moved = true
                guard to.isActive else { continue }
                var rest = buffer
                while rest.readableBytes > 0, to.isActive {
                    try to.writeInbound(rest.readSlice(length: min(piece, rest.readableBytes))!)
                }
            }
        }
    }
}

/// Frames read by a plain reader (what a peer sees of a handler's output).
private func frames(_ bytes: [UInt8], masked: Bool) throws -> [WebSocketFrameReader.Event] {
    var reader = WebSocketFrameReader(requireMasked: masked)
    var buffer = ByteBuffer(bytes: bytes)
    return try reader.read(&buffer)
}

private func maskedFrame(_ opcode: WebSocketOpcode, _ payload: [UInt8], key: UInt32 = 0x1234_5678) -> ByteBuffer {
    var out = ByteBuffer()
    WebSocketFrame.write(opcode: opcode, payload: ByteBuffer(bytes: payload).readableBytesView, maskKey: key, to: &out)
    return out
}

private func upgradeRequest(_ path: String = "/secret", key: String = "dGhlIHNhbXBsZSBub25jZQ==", extra: String = "") -> ByteBuffer {
    ByteBuffer(string: "GET \(path) HTTP/1.1\r\nHost: bridge.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\(extra)\r\n")
}

@Suite struct WebSocketHandlerTests {
    fileprivate struct Pair {
        let loop: EmbeddedEventLoop
        let client: EmbeddedChannel
        let server: EmbeddedChannel
        let upgraded: EventLoopFuture<Void>
        let clientLog: StreamLog
        let serverLog: StreamLog
        let sites: Sites
    }

    private func pair(clientPath: String = "/secret?ed=2048", serverPath: String = "/secret", connect: Bool = true) throws -> Pair {
        let loop = EmbeddedEventLoop()
        let sites = Sites(loop: loop)
        let client = EmbeddedChannel(loop: loop), server = EmbeddedChannel(loop: loop)
        let promise = loop.makePromise(of: Void.self)
        let clientLog = StreamLog(), serverLog = StreamLog()
        try client.pipeline.syncOperations.addHandlers([WebSocketClientHandler(path: clientPath, host: "bridge.example", upgraded: promise), clientLog])
        try server.pipeline.syncOperations.addHandlers([WebSocketServerHandler(path: serverPath, fallback: sites.dialer), serverLog])
        try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        if connect { try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait() }
        return Pair(loop: loop, client: client, server: server, upgraded: promise.futureResult,
                    clientLog: clientLog, serverLog: serverLog, sites: sites)
    }

    private func upgradedPair() throws -> Pair {
        let p = try pair()
        try pump(p.client, p.server)
        try p.upgraded.wait()
        return p
    }

    @Test func theClientUpgradesAndBytesCrossBothWays() throws {
        let p = try pair()
        let request = try #require(try p.client.readOutbound(as: ByteBuffer.self))
        #expect(String(buffer: request).hasPrefix("GET /secret?ed=2048 HTTP/1.1\r\nHost: bridge.example\r\n"))
        try p.server.writeInbound(request)
        let answer = try #require(try p.server.readOutbound(as: ByteBuffer.self))
        #expect(String(buffer: answer).hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
        try p.client.writeInbound(answer)
        try p.upgraded.wait()

        try p.client.writeOutbound(ByteBuffer(string: "hello"))
        let fromClient = try outbound(p.client)
        #expect(try frames(fromClient, masked: true) == [.data(ByteBuffer(string: "hello"))], "one masked binary frame")
        #expect(fromClient[0] == 0x82)
        try p.server.writeInbound(ByteBuffer(bytes: fromClient))
        #expect(p.serverLog.payload == Array("hello".utf8))

        try p.server.writeOutbound(ByteBuffer(string: "world"))
        let fromServer = try outbound(p.server)
        #expect(fromServer == [0x82, 0x05] + Array("world".utf8), "one unmasked binary frame")
        try p.client.writeInbound(ByteBuffer(bytes: fromServer))
        #expect(p.clientLog.payload == Array("world".utf8))
        #expect(p.sites.opened.isEmpty)
    }

    @Test func aHandlerAddedToAnActiveChannelSendsItsRequestAtOnce() throws {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.addHandler(
            WebSocketClientHandler(path: "x", host: "h", upgraded: channel.eventLoop.makePromise()))
        let request = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(String(buffer: request).hasPrefix("GET /x HTTP/1.1\r\n"))
    }

    @Test func writesBeforeTheUpgradeWaitAndKeepTheirOrder() throws {
        let p = try pair()
        let first = p.client.writeAndFlush(ByteBuffer(string: "one "))
        p.client.write(ByteBuffer(string: "two"), promise: nil)
        p.client.flush()
        let request = try #require(try p.client.readOutbound(as: ByteBuffer.self))
        #expect(try p.client.readOutbound(as: ByteBuffer.self) == nil, "nothing but the request before the 101")
        p.client.pipeline.fireChannelActive()
        #expect(try p.client.readOutbound(as: ByteBuffer.self) == nil, "no second request")
        try p.server.writeInbound(request)
        try pump(p.client, p.server)
        try first.wait()
        #expect(p.serverLog.payload == Array("one two".utf8))
    }

    @Test func aMebibyteCrossesBothWaysInOddPieces() throws {
        let p = try upgradedPair()
        let up = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 11) }
        let down = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: ($0 &* 40_503 &+ 7) >> 5) }
        p.client.write(ByteBuffer(bytes: up[..<1000]), promise: nil)
        p.client.write(ByteBuffer(bytes: up[1000...]), promise: nil)
        p.client.flush()
        try p.server.writeOutbound(ByteBuffer(bytes: down))
        try pump(p.client, p.server, piece: 1357)
        let upArrived = p.serverLog.payload == up
        let downArrived = p.clientLog.payload == down
        #expect(upArrived)
        #expect(downArrived)
        #expect(p.serverLog.reads > 2, "payload is passed on as it arrives, not per frame")
    }

    @Test func pingsAreAnsweredWithTheirPayload() throws {
        let p = try upgradedPair()
        try p.server.writeInbound(maskedFrame(.ping, Array("are you there".utf8)))
        let pong = try outbound(p.server)
        #expect(try frames(pong, masked: false) == [.pong(ByteBuffer(string: "are you there"))])
        #expect(pong[1] & 0x80 == 0, "the server does not mask")

        var ping = ByteBuffer()
        WebSocketFrame.write(opcode: .ping, payload: ByteBuffer(string: "x").readableBytesView, to: &ping)
        try p.client.writeInbound(ping)
        let clientPong = try outbound(p.client)
        #expect(try frames(clientPong, masked: true) == [.pong(ByteBuffer(string: "x"))], "the client masks")
        try p.server.writeInbound(maskedFrame(.pong, [1, 2]))
        #expect(try outbound(p.server).isEmpty, "a pong needs no answer")
        #expect(p.serverLog.payload.isEmpty && p.clientLog.payload.isEmpty)
    }

    @Test func closeFramesAreHalfClosesAndBothEndsCloseWhenBothAreDone() throws {
        let p = try upgradedPair()
        let clientDone = p.client.close(mode: .output)
        try pump(p.client, p.server)
        try clientDone.wait()
        #expect(p.serverLog.inputClosed == 1, "the client's Close ends the server's input")
        #expect(p.server.isActive && p.client.isActive, "the other direction goes on")
        try p.server.writeOutbound(ByteBuffer(string: "last words"))
        try pump(p.client, p.server)
        #expect(p.clientLog.payload == Array("last words".utf8))
        #expect(throws: ChannelError.outputClosed, "nothing can be written after the Close frame") {
            try p.client.writeOutbound(ByteBuffer(string: "too late"))
        }
        let serverDone = p.server.close(mode: .output)
        try pump(p.client, p.server)
        try serverDone.wait()
        #expect(p.clientLog.inputClosed == 1)
        #expect(!p.server.isActive && !p.client.isActive, "both directions ended: both close")
        #expect(p.serverLog.payload.isEmpty)
    }

    @Test func aSecondHalfCloseSendsNoSecondCloseFrame() throws {
        let p = try upgradedPair()
        p.client.close(mode: .output, promise: nil)
        let once = try outbound(p.client)
        p.client.close(mode: .output, promise: nil)
        #expect(try outbound(p.client).isEmpty)
        #expect(try frames(once, masked: true) == [.close(code: 1000, reason: "")])
    }

    @Test func theEndOfTheConnectionIsTheEndOfInputOnce() throws {
        let p = try upgradedPair()
        try p.server.writeInbound(maskedFrame(.close, [0x03, 0xE8]))
        p.server.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(p.serverLog.inputClosed == 1)
        p.client.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(p.clientLog.inputClosed == 1, "a connection's end without Close frame ends the input too")
    }

    @Test func aFullCloseSendsACloseFrameFirst() throws {
        let p = try upgradedPair()
        try p.server.close().wait()
        #expect(try frames(outbound(p.server), masked: false) == [.close(code: 1000, reason: "")])
    }

    @Test func aProtocolViolationClosesWithCode1002() throws {
        let p = try upgradedPair()
        var unmasked = ByteBuffer()
        WebSocketFrame.write(opcode: .binary, payload: ByteBuffer(string: "hi").readableBytesView, to: &unmasked)
        try p.server.writeInbound(unmasked)
        #expect(try frames(outbound(p.server), masked: false) == [.close(code: 1002, reason: "")])
        #expect(!p.server.isActive)
        #expect((p.serverLog.errors.first as? WireError)?.reason.contains("must mask") == true)
        #expect(p.serverLog.payload.isEmpty)
    }

    @Test func framesInTheSameReadAsTheHeadAndEarlyDataAreNotLost() throws {
        let p = try pair(connect: false)
        let early = Base64.encode(Array("early ".utf8), urlSafe: true, padded: false)
        var bytes = upgradeRequest(extra: "Sec-WebSocket-Protocol: \(early)\r\n")
        bytes.writeImmutableBuffer(maskedFrame(.binary, Array("and framed".utf8)))
        try p.server.writeInbound(bytes)
        #expect(p.serverLog.payload == Array("early and framed".utf8))
        let answer = String(decoding: try outbound(p.server), as: UTF8.self)
        #expect(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"))
        #expect(answer.contains("Sec-WebSocket-Protocol: \(early)\r\n"))
    }

    @Test func theClientTakesFramesThatArriveWithThe101() throws {
        let p = try pair()
        let request = try #require(try p.client.readOutbound(as: ByteBuffer.self))
        try p.server.writeInbound(request)
        try p.server.writeOutbound(ByteBuffer(string: "server first"))
        var answer = ByteBuffer(bytes: try outbound(p.server))
        // Byte by byte: the head is only complete with its last byte.
        while answer.readableBytes > 0 { try p.client.writeInbound(answer.readSlice(length: 1)!) }
        try p.upgraded.wait()
        #expect(p.clientLog.payload == Array("server first".utf8))
    }

    @Test(arguments: ["a wrong path", "a browser", "a scanner", "garbage", "an oversized head"])
    func everyoneElseIsSplicedToTheFallbackSiteByteForByte(who: String) throws {
        let p = try pair(connect: false)
        let first: [UInt8]
        switch who {
        case "a wrong path": first = Array(upgradeRequest("/secret2").readableBytesView)
        case "a browser": first = Array("GET /secret HTTP/1.1\r\nHost: bridge.example\r\nAccept: */*\r\n\r\n".utf8)
        case "a scanner": first = Array("OPTIONS * HTTP/1.1\r\n".utf8)
        case "garbage": first = [0x16, 0x03, 0x01, 0x00, 0xff] + Array(repeating: 0x41, count: 100)
        default: first = Array(("GET /secret HTTP/1.1\r\nX: " + String(repeating: "a", count: 9000)).utf8)
        }
        // In two reads, to see that nothing is lost while deciding.
        try p.server.writeInbound(ByteBuffer(bytes: first[..<3]))
        #expect(p.sites.opened.isEmpty || who == "garbage" || who == "a scanner")
        try p.server.writeInbound(ByteBuffer(bytes: first[3...]))
        let site = try #require(p.sites.opened.first?.channel)
        #expect(try outbound(site) == first, "the site sees exactly what the prober sent")
        try p.server.writeInbound(ByteBuffer(string: "more"))
        #expect(try outbound(site) == Array("more".utf8))
        try site.writeInbound(ByteBuffer(string: "HTTP/1.1 404 Not Found\r\n\r\n"))
        #expect(try outbound(p.server) == Array("HTTP/1.1 404 Not Found\r\n\r\n".utf8), "and the prober sees exactly the site's answer")
        #expect(p.serverLog.payload.isEmpty && p.serverLog.reads == 0)
    }

    @Test func aReplayedUpgradeIsSplicedToTheSiteLikeAStranger() throws {
        let loop = EmbeddedEventLoop()
        let sites = Sites(loop: loop)
        let keys = SharedReplayFilter(retention: 3600)
        func server() throws -> EmbeddedChannel {
            let channel = EmbeddedChannel(loop: loop)
            try channel.pipeline.syncOperations.addHandlers([WebSocketServerHandler(path: "/secret", fallback: sites.dialer, upgradeKeys: keys), StreamLog()])
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            return channel
        }
        let recorded = upgradeRequest("/secret")
        let first = try server(), replay = try server(), fresh = try server()
        try first.writeInbound(recorded)
        #expect(String(decoding: try outbound(first), as: UTF8.self).hasPrefix("HTTP/1.1 101 "))
        try replay.writeInbound(recorded)
        let site = try #require(sites.opened.first?.channel)
        #expect(try outbound(site) == Array(recorded.readableBytesView), "the site sees the replay, byte for byte")
        #expect(try outbound(replay).isEmpty, "no 101 for the replay")
        // A client's next upgrade has a fresh key and is served.
        try fresh.writeInbound(upgradeRequest("/secret", key: WebSocketHandshake.makeKey()))
        #expect(String(decoding: try outbound(fresh), as: UTF8.self).hasPrefix("HTTP/1.1 101 "))
        #expect(sites.opened.count == 1)
    }

    @Test func aHalfCloseWhileDecidingGoesToTheSiteWithTheBytes() throws {
        let p = try pair(connect: false)
        try p.server.writeInbound(ByteBuffer(string: "GET /secret HTTP/1.1\r\nHost: x\r\n"))
        #expect(p.sites.opened.isEmpty)
        p.server.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        let site = try #require(p.sites.opened.first)
        #expect(try outbound(site.channel) == Array("GET /secret HTTP/1.1\r\nHost: x\r\n".utf8))
        #expect(site.counter.outputClosed, "the site sees the half-close")
        #expect(p.serverLog.reads == 0)
    }

    @Test func aClientWithTheWrongPathGetsTheSitesAnswerAsAClearError() throws {
        let p = try pair(clientPath: "/guess")
        p.client.writeAndFlush(ByteBuffer(string: "queued"), promise: nil)
        let request = try #require(try p.client.readOutbound(as: ByteBuffer.self))
        try p.server.writeInbound(request)
        let site = try #require(p.sites.opened.first?.channel)
        #expect(try outbound(site) == Array(request.readableBytesView))
        try site.writeInbound(ByteBuffer(string: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
        try pump(p.client, p.server)
        #expect(throws: WireError.self) { try p.upgraded.wait() }
        do {
            try p.upgraded.wait()
        } catch let error as WireError {
            #expect(error.code == .refused)
            #expect(error.reason.contains("HTTP/1.1 404 Not Found"))
        }
        #expect(!p.client.isActive)
        #expect(p.clientLog.payload.isEmpty)
    }

    @Test func aWrongAcceptFailsTheUpgradeAndTheQueuedWrites() throws {
        let p = try pair()
        let queued = p.client.writeAndFlush(ByteBuffer(string: "secret payload"))
        try p.client.writeInbound(WebSocketHandshake.serverResponse(accept: WebSocketHandshake.acceptValue(forKey: "AAAAAAAAAAAAAAAAAAAAAA==")))
        #expect(throws: WireError.self) { try p.upgraded.wait() }
        #expect(throws: WireError.self) { try queued.wait() }
        #expect(!p.client.isActive)
        let sent = try outbound(p.client)
        #expect(!String(decoding: sent, as: UTF8.self).contains("secret payload"))
    }

    @Test func aConnectionThatEndsBeforeTheAnswerFailsTheUpgrade() throws {
        let p = try pair()
        p.client.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(throws: WireError.self) { try p.upgraded.wait() }
        let q = try pair()
        try q.client.close().wait()
        #expect(throws: (any Error).self) { try q.upgraded.wait() }
    }

    @Test func trojanRidesOnTop() throws {
        let loop = EmbeddedEventLoop()
        let sites = Sites(loop: loop)
        let target = Endpoint(host: .domain("example.org"), port: 443)
        let client = EmbeddedChannel(loop: loop), server = EmbeddedChannel(loop: loop)
        let promise = loop.makePromise(of: Void.self)
        let log = StreamLog()
        try client.pipeline.syncOperations.addHandlers([
            WebSocketClientHandler(path: "/ray", host: "cdn.example", upgraded: promise),
            TrojanClientCodec(password: "pw", target: target),
        ])
        try server.pipeline.syncOperations.addHandlers([
            WebSocketServerHandler(path: "/ray", fallback: sites.dialer),
            TrojanServerCodec(passwords: ["pw"], fallback: sites.dialer),
            log,
        ])
        try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
        // Before the upgrade: held (so not waited for here) and sent after it.
        client.writeAndFlush(ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n"), promise: nil)
        try pump(client, server)
        try promise.futureResult.wait()
        #expect(log.requests == [target])
        #expect(log.payload == Array("GET / HTTP/1.1\r\n\r\n".utf8))
        #expect(sites.opened.isEmpty)
    }
}
