import NIOCore
import NIOEmbedded
import Testing
@testable import RahaTransport
@testable import RahaWire

/// Hands out EmbeddedChannels as the fallback site and remembers them.
final class FakeSite: @unchecked Sendable {
    let loop: EmbeddedEventLoop
    var sites: [EmbeddedChannel] = []
    init(loop: EmbeddedEventLoop) { self.loop = loop }

    var dialer: FallbackDialer {
        { [self] _ in
            let site = EmbeddedChannel(loop: loop)
            sites.append(site)
            return site.connect(to: try! SocketAddress(ipAddress: "127.0.0.1", port: 80)).map { site }
        }
    }
}

func drain(_ channel: EmbeddedChannel) throws -> [UInt8] {
    var all: [UInt8] = []
    while let b = try channel.readOutbound(as: ByteBuffer.self) { all += b.readableBytesView }
    return all
}

@Suite struct TrojanServerCodecTests {
    let target = Endpoint(host: .domain("example.org"), port: 443)

    func bridge(_ site: FakeSite) throws -> (EmbeddedChannel, Recorder) {
        let recorder = Recorder()
        let channel = EmbeddedChannel(loop: site.loop)
        try channel.pipeline.syncOperations.addHandlers([TrojanServerCodec(passwords: ["other", "right"], fallback: site.dialer), recorder])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, recorder)
    }

    func header(_ password: String, payload: String) -> [UInt8] {
        var out = ByteBuffer()
        Trojan.writeHeader(passwordHash: Trojan.passwordHash(password), request: .init(command: .connect, destination: target),
                           payload: ByteBuffer(string: payload).readableBytesView, to: &out)
        return Array(out.readableBytesView)
    }

    @Test func anAuthenticatedClientGetsItsStreamEvenByteByByte() throws {
        let site = FakeSite(loop: EmbeddedEventLoop())
        let (channel, recorder) = try bridge(site)
        for byte in header("right", payload: "GET / HTTP/1.1\r\n\r\n") { try channel.writeInbound(ByteBuffer(bytes: [byte])) }
        #expect(recorder.requests == [target])
        #expect(String(decoding: recorder.payload, as: UTF8.self) == "GET / HTTP/1.1\r\n\r\n")
        #expect(site.sites.isEmpty)
        #expect(try drain(channel).isEmpty, "the bridge says nothing of its own")
    }

    @Test(arguments: ["a browser", "a wrong password", "garbage"])
    func everyoneElseIsSplicedToTheFallbackSiteByteForByte(who: String) throws {
        let site = FakeSite(loop: EmbeddedEventLoop())
        let (channel, recorder) = try bridge(site)
        let first: [UInt8]
        switch who {
        case "a browser": first = Array("GET / HTTP/1.1\r\nHost: bridge.example\r\n\r\n".utf8)
        case "a wrong password": first = header("wrong", payload: "GET / HTTP/1.1\r\n\r\n")
        default: first = [0x00, 0xff, 0x13, 0x37] + Array(repeating: 0x41, count: 100)
        }
        try channel.writeInbound(ByteBuffer(bytes: first))
        let fallback = try #require(site.sites.first)
        #expect(try drain(fallback) == first, "the site sees exactly what the prober sent")
        try channel.writeInbound(ByteBuffer(string: "more"))
        #expect(try drain(fallback) == Array("more".utf8))
        try fallback.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\n<html>"))
        #expect(try drain(channel) == Array("HTTP/1.1 200 OK\r\n\r\n<html>".utf8), "and the prober sees exactly the site's answer")
        #expect(recorder.requests.isEmpty && recorder.payload.isEmpty)
    }
}

@Suite struct TrojanClientCodecTests {
    @Test func theFirstWriteCarriesHeaderAndPayload() throws {
        let target = Endpoint(host: .ipv4([192, 0, 2, 1]), port: 80)
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(TrojanClientCodec(password: "right", target: target))
        try channel.writeOutbound(ByteBuffer(string: "ping"))
        try channel.writeOutbound(ByteBuffer(string: "pong"))
        var first = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(Trojan.readHeader(from: &first, userHashes: [Trojan.passwordHash("right")]) == .authenticated(user: 0, request: .init(command: .connect, destination: target)))
        #expect(String(buffer: first) == "ping")
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "pong"), "later writes pass unchanged")
    }
}

@Suite struct FirstWriteDeadlineTests {
    let target = Endpoint(host: .ipv4([192, 0, 2, 1]), port: 25)

    func client(_ loop: EmbeddedEventLoop) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandlers([TrojanClientCodec(password: "right", target: target), FirstWriteDeadline(delay: .milliseconds(100))])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    @Test func aServerFirstProtocolGetsTheHeaderAloneAfterTheDelay() throws {
        let loop = EmbeddedEventLoop()
        let channel = try client(loop)
        loop.advanceTime(by: .milliseconds(99))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "not before the delay")
        loop.advanceTime(by: .milliseconds(1))
        var header = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(Trojan.readHeader(from: &header, userHashes: [Trojan.passwordHash("right")]) == .authenticated(user: 0, request: .init(command: .connect, destination: target)))
        #expect(header.readableBytes == 0)
        try channel.writeOutbound(ByteBuffer(string: "EHLO"))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "EHLO"), "no second header")
    }

    @Test func anEarlyWriteCancelsTheDeadline() throws {
        let loop = EmbeddedEventLoop()
        let channel = try client(loop)
        try channel.writeOutbound(ByteBuffer(string: "GET /"))
        _ = try #require(try channel.readOutbound(as: ByteBuffer.self))
        loop.advanceTime(by: .seconds(1))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
    }
}

@Suite struct TrojanFallbackHalfCloseTests {
    @Test func aHalfCloseBeforeTheHeaderIsCompleteGoesToTheSiteWithTheBytes() throws {
        let loop = EmbeddedEventLoop()
        let site = FakeSite(loop: loop)
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandlers([TrojanServerCodec(passwords: ["right"], fallback: site.dialer), Recorder()])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let partial = Array(Trojan.passwordHash("right").prefix(20))
        try channel.writeInbound(ByteBuffer(bytes: partial))
        #expect(site.sites.isEmpty, "still deciding")
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        let fallback = try #require(site.sites.first)
        #expect(try drain(fallback) == partial)
    }
}

@Suite struct TrojanRosterTests {
    @Test func theTrojanCodecNamesTheClientWhosePasswordMatched() throws {
        let site = FakeSite(loop: EmbeddedEventLoop())
        let roster = ClientRoster([.init(id: "Ali", trojanPassword: "ali's"), .init(id: "Bahar", trojanPassword: "bahar's")])
        let clients = ClientRecorder()
        let channel = EmbeddedChannel(loop: site.loop)
        try channel.pipeline.syncOperations.addHandlers([TrojanServerCodec(roster: roster, fallback: site.dialer), clients, Recorder()])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        var out = ByteBuffer()
        Trojan.writeHeader(passwordHash: Trojan.passwordHash("bahar's"), request: .init(command: .connect, destination: Endpoint(host: .domain("example.org"), port: 443)),
                           payload: ByteBuffer(string: "x").readableBytesView, to: &out)
        try channel.writeInbound(out)
        #expect(clients.clients == ["Bahar"])
        _ = try? channel.finish()
    }
}
