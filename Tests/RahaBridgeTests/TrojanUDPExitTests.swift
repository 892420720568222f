import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing
@testable import RahaBridge
import RahaTransport
@testable import RahaWire

/// Stands in for the bridge's UDP socket: records datagrams, replies on demand.
final class FakeExit: DatagramExit {
    var sent: [(Endpoint, String)] = []
    var closed = false
    let onReply: (Endpoint, ByteBuffer) -> Void
    init(onReply: @escaping (Endpoint, ByteBuffer) -> Void) { self.onReply = onReply }
    func send(_ payload: ByteBuffer, to target: Endpoint) { sent.append((target, String(buffer: payload))) }
    func close() { closed = true }
}

private func frameBytes(_ frames: [Trojan.UDPFrame]) -> [UInt8] {
    var out = ByteBuffer()
    for frame in frames { frame.write(to: &out) }
    return Array(out.readableBytesView)
}

private func readFrames(_ channel: EmbeddedChannel) throws -> [Trojan.UDPFrame] {
    var cutter = Trojan.UDPFrameCutter()
    while let buffer = try channel.readOutbound(as: ByteBuffer.self) { cutter.append(buffer) }
    var frames: [Trojan.UDPFrame] = []
    while let frame = try cutter.next() { frames.append(frame) }
    return frames
}

private let dns = Endpoint(host: .ipv4([192, 0, 2, 53]), port: 53)
private let named = Endpoint(host: .domain("example.org"), port: 443)

@Suite struct TrojanUDPExitHandlerTests {
    final class Harness {
        let loop = EmbeddedEventLoop()
        let channel: EmbeddedChannel
        var exit: FakeExit?
        let timeout: TimeAmount = .seconds(120)

        init() throws {
            channel = EmbeddedChannel(loop: loop)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            let handler = TrojanUDPExitHandler(timeout: timeout, logger: Logger(label: "test")) { [unowned self] _, onReply, _ in
                let exit = FakeExit(onReply: onReply)
                self.exit = exit
                return exit
            }
            try channel.pipeline.syncOperations.addHandler(handler)
        }
    }

    @Test func framesGoToTheirDestinationsHoweverTheStreamIsSplit() throws {
        let bytes = frameBytes([.init(endpoint: dns, payload: ByteBuffer(string: "query")),
                                .init(endpoint: named, payload: ByteBuffer(string: "hello"))])
        for cut in 0...bytes.count {
            let harness = try Harness()
            try harness.channel.writeInbound(ByteBuffer(bytes: bytes[..<cut]))
            try harness.channel.writeInbound(ByteBuffer(bytes: bytes[cut...]))
            let exit = try #require(harness.exit)
            #expect(exit.sent.map(\.0) == [dns, named], "split at \(cut)")
            #expect(exit.sent.map(\.1) == ["query", "hello"])
            #expect(harness.channel.isActive)
        }
    }

    @Test func repliesGoBackAsFramesNamingTheirSource() throws {
        let harness = try Harness()
        let exit = try #require(harness.exit)
        exit.onReply(dns, ByteBuffer(string: "answer"))
        exit.onReply(Endpoint(host: .ipv6(Array(repeating: 0x20, count: 16)), port: 9), ByteBuffer(bytes: Array(repeating: 3, count: 1400)))
        let frames = try readFrames(harness.channel)
        #expect(frames.map(\.endpoint) == [dns, Endpoint(host: .ipv6(Array(repeating: 0x20, count: 16)), port: 9)])
        #expect(frames.map(\.payload.readableBytes) == [6, 1400])
    }

    @Test func repliesAreDroppedWhileTheClientIsNotWritableAndWhenTooLarge() throws {
        let harness = try Harness()
        let exit = try #require(harness.exit)
        harness.channel.isWritable = false
        for _ in 0..<1000 { exit.onReply(dns, ByteBuffer(string: "dropped")) }
        #expect(try harness.channel.readOutbound(as: ByteBuffer.self) == nil, "nothing queued behind a slow client")
        harness.channel.isWritable = true
        exit.onReply(dns, ByteBuffer(bytes: Array(repeating: 0, count: Trojan.maxUDPPayload + 1)))
        exit.onReply(dns, ByteBuffer(string: "kept"))
        #expect(try readFrames(harness.channel).map { String(buffer: $0.payload) } == ["kept"])
    }

