import NIOCore
import NIOPosix
import Testing
@testable import RahaTransport

private final class Echo: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.writeAndFlush(data, promise: nil) }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The listener passes half-closes through: the client leaving is one.
        if case .some(.inputClosed) = event as? ChannelEvent { context.close(promise: nil) }
    }
}

/// Collects what a client receives, and notes when its connection ends.
private final class Collector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let firstByte: EventLoopPromise<UInt8>
    init(firstByte: EventLoopPromise<UInt8>) { self.firstByte = firstByte }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if let byte = buffer.readInteger(as: UInt8.self) { firstByte.succeed(byte) }
    }
    func channelInactive(context: ChannelHandlerContext) {
        firstByte.fail(ChannelError.eof)
    }
}

@Suite struct ConnectionGateTests {
    @Test func capacityKeepsDescriptorsBackAndCountsTwoPerConnection() {
        #expect(ConnectionGate.capacity(forDescriptorLimit: 20_000) == 9_375)
        #expect(ConnectionGate.capacity(forDescriptorLimit: 1024) == 480)
        #expect(ConnectionGate.capacity(forDescriptorLimit: 256) == 112)
        #expect(ConnectionGate.capacity(forDescriptorLimit: 10) == 1)
    }

    @Test func admitsUpToCapacityAndAgainAfterARelease() {
        let gate = ConnectionGate(capacity: 2)
        #expect(gate.admit() && gate.admit())
        #expect(!gate.admit())
        #expect(!gate.admit())
        gate.release()
        #expect(gate.admit())
        #expect(gate.openConnections == 2)
    }

    /// A listener with room for two: the third client is closed at once,
    /// the first two keep working, and once one leaves a new one gets in.
    @Test func aListenerClosesWhatItHasNoRoomForAndServesTheRest() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let gate = ConnectionGate(capacity: 2)
        let server = try await ServerBootstrap.rahaListener(group: group, gate: gate)
            .childChannelInitializer { $0.pipeline.addHandler(Echo()) }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(server.localAddress?.port)

        func connect() async throws -> (Channel, EventLoopFuture<UInt8>) {
            let promise = group.next().makePromise(of: UInt8.self)
            let channel = try await ClientBootstrap(group: group)
                .channelInitializer { $0.pipeline.addHandler(Collector(firstByte: promise)) }
                .connect(host: "127.0.0.1", port: port).get()
            return (channel, promise.futureResult)
        }
        func echoes(_ client: (Channel, EventLoopFuture<UInt8>), _ byte: UInt8) async throws -> Bool {
            try await client.0.writeAndFlush(ByteBuffer(bytes: [byte]))
            return (try? await client.1.get()) == byte
        }

        let first = try await connect(), second = try await connect()
        #expect(try await echoes(first, 1))
        #expect(try await echoes(second, 2))
        let third = try await connect()
        try? await third.0.writeAndFlush(ByteBuffer(bytes: [3]))
        await #expect(throws: (any Error).self) { try await third.1.get() }
        try await third.0.closeFuture.get()
        #expect(gate.openConnections == 2)

        try await first.0.close()
        // The server notices the close on its own time: wait for the place to come back.
        for _ in 0..<1000 where gate.openConnections > 1 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(gate.openConnections == 1)
        let fourth = try await connect()
        #expect(try await echoes(fourth, 4))
        try await second.0.close()
        try await fourth.0.close()
        try await server.close()
        try await group.shutdownGracefully()
    }
}
