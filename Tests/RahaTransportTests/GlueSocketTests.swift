import NIOCore
import NIOPosix
import Testing
@testable import RahaTransport

/// Sends `total` bytes as fast as the socket takes them, then ends its
/// output (once they are out: NIO turns the half-close of a socket whose
/// input has ended into a full close that drops queued writes).
private final class Source: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let total: Int
    private var sent = 0
    init(total: Int) { self.total = total }
    func channelActive(context: ChannelHandlerContext) { pump(context: context) }
    func channelWritabilityChanged(context: ChannelHandlerContext) { pump(context: context) }
    private func pump(context: ChannelHandlerContext) {
        guard sent < total else { return }
        var last: EventLoopFuture<Void>?
        while context.channel.isWritable && sent < total {
            let n = min(32 * 1024, total - sent)
            sent += n
            last = context.write(wrapOutboundOut(ByteBuffer(repeating: UInt8(truncatingIfNeeded: sent / 1024), count: n)))
        }
        context.flush()
        if sent == total, let last {
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            last.whenComplete { _ in loopBound.value.close(mode: .output, promise: nil) }
        }
    }
}

/// Ends its output at once, then reads slowly, one read at a time.
private final class SlowReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let done: EventLoopPromise<Int>
    private var received = 0
    private var timer: RepeatedTask?
    init(done: EventLoopPromise<Int>) { self.done = done }
    func channelActive(context: ChannelHandlerContext) {
        context.close(mode: .output, promise: nil)
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(1), delay: .milliseconds(1)) { _ in
            loopBound.value.read()
        }
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { received += unwrapInboundIn(data).readableBytes }
    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        done.succeed(received)
    }
    func errorCaught(context: ChannelHandlerContext, error: Error) { done.fail(error) }
}

@Suite struct GlueSocketTests {
    /// The client half-closes first and reads slowly; the server's answer
    /// ends while bytes still wait in the front socket. They must all arrive.
    @Test func anAnswerAfterTheClientsHalfCloseArrivesWhole() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let total = 4 * 1024 * 1024
        let upstream = try await ServerBootstrap.rahaListener(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Source(total: total)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let upstreamPort = upstream.localAddress!.port!
        // Small kernel buffers, so that bytes wait in the front socket itself.
        let front = try await ServerBootstrap.rahaListener(group: group)
            .childChannelOption(.socketOption(.so_sndbuf), value: 8192)
            .childChannelInitializer { channel in
                ClientBootstrap.rahaStream(group: channel.eventLoop, connectTimeout: .seconds(10))
                    .connect(host: "127.0.0.1", port: upstreamPort)
                    .flatMap { GlueHandler.join(channel, $0) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let done = group.next().makePromise(of: Int.self)
        _ = try await ClientBootstrap.rahaStream(group: group, connectTimeout: .seconds(10))
            .channelOption(.autoRead, value: false)
            .channelOption(.socketOption(.so_rcvbuf), value: 8192)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(SlowReader(done: done)) }
            }
            .connect(host: "127.0.0.1", port: front.localAddress!.port!).get()
        let timeout = group.next().scheduleTask(in: .seconds(120)) { done.fail(ChannelError.connectTimeout(.seconds(120))) }
        let received = try await done.futureResult.get()
        timeout.cancel()
        #expect(received == total)
        try await front.close()
        try await upstream.close()
        try await group.shutdownGracefully()
    }
}
