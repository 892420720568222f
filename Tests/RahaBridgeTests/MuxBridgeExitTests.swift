import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing
@testable import RahaBridge
import RahaTransport
import RahaWire

/// Echoes what it reads and half-closes when its input ends.
private final class HalfClosingEcho: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.write(data, promise: nil) }
    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event { context.close(mode: .output, promise: nil) }
    }
    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}

/// What the local proxy front does once it knows the target: opens a
/// stream (here on a mux connection instead of through a dialer) and
/// splices the client socket to it with the glue.
private final class MuxFront: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let connection: Channel
    private let target: Endpoint
    private var pending: [ByteBuffer] = []
    private var inputClosed = false

    init(connection: Channel, target: Endpoint) {
        self.connection = connection
        self.target = target
    }

    func channelActive(context: ChannelHandlerContext) {
        try! context.channel.syncOptions!.setOption(.autoRead, value: false)
        let mux = try! connection.pipeline.syncOperations.handler(type: MuxHandler.self)
        guard let opening = mux.openStream(to: target) else {
            context.close(promise: nil)
            return
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        opening.whenComplete { result in
            let (handler, context) = loopBound.value
            switch result {
            case .success(let stream):
                for buffer in handler.pending { stream.write(buffer, promise: nil) }
                stream.flush()
                GlueHandler.splice(replacing: handler, at: context, with: stream, inputClosed: handler.inputClosed)
            case .failure:
                context.close(promise: nil)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { pending.append(unwrapInboundIn(data)) }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event { inputClosed = true }
    }
}

/// A client of the front: sends its bytes, half-closes, collects the answer until the end.
private final class SendThenCollect: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let payload: ByteBuffer
    private let done: EventLoopPromise<ByteBuffer>
    private var received = ByteBuffer()
    private var offset = 0
    private var outputClosed = false

    init(payload: ByteBuffer, done: EventLoopPromise<ByteBuffer>) {
        self.payload = payload
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) { pump(context: context) }
    func channelWritabilityChanged(context: ChannelHandlerContext) { pump(context: context) }

    private func pump(context: ChannelHandlerContext) {
        while context.channel.isWritable && offset < payload.readableBytes {
            let n = min(16 * 1024, payload.readableBytes - offset)
            let start = offset
            offset += n
            context.write(wrapOutboundOut(payload.getSlice(at: start, length: n)!), promise: nil)
        }
        context.flush()
        if offset == payload.readableBytes && !outputClosed {
            outputClosed = true
            context.close(mode: .output, promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        received.writeBuffer(&buffer)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            done.succeed(received)
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { done.fail(error) }
    // A socket whose output is already closed reports the end of its input
    // by closing (NIO escalates to a full close), not with `inputClosed`.
    func channelInactive(context: ChannelHandlerContext) { done.succeed(received) }
}

@Suite struct MuxBridgeExitTests {
    struct Timeout: Error {}

    /// Waits for `future`, failing after a generous time so a bug cannot hang the suite.
    static func within<T: Sendable>(_ future: EventLoopFuture<T>) async throws -> T {
        let promise = future.eventLoop.makePromise(of: T.self)
        future.cascade(to: promise)
        let timer = future.eventLoop.scheduleTask(in: .seconds(120)) { promise.fail(Timeout()) }
        defer { timer.cancel() }
        return try await promise.futureResult.get()
    }

    /// Sockets -> front -> glue -> mux stream -> one connection -> mux stream
    /// -> the bridge's own exit handler -> a TCP echo server, and back: the
    /// existing glue and exit work on mux streams as they are.
    @Test func theFrontGlueAndBridgeExitWorkOnMuxStreams() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let exit = Exit(policy: ExitPolicy(allowPrivate: true), threadPool: threadPool)
        let logger = Logger(label: "test")

        let echo = try await ServerBootstrap.rahaListener(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(HalfClosingEcho()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let bridge = try await ServerBootstrap.rahaListener(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let mux = MuxHandler(role: .server) { stream in
                        stream.eventLoop.makeCompletedFuture {
                            try stream.pipeline.syncOperations.addHandler(BridgeExitHandler(exit: exit, logger: logger))
                        }
                    }
                    try channel.pipeline.syncOperations.addHandler(mux)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let connection = try await ClientBootstrap.rahaStream(group: group, connectTimeout: .seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(MuxHandler(role: .client)) }
            }
            .connect(host: "127.0.0.1", port: bridge.localAddress!.port!).get()
        let target = Endpoint(host: .ipv4([127, 0, 0, 1]), port: UInt16(echo.localAddress!.port!))
        let front = try await ServerBootstrap.rahaListener(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(MuxFront(connection: connection, target: target))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()

        var transfers: [(ByteBuffer, EventLoopFuture<ByteBuffer>)] = []
        for i in 0..<8 {
            var payload = ByteBuffer()
            for j in 0..<(512 * 1024 / 4) { payload.writeInteger(UInt32(truncatingIfNeeded: i &* 0x0101_0101 &+ j)) }
            let done = group.next().makePromise(of: ByteBuffer.self)
            let sendPayload = payload
            _ = try await ClientBootstrap.rahaStream(group: group, connectTimeout: .seconds(10))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(SendThenCollect(payload: sendPayload, done: done))
                    }
                }
                .connect(host: "127.0.0.1", port: front.localAddress!.port!).get()
            transfers.append((payload, done.futureResult))
        }
        for (i, (payload, done)) in transfers.enumerated() {
            let echoed = try await Self.within(done)
            let intact = echoed == payload
            #expect(intact, "connection \(i): \(echoed.readableBytes) of \(payload.readableBytes) bytes")
        }
        // Every stream ends on both sides; the connection stays for the next ones.
        var settled = false
        for _ in 0..<6000 where !settled {
            settled = try await connection.eventLoop.submit {
                (try connection.pipeline.syncOperations.handler(type: MuxHandler.self)).streamCount == 0
            }.get()
            if !settled { try await Task.sleep(nanoseconds: 10_000_000) }
        }
        #expect(settled)
        #expect(connection.isActive)

        try await front.close()
        try await connection.close()
        try await bridge.close()
        try await echo.close()
        try await threadPool.shutdownGracefully()
        try await group.shutdownGracefully()
    }
}
