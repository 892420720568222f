import NIOCore
import NIOEmbedded
import Testing
@testable import RahaTransport

/// What reaches the handler after the watcher (the bridge's exit).
private final class EventRecorder: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    var events: [Any] = []
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) { events.append(event) }
}

@Suite struct HandshakeGuardTests {
    /// An open connection from `address`, with a guard first and its watcher after it.
    static func connection(from address: String, _ pending: PendingHandshakes, on loop: EmbeddedEventLoop) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        channel.remoteAddress = try SocketAddress(ipAddress: address, port: 40_000)
        let handshake = HandshakeGuard(pending: pending)
        try channel.pipeline.syncOperations.addHandlers([handshake, handshake.makeWatcher(), EventRecorder()])
        return channel
    }

    @Test func closesAConnectionThatHasNotAuthenticatedAtItsDeadline() throws {
        let loop = EmbeddedEventLoop()
        let pending = PendingHandshakes(deadline: .seconds(60), perSource: 4)
        let channel = try Self.connection(from: "192.0.2.1", pending, on: loop)
        try channel.writeInbound(ByteBuffer(bytes: [1, 2, 3]))
        loop.advanceTime(by: .seconds(60) - .nanoseconds(1))
        #expect(channel.isActive, "closed before its deadline")
        #expect(pending.pendingCount == 1)
        loop.advanceTime(by: .nanoseconds(1))
        #expect(!channel.isActive, "still open at its deadline")
        loop.run()
        #expect(pending.pendingCount == 0)
    }

    @Test func authenticatingEndsTheDeadlineAndFreesThePlace() throws {
        let loop = EmbeddedEventLoop()
        let pending = PendingHandshakes(deadline: .seconds(60), perSource: 4)
        let channel = try Self.connection(from: "192.0.2.1", pending, on: loop)
        channel.pipeline.fireUserInboundEventTriggered(ClientAuthenticatedEvent(clientID: "a"))
        loop.run()
        #expect(pending.pendingCount == 0)
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: HandshakeGuard.self) }
        let passedOn = try channel.pipeline.syncOperations.handler(type: EventRecorder.self).events
        #expect(passedOn.count == 1 && passedOn.first is ClientAuthenticatedEvent, "the exit did not learn who authenticated")
        loop.advanceTime(by: .seconds(3600))
        #expect(channel.isActive, "an authenticated connection was closed at the handshake deadline")
    }

    @Test func aFallbackConnectionIsTimedByTheSiteButKeepsItsPlace() throws {
        let loop = EmbeddedEventLoop()
        let pending = PendingHandshakes(deadline: .seconds(60), perSource: 4)
        let channel = try Self.connection(from: "192.0.2.1", pending, on: loop)
        channel.pipeline.fireUserInboundEventTriggered(HandedToFallbackEvent())
        loop.advanceTime(by: .seconds(3600))
        #expect(channel.isActive, "a connection handed to the site was closed at the handshake deadline")
        #expect(pending.pendingCount == 1)
        try channel.close().wait()
        loop.run()
        #expect(pending.pendingCount == 0)
    }

    @Test func aSourcePastItsLimitLosesItsOldestConnection() throws {
        let loop = EmbeddedEventLoop()
        let pending = PendingHandshakes(deadline: .seconds(60), perSource: 2)
        let first = try Self.connection(from: "192.0.2.1", pending, on: loop)
        let second = try Self.connection(from: "::ffff:192.0.2.1", pending, on: loop)
        let neighbour = try Self.connection(from: "192.0.2.2", pending, on: loop)
        let third = try Self.connection(from: "192.0.2.1", pending, on: loop)
        loop.run()
        #expect(!first.isActive, "the oldest connection from the source was kept")
        #expect(second.isActive && third.isActive, "the newer connections from the source were closed")
        #expect(neighbour.isActive, "another source's connection was closed")
        #expect(pending.pendingCount == 3)
    }

    @Test func anIPv6SourceIsItsSlash64() throws {
        let loop = EmbeddedEventLoop()
        let pending = PendingHandshakes(deadline: .seconds(60), perSource: 1)
        let first = try Self.connection(from: "2001:db8::1", pending, on: loop)
        let otherNetwork = try Self.connection(from: "2001:db8:0:1::1", pending, on: loop)
        let sameNetwork = try Self.connection(from: "2001:db8::ffff:2", pending, on: loop)
        loop.run()
        #expect(!first.isActive, "a second address in the same /64 did not count against it")
        #expect(otherNetwork.isActive && sameNetwork.isActive)
    }

    @Test func theDeadlineClosesTheSocketUnderAnyHandlersAfterIt() throws {
        // Handlers after the guard (TLS, in a Trojan listener) do not see the close: a handler
        // there that would write on close (a TLS close_notify) writes nothing.
        final class WritesOnClose: ChannelOutboundHandler {
            typealias OutboundIn = NIOAny
            func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
                context.writeAndFlush(NIOAny(ByteBuffer(bytes: [21, 3, 3])), promise: nil)
                context.close(mode: mode, promise: promise)
            }
        }
        let loop = EmbeddedEventLoop()
        let pending = PendingHandshakes(deadline: .seconds(1), perSource: 4)
        let channel = try Self.connection(from: "192.0.2.1", pending, on: loop)
        try channel.pipeline.syncOperations.addHandler(WritesOnClose(), position: .after(channel.pipeline.syncOperations.handler(type: HandshakeGuard.self)))
        loop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "something was written as the deadline closed the connection")
    }
}
