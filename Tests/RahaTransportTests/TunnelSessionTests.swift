import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing
@testable import RahaTransport
@testable import RahaWire

/// Two DNS tunnel session ends joined by an in-memory link (each client
/// segment is one "query", answered at once): the mux, Noise and the ARQ
/// together, with no DNS in between.
@Suite("DNS tunnel sessions")
struct TunnelSessionTests {
    /// Echoes each stream's bytes back.
    final class Echo: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            context.writeAndFlush(data, promise: nil)
        }
    }

    /// Collects a stream's bytes until `expected` arrived.
    final class Collect: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let expected: Int
        let done: EventLoopPromise<ByteBuffer>
        var received = ByteBuffer()
        init(expected: Int, done: EventLoopPromise<ByteBuffer>) {
            self.expected = expected
            self.done = done
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            received.writeBuffer(&buffer)
            if received.readableBytes >= expected { done.succeed(received) }
        }
        func channelInactive(context: ChannelHandlerContext) {
            done.fail(ChannelError.eof)
        }
    }

    /// Client and server ends on one loop, and the link between them, moved every millisecond.
    final class Pair {
        let client: TunnelSession
        let server: TunnelSession
        let clientMux: MuxHandler
        var link: RepeatedTask?

        init(loop: EventLoop, serverKey: NoiseKeyPair, clientKnows publicKey: [UInt8]) throws {
            let prologue = TunnelSession.prologue(zone: try DNSName("t.example"))
            let session = UInt64.random(in: 1...UInt64.max)
            client = TunnelSession(channel: TunnelChannel(eventLoop: loop), arq: ARQConnection(session: session, role: .client),
                                   noise: try NoiseStream(role: .initiator(responderStatic: publicKey), prologue: prologue))
            server = TunnelSession(channel: TunnelChannel(eventLoop: loop), arq: ARQConnection(session: session, role: .server),
                                   noise: try NoiseStream(role: .responder(serverKey), prologue: prologue))
            clientMux = MuxHandler(role: .client, configuration: .init(padding: .off))
            try client.channel.pipeline.syncOperations.addHandler(clientMux)
            try server.channel.pipeline.syncOperations.addHandler(MuxHandler(role: .server, configuration: .init(padding: .off)) { stream in
                stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(Echo()) }
            })
            client.start()
            server.start()
            link = loop.scheduleRepeatedTask(initialDelay: .milliseconds(1), delay: .milliseconds(1)) { [self] _ in move() }
        }

        func move() {
            let now = TunnelSession.now()
            var rounds = 0
            while rounds < 64, let query = client.nextSegment(now: now, budget: 140) {
                rounds += 1
                server.receive(query, now: now)
                client.receive(server.answer(now: now, budget: 1100), now: now)
            }
        }

        func stop() { link?.cancel() }
    }

    @Test("A stream through a session pair: 300 KB echoed back byte for byte, the handshake authenticated")
    func echoThroughSessions() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let key = NoiseKeyPair.generate()
        let payload = muxPattern(seed: 5, count: 300_000)
        let (pair, done) = try await loop.submit { () -> (Pair, EventLoopFuture<ByteBuffer>) in
            let pair = try Pair(loop: loop, serverKey: key, clientKnows: key.publicKey)
            let done = loop.makePromise(of: ByteBuffer.self)
            let target = Endpoint(host: .domain("example.org"), port: 80)
            pair.clientMux.openStream(to: target) { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandler(Collect(expected: payload.readableBytes, done: done))
                }
            }!.whenSuccess { stream in stream.writeAndFlush(payload, promise: nil) }
            return (pair, done.futureResult)
        }.get()
        let echoed = try await muxWithin(done)
        #expect(echoed == payload, "echoed \(echoed.readableBytes) bytes, sent \(payload.readableBytes)")
        let established = try await loop.submit { pair.client.isEstablished && pair.server.isEstablished }.get()
        #expect(established)
        try await loop.submit { pair.stop() }.get()
        try await group.shutdownGracefully()
    }

    @Test("A client that knows another public key: the server cannot read it, the session is reset, and nothing reaches a stream")
    func wrongKeyIsRefused() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let pair = try await loop.submit {
            try Pair(loop: loop, serverKey: NoiseKeyPair.generate(), clientKnows: NoiseKeyPair.generate().publicKey)
        }.get()
        let finished = try await muxEventually(on: loop) { pair.client.isFinished && pair.server.isFinished }
        #expect(finished, "the sessions were not reset")
        let state = try await loop.submit { (pair.client.isEstablished, pair.server.isEstablished, pair.client.channel.isActive) }.get()
        #expect(state == (false, false, false))
        try await loop.submit { pair.stop() }.get()
        try await group.shutdownGracefully()
    }
}
