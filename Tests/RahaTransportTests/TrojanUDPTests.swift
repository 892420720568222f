import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing
@testable import RahaTransport
@testable import RahaWire

/// Records what a UDP handler hands on: events and frames.
private final class UDPRecorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var udpRequests = 0
    var connectRequests: [Endpoint] = []
    var bytes: [UInt8] = []
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is UDPAssociateRequestEvent { udpRequests += 1 }
        if let event = event as? ProxyRequestEvent { connectRequests.append(event.target) }
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { bytes += unwrapInboundIn(data).readableBytesView }
}

private func frames(_ list: [Trojan.UDPFrame]) -> [UInt8] {
    var out = ByteBuffer()
    for frame in list { frame.write(to: &out) }
    return Array(out.readableBytesView)
}

private let dns = Endpoint(host: .ipv4([192, 0, 2, 53]), port: 53)
private let named = Endpoint(host: .domain("example.org"), port: 443)

@Suite struct TrojanServerCodecUDPTests {
    /// A connected server codec for the password "right", its fallback sites and what it passes on.
    private func codec() throws -> (FakeSite, UDPRecorder, EmbeddedChannel) {
        let site = FakeSite(loop: EmbeddedEventLoop())
        let recorder = UDPRecorder()
        let channel = EmbeddedChannel(loop: site.loop)
        try channel.pipeline.syncOperations.addHandlers([TrojanServerCodec(passwords: ["right"], fallback: site.dialer), recorder])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (site, recorder, channel)
    }

    @Test func anAuthenticatedUDPAssociateBecomesAnEventThenTheFramesByteByByte() throws {
        let (site, recorder, channel) = try codec()
        var header = ByteBuffer()
        // The destination in the header is whatever the client chose (here 0.0.0.0:0).
        Trojan.writeHeader(passwordHash: Trojan.passwordHash("right"),
                           request: .init(command: .udpAssociate, destination: Endpoint(host: .ipv4([0, 0, 0, 0]), port: 0)), to: &header)
        let body = frames([.init(endpoint: dns, payload: ByteBuffer(string: "query")), .init(endpoint: named, payload: ByteBuffer(string: "x"))])
        for byte in Array(header.readableBytesView) + body { try channel.writeInbound(ByteBuffer(bytes: [byte])) }
        #expect(recorder.udpRequests == 1)
        #expect(recorder.connectRequests.isEmpty)
        #expect(recorder.bytes == body, "the frames follow the event untouched")
        #expect(site.sites.isEmpty, "an authenticated client never reaches the site")
    }

    @Test func aUDPAssociateWithAWrongPasswordGoesToTheSite() throws {
        let (site, recorder, channel) = try codec()
        var header = ByteBuffer()
        Trojan.writeHeader(passwordHash: Trojan.passwordHash("wrong"), request: .init(command: .udpAssociate, destination: dns), to: &header)
        let sent = Array(header.readableBytesView) + frames([.init(endpoint: dns, payload: ByteBuffer(string: "q"))])
        try channel.writeInbound(ByteBuffer(bytes: sent))
        let fallback = try #require(site.sites.first)
        #expect(try drain(fallback) == sent)
        #expect(recorder.udpRequests == 0)
    }
}

@Suite struct TrojanUDPClientHandlerTests {
    final class Received: @unchecked Sendable {
        let lock = NIOLock()
        var list: [(Endpoint, [UInt8])] = []
        func add(_ endpoint: Endpoint, _ payload: ByteBuffer) { lock.withLock { list.append((endpoint, Array(payload.readableBytesView))) } }
    }