    @Test func aMalformedFrameClosesTheConnectionAndTheSocket() throws {
        let harness = try Harness()
        try harness.channel.writeInbound(ByteBuffer(bytes: [0x09, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
        #expect(!harness.channel.isActive)
        #expect(try #require(harness.exit).closed)
        #expect(try #require(harness.exit).sent.isEmpty)
    }

    @Test func theEndOfTheClientsInputEndsTheConnection() throws {
        let harness = try Harness()
        harness.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(!harness.channel.isActive)
        #expect(try #require(harness.exit).closed)
    }

    /// The idle timeout, on the embedded loop's manual clock: datagrams
    /// either way keep the connection open, silence closes it.
    @Test func theConnectionClosesAfterTheTimeoutWithoutDatagrams() throws {
        let harness = try Harness()
        let exit = try #require(harness.exit)
        harness.loop.advanceTime(by: .seconds(100))
        try harness.channel.writeInbound(ByteBuffer(bytes: frameBytes([.init(endpoint: dns, payload: ByteBuffer(string: "q"))])))
        harness.loop.advanceTime(by: .seconds(100))
        #expect(harness.channel.isActive, "a datagram from the client 100 s ago")
        exit.onReply(dns, ByteBuffer(string: "a"))
        harness.loop.advanceTime(by: .seconds(119))
        #expect(harness.channel.isActive, "a reply 119 s ago")
        harness.loop.advanceTime(by: .seconds(1))
        #expect(!harness.channel.isActive)
        #expect(exit.closed)
    }
}

@Suite struct BridgeExitHandlerUDPTests {
    @Test func anAuthenticatedUDPAssociateTurnsTheExitHandlerIntoAUDPRelay() throws {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        let exit = Exit(policy: ExitPolicy(), threadPool: threadPool)
        let unreachableSite: FallbackDialer = { eventLoop in eventLoop.makeFailedFuture(ChannelError.connectPending) }
        try channel.pipeline.syncOperations.addHandlers([
            TrojanServerCodec(passwords: ["right"], fallback: unreachableSite),
            BridgeExitHandler(exit: exit, logger: Logger(label: "test")),
        ])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        var header = ByteBuffer()
        Trojan.writeHeader(passwordHash: Trojan.passwordHash("right"), request: .init(command: .udpAssociate, destination: dns), to: &header)
        try channel.writeInbound(header)
        #expect(throws: Never.self) { _ = try channel.pipeline.syncOperations.handler(type: TrojanUDPExitHandler.self) }
        #expect(throws: (any Error).self) { _ = try channel.pipeline.syncOperations.handler(type: BridgeExitHandler.self) }
        #expect(channel.isActive)
        _ = try channel.finish()
    }
}

/// The bridge's UDP socket on real sockets: the exit policy, name
/// resolution at the bridge, and the reply's source.
@Suite struct UDPExitSocketTests {
    struct Timeout: Error {}

    /// Echoes datagrams and counts them.
    final class Echo: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        typealias OutboundOut = AddressedEnvelope<ByteBuffer>
        let count: NIOLockedValueBox<Int>
        init(count: NIOLockedValueBox<Int>) { self.count = count }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            count.withLockedValue { $0 += 1 }
            context.writeAndFlush(data, promise: nil)
        }
    }

    /// An echo on 127.0.0.1 and, where the host has IPv6, on ::1 at the same port.
    static func echo(group: EventLoopGroup) async throws -> (NIOLockedValueBox<Int>, [Channel], UInt16) {
        let count = NIOLockedValueBox(0)
        let bootstrap = DatagramBootstrap(group: group).channelInitializer { $0.pipeline.addHandler(Echo(count: count)) }
        let v4 = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
        let port = v4.localAddress!.port!
        let v6 = try? await bootstrap.bind(host: "::1", port: port).get()
        return (count, [v4] + (v6.map { [$0] } ?? []), UInt16(port))
    }

    final class Outcome: @unchecked Sendable {
        let replies: EventLoopPromise<(Endpoint, String)>
        let refusals: EventLoopPromise<Exit.ExitError>
        init(loop: EventLoop) {
            replies = loop.makePromise()
            refusals = loop.makePromise()
        }
    }

    /// Sends "ping" to `target(echoPort)` through a socket with the given
    /// policy; returns the reply (or the refusal), and how many datagrams the echo saw.
    func run(allowPrivate: Bool, target: (UInt16) -> Endpoint) async throws
        -> (reply: (Endpoint, String)?, refusal: Exit.ExitError?, echoed: Int, port: UInt16) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let (echo, channels, port) = try await Self.echo(group: group)
        let loop = group.next()
        let outcome = Outcome(loop: loop)
        // A bug must not hang the suite; waiting this long is not an assertion on time.
        let guardTimer = loop.scheduleTask(in: .seconds(60)) {
            outcome.replies.fail(Timeout())
            outcome.refusals.fail(Timeout())
        }
        let exit = Exit(policy: ExitPolicy(allowPrivate: allowPrivate), threadPool: threadPool)
        let destination = target(port)
        let socket = try await loop.submit {
            let socket = UDPExitSocket(exit: exit, eventLoop: loop, onReply: { source, payload in
                outcome.replies.succeed((source, String(buffer: payload)))
            }, onRefused: { reason in outcome.refusals.succeed(reason) })
            socket.send(ByteBuffer(string: "ping"), to: destination)
            return NIOLoopBound(socket, eventLoop: loop)
        }.get()
        var reply: (Endpoint, String)?
        var refusal: Exit.ExitError?
        if allowPrivate {
            reply = try? await outcome.replies.futureResult.get()
        } else {
            refusal = try? await outcome.refusals.futureResult.get()
        }
        guardTimer.cancel()
        try await loop.submit {
            socket.value.close()
            outcome.replies.fail(Timeout())   // no-ops when already completed
            outcome.refusals.fail(Timeout())
        }.get()
        let echoed = echo.withLockedValue { $0 }
        for channel in channels { try await channel.close() }
        try await threadPool.shutdownGracefully()
        try await group.shutdownGracefully()
        return (reply, refusal, echoed, port)
    }

