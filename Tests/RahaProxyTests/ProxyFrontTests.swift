import Glibc
import Logging
import NIOCore
import NIOEmbedded
import Testing
@testable import RahaProxy
@testable import RahaTransport
@testable import RahaWire

/// A dialer whose streams are EmbeddedChannels on the test's loop.
final class FakeDialer: StreamDialer, @unchecked Sendable {
    let loop: EmbeddedEventLoop
    var fail: Error?
    var dialed: [Endpoint] = []
    var streams: [EmbeddedChannel] = []
    init(loop: EmbeddedEventLoop) { self.loop = loop }
    var label: String { "fake" }

    func dial(_ target: Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<Channel> {
        dialed.append(target)
        if let fail { return loop.makeFailedFuture(fail) }
        let stream = EmbeddedChannel(loop: loop)
        streams.append(stream)
        return stream.connect(to: try! SocketAddress(ipAddress: "127.0.0.1", port: 2)).map { stream }
    }

    func associate(on eventLoop: EventLoop, receive: @escaping @Sendable (Endpoint, ByteBuffer) -> Void) -> EventLoopFuture<PacketAssociation> {
        loop.makeFailedFuture(ChannelError.operationUnsupported)
    }
}

func frontChannel(_ dialer: FakeDialer, credentials: ProxyCredentials? = nil) throws -> EmbeddedChannel {
    let channel = EmbeddedChannel(loop: dialer.loop)
    try channel.pipeline.syncOperations.addHandler(ProxyFrontHandler(dialer: dialer, credentials: credentials, logger: Logger(label: "test")))
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    return channel
}

func outbound(_ channel: EmbeddedChannel) throws -> [UInt8] {
    var all: [UInt8] = []
    while let b = try channel.readOutbound(as: ByteBuffer.self) { all += b.readableBytesView }
    return all
}

@Suite struct ProxyFrontTests {
    @Test func socksConnectJoinsTheStream() throws {
        let dialer = FakeDialer(loop: EmbeddedEventLoop())
        let front = try frontChannel(dialer)
        // Greeting, request and early payload in one packet, as fast clients send them.
        try front.writeInbound(ByteBuffer(bytes: [5, 1, 0, 5, 1, 0, 3, 11] + Array("example.org".utf8) + [0, 80] + Array("GET /".utf8)))
        #expect(try outbound(front) == [5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(dialer.dialed == [Endpoint(host: .domain("example.org"), port: 80)], "the name goes to the bridge unresolved")
        let stream = try #require(dialer.streams.first)
        #expect(try outbound(stream) == Array("GET /".utf8))
        try front.writeInbound(ByteBuffer(string: " more"))
        #expect(try outbound(stream) == Array(" more".utf8))
        try stream.writeInbound(ByteBuffer(string: "answer"))
        #expect(try outbound(front) == Array("answer".utf8))
    }

    @Test func socksRefusalsGetTheirReplyCodes() throws {
        let dialer = FakeDialer(loop: EmbeddedEventLoop())
        let bind = try frontChannel(dialer)
        try bind.writeInbound(ByteBuffer(bytes: [5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80]))
        #expect(try outbound(bind) == [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(!bind.isActive)

        let noMethod = try frontChannel(dialer, credentials: ProxyCredentials(username: "u", password: "p"))
        try noMethod.writeInbound(ByteBuffer(bytes: [5, 1, 0]))
        #expect(try outbound(noMethod) == [5, 0xFF])

        dialer.fail = IOError(errnoCode: ECONNREFUSED, reason: "connect")
        let refused = try frontChannel(dialer)
        try refused.writeInbound(ByteBuffer(bytes: [5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 1, 0, 80]))
        #expect(try outbound(refused) == [5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(!refused.isActive)
    }

    @Test func httpConnectAndErrors() throws {
        let dialer = FakeDialer(loop: EmbeddedEventLoop())
        let front = try frontChannel(dialer)
        try front.writeInbound(ByteBuffer(string: "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n"))
        #expect(String(decoding: try outbound(front), as: UTF8.self) == "HTTP/1.1 200 Connection established\r\n\r\n")
        #expect(dialer.dialed == [Endpoint(host: .domain("example.org"), port: 443)])

        let garbage = try frontChannel(dialer)
        try garbage.writeInbound(ByteBuffer(bytes: [0x16, 0x03, 0x01, 0x00, 0x05]))
        #expect(String(decoding: try outbound(garbage), as: UTF8.self).hasPrefix("HTTP/1.1 400"))

        let auth = try frontChannel(dialer, credentials: ProxyCredentials(username: "u", password: "p"))
        try auth.writeInbound(ByteBuffer(string: "CONNECT example.org:443 HTTP/1.1\r\n\r\n"))
        #expect(String(decoding: try outbound(auth), as: UTF8.self).hasPrefix("HTTP/1.1 407"))
    }

    @Test func httpForwardingRewritesAndKeepsAlive() throws {
        let dialer = FakeDialer(loop: EmbeddedEventLoop())
        let front = try frontChannel(dialer)
        try front.writeInbound(ByteBuffer(string: "GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\nProxy-Connection: keep-alive\r\n\r\n"))
        let stream = try #require(dialer.streams.first)
        let sent = String(decoding: try outbound(stream), as: UTF8.self)
        #expect(sent.hasPrefix("GET /x HTTP/1.1\r\n"))
        #expect(!sent.lowercased().contains("proxy-connection"))
        try stream.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        #expect(String(decoding: try outbound(front), as: UTF8.self) == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        // Same origin: same stream.
        try front.writeInbound(ByteBuffer(string: "GET http://a.test/y HTTP/1.1\r\nHost: a.test\r\n\r\n"))
        #expect(dialer.streams.count == 1)
        #expect(String(decoding: try outbound(stream), as: UTF8.self).hasPrefix("GET /y HTTP/1.1\r\n"))
        try stream.writeInbound(ByteBuffer(string: "HTTP/1.1 204 No Content\r\n\r\n"))
        #expect(String(decoding: try outbound(front), as: UTF8.self) == "HTTP/1.1 204 No Content\r\n\r\n")
        // Another origin, once the previous response is complete: a new stream.
        try front.writeInbound(ByteBuffer(string: "GET http://b.test/z HTTP/1.1\r\nHost: b.test\r\n\r\n"))
        #expect(dialer.dialed.map(\.hostText) == ["a.test", "b.test"])
        #expect(front.isActive)
    }
}