    func client() throws -> (EmbeddedChannel, Received) {
        let received = Received()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(TrojanUDPClientHandler(password: "right") { received.add($0, $1) })
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, received)
    }

    @Test func theFirstDatagramCarriesTheHeaderNamingItsDestinationLaterOnesDoNot() throws {
        let (channel, _) = try client()
        try channel.writeOutbound(Trojan.UDPFrame(endpoint: dns, payload: ByteBuffer(string: "one")))
        try channel.writeOutbound(Trojan.UDPFrame(endpoint: named, payload: ByteBuffer(string: "two")))
        var first = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(Trojan.readHeader(from: &first, userHashes: [Trojan.passwordHash("right")])
                == .authenticated(user: 0, request: .init(command: .udpAssociate, destination: dns)))
        #expect(Array(first.readableBytesView) == frames([.init(endpoint: dns, payload: ByteBuffer(string: "one"))]),
                "header and first frame in one write")
        let second = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(Array(second.readableBytesView) == frames([.init(endpoint: named, payload: ByteBuffer(string: "two"))]))
    }

    @Test func aDatagramTooLargeForCommonServersIsDropped() throws {
        let (channel, _) = try client()
        let big = ByteBuffer(bytes: Array(repeating: 1, count: Trojan.maxUDPPayload + 1))
        #expect(throws: WireError.self) { try channel.writeOutbound(Trojan.UDPFrame(endpoint: dns, payload: big)) }
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        let largest = ByteBuffer(bytes: Array(repeating: 1, count: Trojan.maxUDPPayload))
        try channel.writeOutbound(Trojan.UDPFrame(endpoint: dns, payload: largest))
        #expect(try channel.readOutbound(as: ByteBuffer.self) != nil)
    }

    @Test func repliesAreDeliveredWithTheirSourceHoweverTheStreamIsSplit() throws {
        let replies: [Trojan.UDPFrame] = [
            .init(endpoint: dns, payload: ByteBuffer(string: "answer")),
            .init(endpoint: named, payload: ByteBuffer(bytes: Array(repeating: 7, count: 1400))),
        ]
        let bytes = frames(replies)
        for cut in [1, 5, 12, 20, bytes.count - 1] {
            let (channel, received) = try client()
            try channel.writeInbound(ByteBuffer(bytes: bytes[..<cut]))
            try channel.writeInbound(ByteBuffer(bytes: bytes[cut...]))
            #expect(received.list.map(\.0) == [dns, named], "split at \(cut)")
            #expect(received.list.map(\.1) == replies.map { Array($0.payload.readableBytesView) })
            #expect(channel.isActive)
        }
    }

    @Test func aMalformedFrameFromTheServerClosesTheConnection() throws {
        let (channel, received) = try client()
        try channel.writeInbound(ByteBuffer(bytes: [9, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
        #expect(!channel.isActive)
        #expect(received.list.isEmpty)
    }
}

@Suite struct TrojanPacketAssociationTests {
    /// Hands out EmbeddedChannels as Trojan UDP connections and remembers them.
    final class Connections: @unchecked Sendable {
        let loop = EmbeddedEventLoop()
        var opened: [EmbeddedChannel] = []
        let received = TrojanUDPClientHandlerTests.Received()

        var open: TrojanPacketAssociation.Open {
            { [self] _ in
                let channel = EmbeddedChannel(loop: loop)
                let received = self.received
                try! channel.pipeline.syncOperations.addHandler(TrojanUDPClientHandler(password: "right") { received.add($0, $1) })
                opened.append(channel)
                return channel.connect(to: try! SocketAddress(ipAddress: "127.0.0.1", port: 1)).map { channel }
            }
        }
    }

    /// The frames written on `channel`, after the header if it is the first write.
    func sent(_ channel: EmbeddedChannel) throws -> (header: Trojan.Request?, frames: [Trojan.UDPFrame]) {
        var all = ByteBuffer(bytes: try drain(channel))
        var request: Trojan.Request?
        if case .authenticated(_, let r) = Trojan.readHeader(from: &all, userHashes: [Trojan.passwordHash("right")]) { request = r }
        var cutter = Trojan.UDPFrameCutter()
        cutter.append(all)
        var frames: [Trojan.UDPFrame] = []
        while let frame = try cutter.next() { frames.append(frame) }
        return (request, frames)
    }

    @Test func datagramsGoOutAsFramesAndRepliesComeBack() throws {
        let connections = Connections()
        let association = try TrojanPacketAssociation.start(on: connections.loop, open: connections.open).wait()
        let connection = try #require(connections.opened.first)
        #expect(try connection.readOutbound(as: ByteBuffer.self) == nil, "nothing is sent before the first datagram")
        association.send(ByteBuffer(string: "a"), to: dns)
        association.send(ByteBuffer(string: "b"), to: named)
        let (header, sentFrames) = try sent(connection)
        #expect(header == .init(command: .udpAssociate, destination: dns))
        #expect(sentFrames == [.init(endpoint: dns, payload: ByteBuffer(string: "a")), .init(endpoint: named, payload: ByteBuffer(string: "b"))])
        try connection.writeInbound(ByteBuffer(bytes: frames([.init(endpoint: dns, payload: ByteBuffer(string: "reply"))])))
        #expect(connections.received.list.map(\.0) == [dns])
        association.close()
        #expect(!connection.isActive)
        association.send(ByteBuffer(string: "late"), to: dns)
        #expect(connections.opened.count == 1, "a closed association opens nothing")
    }

    @Test func whileTheConnectionIsNotWritableDatagramsAreDropped() throws {
        let connections = Connections()
        let association = try TrojanPacketAssociation.start(on: connections.loop, open: connections.open).wait()
        let connection = try #require(connections.opened.first)
        association.send(ByteBuffer(string: "first"), to: dns)
        connection.isWritable = false
        for _ in 0..<100 { association.send(ByteBuffer(string: "dropped"), to: dns) }
        connection.isWritable = true
        association.send(ByteBuffer(string: "last"), to: dns)
        #expect(try sent(connection).frames.map { String(buffer: $0.payload) } == ["first", "last"])
    }

    @Test func afterTheServerClosesTheNextDatagramOpensANewConnection() throws {
        let connections = Connections()
        let association = try TrojanPacketAssociation.start(on: connections.loop, open: connections.open).wait()
        let first = try #require(connections.opened.first)
        association.send(ByteBuffer(string: "one"), to: dns)
        _ = try sent(first)
        try first.close().wait() // the bridge's idle timeout
        connections.loop.run()
        association.send(ByteBuffer(string: "two"), to: named)
        #expect(connections.opened.count == 2)
        let second = try #require(connections.opened.last)
        connections.loop.run()
        let (header, sentFrames) = try sent(second)
        #expect(header == .init(command: .udpAssociate, destination: named), "a new connection, a new header")
        #expect(sentFrames.map { String(buffer: $0.payload) } == ["two"])
        association.close()
    }

    @Test func datagramsTooLargeForAFrameAreDropped() throws {
        let connections = Connections()
        let association = try TrojanPacketAssociation.start(on: connections.loop, open: connections.open).wait()
        association.send(ByteBuffer(bytes: Array(repeating: 0, count: Trojan.maxUDPPayload + 1)), to: dns)
        association.send(ByteBuffer(string: "small"), to: dns)
        #expect(try sent(try #require(connections.opened.first)).frames.map { String(buffer: $0.payload) } == ["small"])
    }
}
