import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing
@testable import RahaTransport
@testable import RahaWire

// MARK: Helpers

struct MuxTestTimeout: Error {}

/// Waits for `future`, failing after a generous time so a bug cannot hang the suite.
func muxWithin<T: Sendable>(_ future: EventLoopFuture<T>, seconds: Int64 = 120) async throws -> T {
    let promise = future.eventLoop.makePromise(of: T.self)
    future.cascade(to: promise)
    let timer = future.eventLoop.scheduleTask(in: .seconds(seconds)) { promise.fail(MuxTestTimeout()) }
    defer { timer.cancel() }
    return try await promise.futureResult.get()
}

/// Polls `condition` on `loop` until it holds, for at most a generous time.
func muxEventually(on loop: EventLoop, _ condition: @escaping @Sendable () -> Bool) async throws -> Bool {
    for _ in 0..<12_000 {
        if try await loop.submit(condition).get() { return true }
        try await Task.sleep(nanoseconds: 10_000_000)
    }
    return false
}

/// Distinct, reproducible bytes for a stream.
func muxPattern(seed: Int, count: Int) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.reserveCapacity(count)
    var state = UInt64(truncatingIfNeeded: seed) &* 0x9E37_79B9_7F4A_7C15 | 1
    for _ in 0..<(count + 7) / 8 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        buffer.writeInteger(state)
    }
    buffer.moveWriterIndex(to: count)
    return buffer
}

/// What the server-side streams saw, for the test to check.
final class MuxRecorder: Sendable {
    private let box = NIOLockedValueBox<[String]>([])
    func record(_ entry: String) { box.withLockedValue { $0.append(entry) } }
    var entries: [String] { box.withLockedValue { $0 } }
    func count(_ entry: String) -> Int { entries.filter { $0 == entry }.count }
    /// Bytes the source behind a stream has written, by stream number.
    let written = NIOLockedValueBox<[UInt32: Int]>([:])
}

