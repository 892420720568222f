import NIOCore
import NIOEmbedded
import Logging
import Testing
@testable import RahaTransport
@testable import RahaWire

/// Records what the codec passes on: request events and plaintext.
final class Recorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var requests: [Endpoint] = []
    var payload: [UInt8] = []
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ProxyRequestEvent { requests.append(event.target) }
        context.fireUserInboundEventTriggered(event)
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        payload += unwrapInboundIn(data).readableBytesView
    }
}

let target = Endpoint(host: .domain("example.org"), port: 443)

func clientBytes(_ credential: ShadowsocksCredential, payload: [UInt8]) -> ([UInt8], ShadowsocksClientSession) {
    var client = ShadowsocksClientSession(credential: credential, target: target)
    var out = ByteBuffer()
    client.seal(ByteBuffer(bytes: payload).readableBytesView, into: &out, now: unixNow())
    return (Array(out.readableBytesView), client)
}

func serverChannel(_ credential: ShadowsocksCredential, replay: SharedReplayFilter) throws -> (EmbeddedChannel, Recorder) {
    let recorder = Recorder()
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandlers([
        ShadowsocksServerCodec(roster: ClientRoster(shadowsocks: credential), replayFilter: replay, logger: Logger(label: "test")),
        recorder,
    ])
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    return (channel, recorder)
}

@Suite struct ShadowsocksServerCodecTests {
    @Test(arguments: [ShadowsocksMethod.chacha20IETFPoly1305, .blake3AES256GCM])
    func validRequestIsDecodedAndAnswerIsSealed(method: ShadowsocksMethod) throws {
        let credential = try ShadowsocksCredential(method: method, password: method.is2022 ? Base64.encode(Array(repeating: 1, count: 32)) : "pw")
        let (bytes, client) = clientBytes(credential, payload: Array("hello".utf8))
        let (channel, recorder) = try serverChannel(credential, replay: SharedReplayFilter())
        // Byte by byte: the request appears once the header is complete.
        for b in bytes { try channel.writeInbound(ByteBuffer(bytes: [b])) }
        #expect(recorder.requests == [target])
        #expect(recorder.payload == Array("hello".utf8))

        try channel.writeOutbound(ByteBuffer(string: "world"))
        var sealed = try #require(try channel.readOutbound(as: ByteBuffer.self))
        var c = client
        var plain = ByteBuffer()
        try c.receive(&sealed, payload: &plain, now: unixNow())
        #expect(String(buffer: plain) == "world")
        _ = try channel.finish()
    }

    @Test func garbageWrongKeyAndReplayAllLookTheSame() throws {
        let credential = try ShadowsocksCredential(method: .aes256GCM, password: "pw")
        let replay = SharedReplayFilter()
        let (valid, _) = clientBytes(credential, payload: Array("GET / HTTP/1.1\r\n\r\n".utf8))
        let (first, firstRecorder) = try serverChannel(credential, replay: replay)
        try first.writeInbound(ByteBuffer(bytes: valid))
        #expect(firstRecorder.requests.count == 1)

        let wrongKey = clientBytes(try ShadowsocksCredential(method: .aes256GCM, password: "other"), payload: [1, 2, 3]).0
        var rng = SystemRandomNumberGenerator()
        let probes: [[UInt8]] = [
            valid,                                        // replay of a recorded connection
            wrongKey,                                     // another key
            (0..<300).map { _ in rng.next() },            // garbage
            Array(valid.prefix(40)),                      // truncated
            [],                                           // nothing
        ]
        for probe in probes {
            let (channel, recorder) = try serverChannel(credential, replay: replay)
            if !probe.isEmpty { try channel.writeInbound(ByteBuffer(bytes: probe)) }
            // More bytes after the failure are read and dropped too.
            try channel.writeInbound(ByteBuffer(bytes: [0, 1, 2, 3]))
            #expect(recorder.requests.isEmpty)
            #expect(recorder.payload.isEmpty)
            #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "never answers")
            #expect(channel.isActive, "stays open until the idle timeout or the peer closes")
            // The peer closing gets the same answer every time: we close too.
            channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            #expect(!channel.isActive)
        }
    }
}