    @Test func aDatagramToAnAllowedAddressIsAnsweredWithItsSource() async throws {
        let result = try await run(allowPrivate: true) { Endpoint(host: .ipv4([127, 0, 0, 1]), port: $0) }
        let (source, payload) = try #require(result.reply)
        #expect(payload == "ping")
        #expect(source == Endpoint(host: .ipv4([127, 0, 0, 1]), port: result.port), "the echo's address, as plain IPv4")
        #expect(result.echoed == 1)
    }

    @Test func namesAreResolvedAtTheBridge() async throws {
        let result = try await run(allowPrivate: true) { Endpoint(host: .domain("localhost"), port: $0) }
        let (source, payload) = try #require(result.reply)
        #expect(payload == "ping")
        #expect(source.port == result.port)
        #expect(result.echoed == 1)
    }

    @Test(arguments: ["127.0.0.1", "localhost"])
    func theExitPolicyRefusesLoopbackAndNothingIsSent(host: String) async throws {
        let result = try await run(allowPrivate: false) { port in
            host == "localhost" ? Endpoint(host: .domain(host), port: port) : Endpoint(host: .ipv4([127, 0, 0, 1]), port: port)
        }
        let reason = try #require(result.refusal)
        #expect(reason.description.contains("--allow-private"))
        #expect(result.echoed == 0, "the refused datagram reached the loopback echo")
    }
}