/// The server end of every test stream; what it does depends on the
/// destination's name (`echo`, `source` (port = KiB to send), `hold`,
/// `greet`, `reply`, `refuse`).
final class MuxServerStream: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Mode { case waiting, echo, source(sent: Int, bytes: ByteBuffer), hold, greet, reply }
    private let recorder: MuxRecorder
    private var mode = Mode.waiting
    private var received = ByteBuffer()
    private var readPending = false

    init(recorder: MuxRecorder) { self.recorder = recorder }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let request = event as? ProxyRequestEvent {
            guard case .domain(let name) = request.target.host else { return }
            recorder.record("request:\(name)")
            switch name {
            case "echo":
                mode = .echo
                try! context.channel.syncOptions!.setOption(.autoRead, value: false)
                context.read()
            case "source":
                let total = Int(request.target.port) * 1024
                mode = .source(sent: 0, bytes: muxPattern(seed: total, count: total))
                pump(context: context)
            case "greet":
                mode = .greet
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "greeting")), promise: nil)
                context.close(mode: .output, promise: nil)
            case "reply":
                mode = .reply
            case "refuse":
                context.close(promise: nil)
            default:
                mode = .hold
            }
            return
        }
        if let event = event as? ChannelEvent, case .inputClosed = event {
            switch mode {
            case .echo:
                context.close(mode: .output, promise: nil)
            case .greet:
                recorder.record("greet-input:\(String(buffer: received))")
            case .reply:
                context.write(wrapOutboundOut(ByteBuffer(string: "got:")), promise: nil)
                context.writeAndFlush(wrapOutboundOut(received), promise: nil)
                context.close(mode: .output, promise: nil)
            default:
                break
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .echo = mode {
            context.write(data, promise: nil)
        } else {
            var buffer = unwrapInboundIn(data)
            received.writeBuffer(&buffer)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard case .echo = mode else { return }
        context.flush()
        if context.channel.isWritable { context.read() } else { readPending = true }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        switch mode {
        case .echo where context.channel.isWritable && readPending:
            readPending = false
            context.read()
        case .source:
            pump(context: context)
        default:
            break
        }
    }

    private func pump(context: ChannelHandlerContext) {
        guard case .source(var sent, let all) = mode, sent < all.readableBytes else { return }
        let total = all.readableBytes
        let id = (context.channel as! MuxStreamChannel).streamID
        // Channels announce writability changes from inside write and flush
        // (as sockets do), so the state is updated before every write.
        while context.channel.isWritable && sent < total {
            let n = min(16 * 1024, total - sent)
            let start = sent
            sent += n
            mode = .source(sent: sent, bytes: all)
            recorder.written.withLockedValue { $0[id] = sent }
            context.write(wrapOutboundOut(all.getSlice(at: start, length: n)!), promise: nil)
        }
        context.flush()
        if sent == total { context.close(mode: .output, promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        recorder.record("error:\((error as? MuxError)?.code.rawValue ?? "\(error)")")
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        recorder.record("inactive")
    }
}

/// The client end: sends `payload` (respecting writability), then closes its
/// output; collects what arrives; `done` gets it on the end of input.
final class MuxClientStream: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let payload: ByteBuffer
    private let sendAfterInputClosed: Bool
    private let done: EventLoopPromise<ByteBuffer>
    private var offset = 0
    private var outputClosed = false
    private var inputClosed = false
    private var received = ByteBuffer()

    init(payload: ByteBuffer, sendAfterInputClosed: Bool = false, done: EventLoopPromise<ByteBuffer>) {
        self.payload = payload
        self.sendAfterInputClosed = sendAfterInputClosed
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        if !sendAfterInputClosed { pump(context: context) }
        context.fireChannelActive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if !sendAfterInputClosed || inputClosed { pump(context: context) }
    }

    private func pump(context: ChannelHandlerContext) {
        guard !outputClosed else { return }
        while context.channel.isWritable && offset < payload.readableBytes {
            let n = min(16 * 1024, payload.readableBytes - offset)
            let start = offset
            offset += n // before the write: it may announce a writability change
            context.write(wrapOutboundOut(payload.getSlice(at: payload.readerIndex + start, length: n)!), promise: nil)
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
            inputClosed = true
            if sendAfterInputClosed {
                done.succeed(received)
                pump(context: context)
            } else {
                done.succeed(received)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        done.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.fail(ChannelError.eof) // ignored when already complete
    }
}

/// A client and a server connection joined through a real loopback socket,
/// each with its MuxHandler.
final class MuxBed: Sendable {
    let group: MultiThreadedEventLoopGroup
    let listener: Channel
    let client: Channel
    let server: Channel
    let recorder: MuxRecorder

    static func start(client clientConfiguration: MuxHandler.Configuration = .testing,
                      server serverConfiguration: MuxHandler.Configuration = .testing) async throws -> MuxBed {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let recorder = MuxRecorder()
        let accepted = group.next().makePromise(of: Channel.self)
        let listener = try await ServerBootstrap.rahaListener(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let mux = MuxHandler(role: .server, configuration: serverConfiguration) { stream in
                        stream.eventLoop.makeCompletedFuture {
                            try stream.pipeline.syncOperations.addHandler(MuxServerStream(recorder: recorder))
                        }
                    }
                    try channel.pipeline.syncOperations.addHandler(mux)
                    accepted.succeed(channel)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap.rahaStream(group: group, connectTimeout: .seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(MuxHandler(role: .client, configuration: clientConfiguration))
                }
            }
            .connect(host: "127.0.0.1", port: listener.localAddress!.port!).get()
        let server = try await muxWithin(accepted.futureResult)
        return MuxBed(group: group, listener: listener, client: client, server: server, recorder: recorder)
    }

    private init(group: MultiThreadedEventLoopGroup, listener: Channel, client: Channel, server: Channel, recorder: MuxRecorder) {
        self.group = group
        self.listener = listener
        self.client = client
        self.server = server
        self.recorder = recorder
    }

    func stop() async throws {
        try? await client.close()
        try? await listener.close()
        try await group.shutdownGracefully()
    }

    /// Runs `body` on the loop with the client's MuxHandler.
    func clientMux<T: Sendable>(_ body: @escaping (MuxHandler) -> T) async throws -> T {
        let client = self.client
        return try await client.eventLoop.submit {
            body(try client.pipeline.syncOperations.handler(type: MuxHandler.self))
        }.get()
    }

    func serverMux<T: Sendable>(_ body: @escaping (MuxHandler) -> T) async throws -> T {
        let server = self.server
        return try await server.eventLoop.submit {
            body(try server.pipeline.syncOperations.handler(type: MuxHandler.self))
        }.get()
    }

    /// Opens a stream to `name:port` with a MuxClientStream; nil when the connection refuses.
    func open(_ name: String, port: UInt16 = 1, payload: ByteBuffer = ByteBuffer(), sendAfterInputClosed: Bool = false,
              autoRead: Bool = true) async throws -> (channel: Channel, done: EventLoopFuture<ByteBuffer>)? {
        let client = self.client
        let done = client.eventLoop.makePromise(of: ByteBuffer.self)
        let channel: Channel? = try await client.eventLoop.flatSubmit { () -> EventLoopFuture<Channel?> in
            let mux = try! client.pipeline.syncOperations.handler(type: MuxHandler.self)
            let opened = mux.openStream(to: Endpoint(host: .domain(name), port: port)) { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.syncOptions!.setOption(.autoRead, value: autoRead)
                    try stream.pipeline.syncOperations.addHandler(
                        MuxClientStream(payload: payload, sendAfterInputClosed: sendAfterInputClosed, done: done))
                }
            }
            guard let opened else {
                done.fail(ChannelError.ioOnClosedChannel)
                return client.eventLoop.makeSucceededFuture(nil)
            }
            return opened.map { Optional($0) }
        }.get()
        guard let channel else { return nil }
        return (channel, done.futureResult)
    }
}

extension MuxHandler.Configuration {
    static var testing: MuxHandler.Configuration { .init(padding: .off) }
}

extension Result {
    var muxErrorCode: MuxError.Code? {
        if case .failure(let error) = self { return (error as? MuxError)?.code }
        return nil
    }
}

/// Where two buffers first differ, for failure messages.
func muxDifference(_ a: ByteBuffer, _ b: ByteBuffer) -> String {
    let x = Array(a.readableBytesView), y = Array(b.readableBytesView)
    let first = (0..<min(x.count, y.count)).first { x[$0] != y[$0] } ?? min(x.count, y.count)
    return "lengths \(x.count) and \(y.count), first difference at \(first)"
}

// MARK: Over a real socket

@Suite struct MuxChannelTests {
    @Test func manyConcurrentStreamsCarryTheirOwnBytes() async throws {
        var configuration = MuxHandler.Configuration()
        configuration.padding = .standard // on here: the data must come through untouched
        let bed = try await MuxBed.start(client: configuration, server: configuration)
        var streams: [(ByteBuffer, EventLoopFuture<ByteBuffer>, Channel)] = []
        for i in 0..<20 {
            let payload = muxPattern(seed: i, count: 1024 * 1024)
            let opened = try await bed.open("echo", payload: payload)
            let (channel, done) = try #require(opened)
            streams.append((payload, done, channel))
        }
        for (i, (payload, done, channel)) in streams.enumerated() {
            let echoed = try await muxWithin(done)
            let intact = echoed == payload
            #expect(intact, "stream \(i) came back intact: \(intact ? "" : muxDifference(echoed, payload))")
            try await muxWithin(channel.closeFuture) // both ways finished: it closes by itself
        }
        let clientOpen = try await bed.clientMux { $0.streamCount }
        #expect(clientOpen == 0)
        let serverDone = try await muxEventually(on: bed.server.eventLoop) { bed.recorder.count("inactive") == 20 }
        #expect(serverDone)
        let serverOpen = try await bed.serverMux { $0.streamCount }
        #expect(serverOpen == 0)
        try await bed.stop()
    }

    @Test func aStalledStreamDoesNotStopTheOthers() async throws {
        var configuration = MuxHandler.Configuration.testing
        configuration.session.initialWindow = 64 * 1024
        let bed = try await MuxBed.start(client: configuration, server: configuration)
        // 4 MiB waiting for a reader that never reads.
        let stalledOpen = try await bed.open("source", port: 4096, autoRead: false)
        let (stalled, stalledDone) = try #require(stalledOpen)
        var others: [EventLoopFuture<ByteBuffer>] = []
        for _ in 0..<5 {
            let opened = try await bed.open("source", port: 1024)
            others.append(try #require(opened).done)
        }
        let expected = muxPattern(seed: 1024 * 1024, count: 1024 * 1024)
        for done in others {
            let got = try await muxWithin(done)
            let intact = got == expected
            #expect(intact, "\(intact ? "" : muxDifference(got, expected))")
        }
        // The stalled stream holds exactly its window, no more.
        let stream = stalled as! MuxStreamChannel
        let filled = try await muxEventually(on: bed.client.eventLoop) { stream.bufferedInboundBytes == 64 * 1024 }
        #expect(filled)
        let held = try await bed.client.eventLoop.submit { stream.bufferedInboundBytes }.get()
        #expect(held == 64 * 1024)
        let written = bed.recorder.written.withLockedValue { $0[stream.streamID] ?? 0 }
        #expect(written <= 64 * 1024 + 64 * 1024 + 16 * 1024, "the source stopped when its stream turned unwritable")
        // Its reader wakes up: everything arrives.
        try await stalled.setOption(.autoRead, value: true).get()
        let all = try await muxWithin(stalledDone)
        let intact = all == muxPattern(seed: 4096 * 1024, count: 4096 * 1024)
        #expect(intact)
        try await bed.stop()
    }

    @Test func halfCloseBothWays() async throws {
        let bed = try await MuxBed.start()
        // The client ends first; the server answers after it has read everything.
        let replyOpen = try await bed.open("reply", payload: ByteBuffer(string: "hello"))
        let (reply, replyDone) = try #require(replyOpen)
        let answer = try await muxWithin(replyDone)
        #expect(String(buffer: answer) == "got:hello")
        try await muxWithin(reply.closeFuture)
        // The server ends first; the client still sends afterwards.
        let greetOpen = try await bed.open("greet", payload: ByteBuffer(string: "after"), sendAfterInputClosed: true)
        let (greet, greetDone) = try #require(greetOpen)
        let greeting = try await muxWithin(greetDone)
        #expect(String(buffer: greeting) == "greeting")
        try await muxWithin(greet.closeFuture)
        let heard = try await muxEventually(on: bed.server.eventLoop) { bed.recorder.entries.contains("greet-input:after") }
        #expect(heard)
        #expect(!bed.recorder.entries.contains { $0.hasPrefix("error:") })
        try await bed.stop()
    }

    @Test func resetEitherWay() async throws {
        let bed = try await MuxBed.start()
        // The client aborts: the server's stream sees a reset.
        let holdOpen = try await bed.open("hold")
        let (hold, holdDone) = try #require(holdOpen)
        #expect(try await muxEventually(on: bed.server.eventLoop) { bed.recorder.entries.contains("request:hold") })
        try await hold.close()
        let sawReset = try await muxEventually(on: bed.server.eventLoop) {
            bed.recorder.entries.contains("error:mux-stream-reset") && bed.recorder.count("inactive") == 1
        }
        #expect(sawReset)
        let holdResult = await muxOutcome { try await muxWithin(holdDone) }
        #expect(holdResult.muxErrorCode == nil, "closed locally: no stream error")
        // The server aborts: the client's stream fails with a reset.
        let refusedOpen = try await bed.open("refuse", payload: ByteBuffer(string: "x"), sendAfterInputClosed: true)
        let (refused, refusedDone) = try #require(refusedOpen)
        let result = await muxOutcome { try await muxWithin(refusedDone) }
        #expect(result.muxErrorCode == .streamReset)
        try await muxWithin(refused.closeFuture)
        let open = try await bed.clientMux { $0.streamCount }
        #expect(open == 0)
        try await bed.stop()
    }

    @Test func streamLimitsAreKept() async throws {
        var clientConfiguration = MuxHandler.Configuration.testing
        clientConfiguration.session.maxStreams = 8
        clientConfiguration.session.maxStreamsPerConnection = 3
        var serverConfiguration = MuxHandler.Configuration.testing
        serverConfiguration.session.maxStreams = 2
        let bed = try await MuxBed.start(client: clientConfiguration, server: serverConfiguration)
        let first = try #require(try await bed.open("hold"))
        let second = try #require(try await bed.open("hold"))
        // The server takes two at once: a client that opens a third gets it reset.
        let third = try #require(try await bed.open("hold"))
        let thirdResult = await muxOutcome { try await muxWithin(third.done) }
        #expect(thirdResult.muxErrorCode == .streamReset)
        #expect(bed.recorder.count("request:hold") == 2)
        // Three streams in the connection's life: it takes no fourth.
        let fourth = try await bed.open("hold")
        #expect(fourth == nil)
        let draining = try await bed.clientMux { $0.isDraining }
        #expect(draining)
        // The streams that were accepted still work until closed; then the connection goes away.
        #expect(first.channel.isActive && second.channel.isActive)
        try await first.channel.close()
        try await second.channel.close()
        try await muxWithin(bed.client.closeFuture)
        try await muxWithin(bed.server.closeFuture)
        try await bed.stop()
    }

    @Test func anOldConnectionTakesNoNewStreams() async throws {
        var configuration = MuxHandler.Configuration.testing
        configuration.maxAge = .nanoseconds(1)
        let bed = try await MuxBed.start(client: configuration)
        let (refused, draining) = try await bed.clientMux { mux in
            (mux.openStream(to: Endpoint(host: .domain("hold"), port: 1)) == nil, mux.isDraining)
        }
        #expect(refused && draining)
        try await muxWithin(bed.client.closeFuture) // idle and going away: it closes
        try await bed.stop()
    }

    @Test func closingTheConnectionClosesEveryStream() async throws {
        let bed = try await MuxBed.start()
        var streams: [(channel: Channel, done: EventLoopFuture<ByteBuffer>)] = []
        for _ in 0..<5 { streams.append(try #require(try await bed.open("hold"))) }
        #expect(try await muxEventually(on: bed.server.eventLoop) { bed.recorder.count("request:hold") == 5 })
        try await bed.client.close()
        for stream in streams {
            let result = await muxOutcome { try await muxWithin(stream.done) }
            #expect(result.muxErrorCode == .connectionClosed)
            try await muxWithin(stream.channel.closeFuture)
        }
        let serverSide = try await muxEventually(on: bed.server.eventLoop) {
            bed.recorder.count("error:mux-connection-closed") == 5 && bed.recorder.count("inactive") == 5
        }
        #expect(serverSide)
        try await bed.stop()
    }
}

func muxOutcome<T>(_ body: () async throws -> T) async -> Result<T, Error> {
    do { return .success(try await body()) } catch { return .failure(error) }
}

// MARK: Embedded, pumped by hand

/// Records what reaches the end of a stream's pipeline.
final class MuxStreamProbe: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var data = ByteBuffer()
    var events: [String] = []
    var channel: Channel?
    func handlerAdded(context: ChannelHandlerContext) { channel = context.channel }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        self.data.writeBuffer(&buffer)
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ProxyRequestEvent { events.append("request") }
        if let event = event as? ChannelEvent, case .inputClosed = event { events.append("inputClosed") }
    }
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        events.append("writable:\(context.channel.isWritable)")
    }
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        events.append("error:\((error as? MuxError)?.code.rawValue ?? "other")")
    }
    func channelInactive(context: ChannelHandlerContext) { events.append("inactive") }
}

@Suite struct MuxHandlerEmbeddedTests {
    let destination = Endpoint(host: .domain("example.org"), port: 443)

    func connected(_ mux: MuxHandler) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(mux)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    func frames(_ list: [MuxFrame]) -> ByteBuffer {
        var buffer = ByteBuffer()
        for frame in list { frame.write(to: &buffer) }
        return buffer
    }

    func readFrames(_ channel: EmbeddedChannel) throws -> (writes: Int, frames: [MuxFrame]) {
        var writes = 0
        var frames: [MuxFrame] = []
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            writes += 1
            while let frame = try MuxFrame.read(from: &buffer) { frames.append(frame) }
            #expect(buffer.readableBytes == 0)
        }
        return (writes, frames)
    }

    @Test func framesSplitAtEveryByteBecomeStreamEvents() throws {
        let probe = MuxStreamProbe()
        let mux = MuxHandler(role: .server, configuration: .testing) { stream in
            stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(probe) }
        }
        let channel = try connected(mux)
        let bytes = frames([.open(stream: 1, to: destination), MuxFrame(kind: .data, stream: 1, body: ByteBuffer(string: "hello")),
                            MuxFrame(kind: .padding, stream: 0, body: ByteBuffer(bytes: [1, 2, 3])), MuxFrame(kind: .finish, stream: 1)])
        for byte in bytes.readableBytesView { try channel.writeInbound(ByteBuffer(bytes: [byte])) }
        #expect(String(buffer: probe.data) == "hello")
        #expect(probe.events == ["request", "inputClosed"])
        #expect(mux.streamCount == 1, "the stream still may send")
        _ = try readFrames(channel)
    }

    @Test func oneReadBurstGivesOneWrite() throws {
        // Three streams echo synchronously: their frames leave in one write.
        final class Echo: ChannelInboundHandler {
            typealias InboundIn = ByteBuffer
            func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.writeAndFlush(data, promise: nil) }
        }
        let mux = MuxHandler(role: .server, configuration: .testing) { stream in
            stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(Echo()) }
        }
        let channel = try connected(mux)
        var list: [MuxFrame] = []
        for id: UInt32 in [1, 3, 5] {
            list.append(.open(stream: id, to: destination))
            list.append(MuxFrame(kind: .data, stream: id, body: ByteBuffer(string: "s\(id)")))
        }
        try channel.writeInbound(frames(list))
        let (writes, out) = try readFrames(channel)
        #expect(writes == 1)
        #expect(out.filter { $0.kind == .data } == [1, 3, 5].map { MuxFrame(kind: .data, stream: $0, body: ByteBuffer(string: "s\($0)")) })
    }

    @Test func aConnectionWhoseBridgeNeverAnswersANewStreamIsClosed() throws {
        var configuration = MuxHandler.Configuration.testing
        configuration.answerTimeout = .seconds(10)
        let loop = EmbeddedEventLoop()
        func connection() throws -> (MuxHandler, EmbeddedChannel) {
            let mux = MuxHandler(role: .client, configuration: configuration)
            let channel = EmbeddedChannel(loop: loop)
            try channel.pipeline.syncOperations.addHandler(mux)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            return (mux, channel)
        }
        // Answered: the bridge's WINDOW for the stream comes back; later silence is no sign of a cut.
        let (answeredMux, answered) = try connection()
        _ = try #require(answeredMux.openStream(to: destination)).wait()
        try answered.writeInbound(frames([.window(stream: 1, increment: 192 * 1024)]))
        // Unanswered: the OPEN and the data after it vanish on a cut path.
        let (silentMux, silent) = try connection()
        let probe = MuxStreamProbe()
        let stream = try #require(silentMux.openStream(to: destination) { stream in
            stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(probe) }
        }).wait()
        stream.writeAndFlush(ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n"), promise: nil)
        loop.advanceTime(by: .seconds(10) - .nanoseconds(1))
        #expect(silent.isActive, "closed before the answer was due")
        loop.advanceTime(by: .nanoseconds(1))
        #expect(!silent.isActive, "a connection that never answered a stream stays open")
        #expect(probe.events.contains("error:mux-connection-closed") && probe.events.contains("inactive"), "\(probe.events)")
        #expect(silentMux.openStream(to: destination) == nil, "the dead connection takes new streams")
        loop.advanceTime(by: .seconds(60))
        #expect(answered.isActive, "a connection whose bridge answered was closed")
        _ = try? answered.finish()
    }

    @Test func streamsFollowTheConnectionsWritability() throws {
        let mux = MuxHandler(role: .client, configuration: .testing)
        let channel = try connected(mux)
        let probe = MuxStreamProbe()
        let future = try #require(mux.openStream(to: destination) { stream in
            stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(probe) }
        })
        let stream = try future.wait()
        #expect(stream.isActive && stream.isWritable)
        // Data follows the OPEN at once, no round trip.
        stream.writeAndFlush(ByteBuffer(string: "early"), promise: nil)
        let (_, sent) = try readFrames(channel)
        #expect(sent == [.open(stream: 1, to: destination), .window(stream: 1, increment: 192 * 1024),
                         MuxFrame(kind: .data, stream: 1, body: ByteBuffer(string: "early"))])
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(!stream.isWritable)
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(stream.isWritable)
        #expect(probe.events == ["writable:false", "writable:true"])
    }

    @Test func writesWaitForWindowAndTheWriterSeesIt() throws {
        var configuration = MuxHandler.Configuration.testing
        configuration.streamWriteBufferWaterMark = .init(low: 100, high: 500)
        let mux = MuxHandler(role: .client, configuration: configuration)
        let channel = try connected(mux)
        let probe = MuxStreamProbe()
        let stream = try #require(mux.openStream(to: destination) { stream in
            stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(probe) }
        }).wait()
        stream.writeAndFlush(ByteBuffer(repeating: 7, count: MuxSession.baseWindow + 600), promise: nil)
        #expect(!stream.isWritable, "600 bytes wait for window, above the high mark")
        stream.close(mode: .output, promise: nil)
        var (_, sent) = try readFrames(channel)
        #expect(sent.filter { $0.kind == .data }.map(\.body.readableBytes).reduce(0, +) == MuxSession.baseWindow)
        #expect(!sent.contains { $0.kind == .finish }, "FINISH waits behind the data")
        try channel.writeInbound(frames([.window(stream: 1, increment: 1000)]))
        (_, sent) = try readFrames(channel)
        #expect(sent.map(\.kind) == [.data, .finish])
        #expect(sent.first?.body.readableBytes == 600)
        #expect(stream.isWritable)
        #expect(probe.events == ["writable:false", "writable:true"])
    }

    /// A server mux (base window only) whose streams have autoRead off and a probe.
    private func serverWithoutAutoRead() throws -> (EmbeddedChannel, MuxStreamProbe) {
        var configuration = MuxHandler.Configuration.testing
        configuration.session.initialWindow = MuxSession.baseWindow
        let probe = MuxStreamProbe()
        let mux = MuxHandler(role: .server, configuration: configuration) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.syncOptions!.setOption(.autoRead, value: false)
                try stream.pipeline.syncOperations.addHandler(probe)
            }
        }
        return (try connected(mux), probe)
    }

    @Test func withoutAutoReadDataWaitsForReadAndWindowForDelivery() throws {
        let (channel, probe) = try serverWithoutAutoRead()
        try channel.writeInbound(frames([.open(stream: 1, to: destination)]
            + (0..<5).map { _ in MuxFrame(kind: .data, stream: 1, body: ByteBuffer(repeating: 9, count: 8 * 1024)) }
            + [MuxFrame(kind: .finish, stream: 1)]))
        channel.embeddedEventLoop.run()
        #expect(probe.data.readableBytes == 0, "nothing is delivered before a read")
        #expect(try readFrames(channel).frames.isEmpty, "and the peer is granted nothing")
        let stream = try #require(probe.channel as? MuxStreamChannel)
        #expect(stream.bufferedInboundBytes == 40 * 1024)
        stream.read()
        #expect(probe.data.readableBytes == 0, "delivered from the event loop, not inside read()")
        channel.embeddedEventLoop.run()
        #expect(probe.data.readableBytes == 40 * 1024)
        #expect(probe.events == ["request", "inputClosed"])
        // The peer finished, so no window is granted any more.
        #expect(try readFrames(channel).frames.isEmpty)
    }

    @Test func windowIsGrantedForDeliveredBytesOnly() throws {
        let (channel, probe) = try serverWithoutAutoRead()
        try channel.writeInbound(frames([.open(stream: 1, to: destination), MuxFrame(kind: .data, stream: 1, body: ByteBuffer(repeating: 1, count: 20 * 1024))]))
        try channel.writeInbound(frames([MuxFrame(kind: .data, stream: 1, body: ByteBuffer(repeating: 2, count: 20 * 1024))]))
        #expect(try readFrames(channel).frames.isEmpty)
        probe.channel!.read()
        channel.embeddedEventLoop.run()
        #expect(probe.data.readableBytes == 40 * 1024)
        #expect(try readFrames(channel).frames == [.window(stream: 1, increment: 40 * 1024)])
    }

    @Test func firstDataCarriesPadding() throws {
        var configuration = MuxHandler.Configuration.testing
        configuration.padding = MuxPadding(withFirstData: true, probability: 0, lengths: 10...10)
        configuration.session.initialWindow = MuxSession.baseWindow
        let mux = MuxHandler(role: .client, configuration: configuration)
        let channel = try connected(mux)
        let stream = try #require(mux.openStream(to: destination)).wait()
        stream.writeAndFlush(ByteBuffer(string: "first"), promise: nil)
        stream.writeAndFlush(ByteBuffer(string: "second"), promise: nil)
        let kinds = try readFrames(channel).frames.map { "\($0.kind):\($0.body.readableBytes)" }
        #expect(kinds == ["open:15", "data:5", "padding:10", "data:6"])
    }

    @Test func aPeerThatBreaksTheProtocolLosesTheConnection() throws {
        let probe = MuxStreamProbe()
        let mux = MuxHandler(role: .server, configuration: .testing) { stream in
            stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(probe) }
        }
        let channel = try connected(mux)
        try channel.writeInbound(frames([.open(stream: 1, to: destination)]))
        // More DATA than the window allows.
        let flood = (0..<20).map { _ in MuxFrame(kind: .data, stream: 1, body: ByteBuffer(repeating: 0, count: 16 * 1024)) }
        try channel.writeInbound(frames(flood))
        #expect(!channel.isActive)
        #expect(probe.events.contains("inactive"))
        #expect(probe.events.contains { $0.hasPrefix("error:") })
    }
}

@Suite struct MuxPoolTests {
    @Test func eachConnectionDrawsItsOwnLimits() {
        let base = MuxHandler.Configuration(session: .init(maxStreamsPerConnection: 1000), maxAge: .minutes(15))
        let drawn = (0..<50).map { _ in MuxPool.varied(base) }
        let streams = Set(drawn.map(\.session.maxStreamsPerConnection))
        let ages = Set(drawn.compactMap { $0.maxAge?.nanoseconds })
        #expect(streams.count > 1 && ages.count > 1, "limits must vary between connections")
        #expect(streams.allSatisfy { (500...1500).contains($0) })
        #expect(ages.allSatisfy { (TimeAmount.minutes(15).nanoseconds / 2...TimeAmount.minutes(15).nanoseconds * 3 / 2).contains($0) })
    }
}