@Suite struct ShadowsocksClientCodecTests {
    @Test func headerGoesAloneAfterTheDelayForServerFirstProtocols() throws {
        let credential = try ShadowsocksCredential(method: .chacha20IETFPoly1305, password: "pw")
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandlers([ShadowsocksClientCodec(credential: credential, target: target, prefix: Array("GET /a".utf8)), FirstWriteDeadline()])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        loop.advanceTime(by: .milliseconds(100))
        var header = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(header.readableBytesView.starts(with: Array("GET /a".utf8)))
        var server = ShadowsocksServerSession(credential: credential)
        var plain = ByteBuffer()
        #expect(try server.receive(&header, payload: &plain, now: unixNow())?.target == target)
        #expect(plain.readableBytes == 0)
        _ = try channel.finish()
    }

    @Test func firstWriteCarriesHeaderAndPayloadTogether() throws {
        let credential = try ShadowsocksCredential(method: .blake3AES128GCM, password: Base64.encode(Array(repeating: 3, count: 16)))
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandlers([ShadowsocksClientCodec(credential: credential, target: target, prefix: []), FirstWriteDeadline()])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.writeOutbound(ByteBuffer(string: "ping"))
        var wire = try #require(try channel.readOutbound(as: ByteBuffer.self))
        loop.advanceTime(by: .seconds(1))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "no second header")
        var server = ShadowsocksServerSession(credential: credential)
        var plain = ByteBuffer()
        #expect(try server.receive(&wire, payload: &plain, now: unixNow())?.target == target)
        #expect(String(buffer: plain) == "ping")
        _ = try channel.finish()
    }
}

/// Records which client a codec named.
final class ClientRecorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var clients: [String] = []
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ClientAuthenticatedEvent { clients.append(event.clientID) }
        context.fireUserInboundEventTriggered(event)
    }
}

@Suite struct SharedListenerTests {
    @Test func theShadowsocksCodecTellsTheCircleApartAndSeesRosterChangesOnNewConnections() throws {
        let maryam = try ShadowsocksCredential(method: .chacha20IETFPoly1305, password: "maryam's")
        let reza = try ShadowsocksCredential(method: .chacha20IETFPoly1305, password: "reza's")
        let roster = ClientRoster([.init(id: "Maryam", shadowsocks: maryam), .init(id: "Reza", shadowsocks: reza)])
        func connection() throws -> (EmbeddedChannel, ClientRecorder, Recorder) {
            let clients = ClientRecorder(), recorder = Recorder()
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandlers([
                ShadowsocksServerCodec(roster: roster, replayFilter: SharedReplayFilter(), logger: Logger(label: "test")), clients, recorder,
            ])
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            return (channel, clients, recorder)
        }
        let (bytes, client) = clientBytes(reza, payload: Array("hello".utf8))
        let (channel, clients, recorder) = try connection()
        // In two reads, the first too short to tell who it is.
        try channel.writeInbound(ByteBuffer(bytes: bytes.prefix(20)))
        #expect(clients.clients.isEmpty)
        try channel.writeInbound(ByteBuffer(bytes: bytes.dropFirst(20)))
        #expect(clients.clients == ["Reza"] && recorder.requests == [target] && recorder.payload == Array("hello".utf8))
        // The answer is sealed with Reza's key.
        try channel.writeOutbound(ByteBuffer(string: "salam"))
        var sealed = try #require(try channel.readOutbound(as: ByteBuffer.self))
        var c = client
        var plain = ByteBuffer()
        try c.receive(&sealed, payload: &plain, now: unixNow())
        #expect(String(buffer: plain) == "salam")

        // Reza leaves the roster: his next connection is a stranger's, answered with nothing.
        roster.replace(with: [.init(id: "Maryam", shadowsocks: maryam)])
        let (again, againClients, againRecorder) = try connection()
        try again.writeInbound(ByteBuffer(bytes: clientBytes(reza, payload: [1]).0))
        #expect(againClients.clients.isEmpty && againRecorder.requests.isEmpty)
        #expect(try again.readOutbound(as: ByteBuffer.self) == nil && again.isActive)
        _ = try? channel.finish()
        _ = try? again.finish()
    }
}
