import NIOCore
import RahaWire

/// Why a mux stream or connection ended abnormally: a `WireError` with one
/// of the codes below. The description never names a destination or an
/// address, so it is safe to log.
public typealias MuxError = WireError

extension WireError.Code {
    /// The peer aborted the stream (or refused to open it: too many streams, going away).
    public static let streamReset = WireError.Code(rawValue: "mux-stream-reset")
    /// The connection that carried the stream closed or failed.
    public static let connectionClosed = WireError.Code(rawValue: "mux-connection-closed")
}

extension WireError {
    public static let streamReset = WireError(.streamReset, "the other end aborted or refused the stream")
    public static let connectionClosed = WireError(.connectionClosed, "the multiplexed connection closed")
}

/// When PADDING frames are sent, so that record sizes on the wire do not
/// mirror the traffic (a first request of a typical size, an idle keep-alive).
public struct MuxPadding: Sendable, Hashable {
    /// A PADDING frame after the first DATA of every stream.
    public var withFirstData: Bool
    /// The chance that a write to the connection also carries a PADDING frame.
    public var probability: Double
    /// Body lengths of PADDING frames, chosen uniformly.
    public var lengths: ClosedRange<Int>

    public init(withFirstData: Bool, probability: Double, lengths: ClosedRange<Int>) {
        precondition(lengths.lowerBound >= 0 && lengths.upperBound <= MuxFrame.maxBody, "a padding body is 0...65535 bytes")
        self.withFirstData = withFirstData
        self.probability = probability
        self.lengths = lengths
    }

    /// No padding (for tests that count bytes).
    public static let off = MuxPadding(withFirstData: false, probability: 0, lengths: 0...0)
    public static let standard = MuxPadding(withFirstData: true, probability: 0.05, lengths: 32...1200)
}

/// The multiplexer on one Raha-to-Raha connection: it sits where the
/// plaintext of the connection is (after the TLS handler and the Trojan
/// codec), turns the bytes into `MuxFrame`s for a `MuxSession`, and makes
/// every stream a `MuxStreamChannel` with its own pipeline, so the proxy
/// front, the glue and the bridge exit work on a stream exactly as on a
/// socket.
///
/// Client role: `openStream(to:initializer:)` (on the event loop) opens a
/// stream; the channel is active at once and data may follow the OPEN
/// without a round trip. When it returns nil the connection takes no more
/// streams (too many open, lifetime count or age reached, going away): open
/// another connection.
///
/// Server role: every OPEN from the client becomes a stream channel; the
/// `inboundStreamInitializer` runs on it (add the exit handler there), then
/// the channel becomes active and a `ProxyRequestEvent` with the requested
/// destination is fired into its pipeline.
///
/// Memory: the peer may send at most `initialWindow` bytes per stream ahead
/// of what the stream's reader took, so inbound memory is at most
/// `maxStreams * initialWindow` (plus one partial frame); outbound, a stream
/// turns unwritable above its write-buffer high-water mark, and while the
/// connection itself is not writable every stream reports unwritable.
///
/// Not thread-safe: call everything on the connection's event loop. Nothing
/// should sit after this handler in the connection's pipeline.
public final class MuxHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    public typealias StreamInitializer = (Channel) -> EventLoopFuture<Void>

    public struct Configuration: Sendable {
        public var session: MuxSession.Configuration
        /// After this long the connection takes no new streams (checked when
        /// a stream is opened or `isDraining` is asked); nil for no limit.
        public var maxAge: TimeAmount?
        public var padding: MuxPadding
        /// The write-buffer water marks of each stream channel (bytes
        /// written to the stream and not yet sent for lack of window).
        public var streamWriteBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark
        /// Client role: a connection on which a stream opened this long ago has
        /// had no frame back is taken for dead (a path cut without a reset, where
        /// TCP itself would wait for minutes) and closed, so that new streams
        /// open another connection, or fail over. A Raha bridge answers every
        /// OPEN at once with a WINDOW frame. Nil: never (a DNS tunnel, whose
        /// round trips may be long).
        public var answerTimeout: TimeAmount?

        public init(session: MuxSession.Configuration = .init(), maxAge: TimeAmount? = .minutes(15),
                    padding: MuxPadding = .standard,
                    streamWriteBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark = .init(low: 32 * 1024, high: 64 * 1024),
                    answerTimeout: TimeAmount? = nil) {
            self.session = session
            self.maxAge = maxAge
            self.padding = padding
            self.streamWriteBufferWaterMark = streamWriteBufferWaterMark
            self.answerTimeout = answerTimeout
        }
    }

    public let configuration: Configuration
    private var session: MuxSession
    private let inboundStreamInitializer: StreamInitializer?
    private var context: ChannelHandlerContext?
    private var streams: [UInt32: MuxStreamChannel] = [:]
    private var createdAt = NIODeadline.now()
    private var closed = false

    /// Bytes of a frame that has not fully arrived.
    private var inboundRemainder: ByteBuffer?
    /// Streams that received frames in the current read burst.
    private var touched: [MuxStreamChannel] = []
    private var inReadBurst = false

    /// Encoded frames waiting for the next write to the connection.
    private var outbound = ByteBuffer()
    /// Promises to complete with the next write to the connection.
    private var outboundPromises: [EventLoopPromise<Void>] = []
    private var closingWhenFlushed = false
    /// Completes when the last write to the connection has been written.
    private var lastWrite: EventLoopFuture<Void>?
    /// Client role: streams opened and not answered yet, each with the timer that closes the connection.
    private var unanswered: [UInt32: Scheduled<Void>] = [:]
    /// Called (on the event loop) when the connection is closed for an unanswered stream.
    var onAnswerTimeout: (() -> Void)?

    public init(role: MuxSession.Role, configuration: Configuration = Configuration(),
                inboundStreamInitializer: StreamInitializer? = nil) {
        self.configuration = configuration
        self.session = MuxSession(role: role, configuration: configuration.session)
        self.inboundStreamInitializer = inboundStreamInitializer
    }

    public var role: MuxSession.Role { session.role }

    /// Stream channels that are not closed yet.
    public var streamCount: Int { streams.count }

    /// True when this connection takes no new streams: it or its peer went
    /// away, its lifetime stream count or its maximum age was reached.
    public var isDraining: Bool { closed || session.isDraining || ageExpired }

    private var ageExpired: Bool {
        guard let maxAge = configuration.maxAge else { return false }
        return NIODeadline.now() - createdAt >= maxAge
    }

    // MARK: Client role

    /// Opens a stream to `target` (client role, on the event loop). The
    /// initializer sets up the stream channel's pipeline; the returned future
    /// gives the channel once it is active. Nil when this connection takes no
    /// more streams: open another connection instead.
    public func openStream(to target: Endpoint, initializer: StreamInitializer? = nil) -> EventLoopFuture<Channel>? {
        precondition(session.role == .client, "only the client role opens streams")
        guard let context, !closed, context.channel.isActive else { return nil }
        context.eventLoop.preconditionInEventLoop()
        if ageExpired && !session.wentAway {
            goAway()
            return nil
        }
        guard let (id, frames) = session.openStream(to: target) else { return nil }
        for frame in frames { enqueue(frame) }
        if let timeout = configuration.answerTimeout {
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            unanswered[id] = context.eventLoop.scheduleTask(in: timeout) {
                let (handler, context) = loopBound.value
                let seconds = timeout.nanoseconds / 1_000_000_000
                handler.onAnswerTimeout?()
                handler.fail(error: MuxError(.connectionClosed, "the bridge did not answer a new stream within \(seconds) s: the path to it seems cut"), context: context)
            }
        }
        let channel = makeStream(id: id, request: nil, context: context)
        if session.isDraining { enqueue(session.goAway()) } // that was the last one: tell the server
        flushOutbound()
        let promise = context.eventLoop.makePromise(of: Channel.self)
        channel.configure(initializer: initializer, promise: promise)
        return promise.futureResult
    }

    /// Sends one PADDING frame now: traffic that keeps a long-lived idle
    /// connection (a share node's link to its rendezvous) from looking
    /// idle to the other end and to middleboxes.
    public func sendKeepAlive() {
        guard context != nil, !closed else { return }
        enqueuePadding()
        flushOutbound()
    }

    /// Takes no new streams (and tells the peer); the connection closes once
    /// its last stream has closed.
    public func goAway() {
        enqueue(session.goAway())
        if streams.isEmpty {
            closeConnectionWhenFlushed()
        } else {
            flushOutbound()
        }
    }

    // MARK: Channel events

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.createdAt = .now()
        self.outbound = context.channel.allocator.buffer(capacity: 0)
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        closeAllStreams(error: MuxError.connectionClosed)
        self.context = nil
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closed else { return }
        inReadBurst = true
        var buffer = unwrapInboundIn(data)
        if var remainder = inboundRemainder {
            inboundRemainder = nil
            remainder.writeBuffer(&buffer)
            buffer = remainder
        }
        do {
            while !closed, let frame = try MuxFrame.read(from: &buffer) {
                try handle(frame, context: context)
            }
        } catch {
            fail(error: error, context: context)
            return
        }
        if buffer.readableBytes > 0 && !closed { inboundRemainder = buffer }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        // Streams deliver what this burst brought (and grant window for it),
        // then everything that was queued goes out in one write.
        while !touched.isEmpty {
            let streams = touched
            touched.removeAll(keepingCapacity: true)
            for stream in streams { stream.parentReadComplete() }
        }
        inReadBurst = false
        writeOutbound()
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        for stream in Array(streams.values) { stream.parentWritabilityChanged(writable) }
        context.fireChannelWritabilityChanged()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        closed = true
        closeAllStreams(error: MuxError.connectionClosed)
        context.fireChannelInactive()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // The peer ended the connection: no frame can follow, so every stream is over.
            closed = true
            closeAllStreams(error: MuxError.connectionClosed)
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(error: error, context: context)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // Raw bytes would corrupt the framing; streams write through their own channels.
        promise?.fail(ChannelError.operationUnsupported)
    }

    // MARK: Inbound frames

    private func handle(_ frame: MuxFrame, context: ChannelHandlerContext) throws {
        if !unanswered.isEmpty { unanswered.removeValue(forKey: frame.stream)?.cancel() }
        let (events, replies) = try session.receive(frame)
        for reply in replies { enqueue(reply) }
        for event in events {
            switch event {
            case .opened(let id, let destination):
                guard session.role == .server else {
                    enqueue(session.reset(stream: id)) // a bridge does not open streams to its clients
                    continue
                }
                let stream = makeStream(id: id, request: destination, context: context)
                if session.isDraining && !session.wentAway { enqueue(session.goAway()) } // lifetime count reached
                stream.configure(initializer: inboundStreamInitializer, promise: nil)
            case .data(let id, let body):
                if let stream = streams[id] {
                    stream.receiveData(body)
                    touch(stream)
                }
            case .finished(let id):
                if let stream = streams[id] {
                    stream.receiveFinish()
                    touch(stream)
                }
            case .writable(let id):
                streams[id]?.windowOpened()
            case .reset(let id):
                streams[id]?.receiveReset()
            case .goAway:
                if streams.isEmpty { closeConnectionWhenFlushed() }
            }
        }
    }

    private func touch(_ stream: MuxStreamChannel) {
        if !stream.touchedInBurst {
            stream.touchedInBurst = true
            touched.append(stream)
        }
    }

    private func makeStream(id: UInt32, request: Endpoint?, context: ChannelHandlerContext) -> MuxStreamChannel {
        let stream = MuxStreamChannel(parent: context.channel, mux: self, streamID: id, request: request,
                                      waterMark: configuration.streamWriteBufferWaterMark,
                                      parentWritable: context.channel.isWritable)
        streams[id] = stream
        return stream
    }

    // MARK: Called by stream channels

    var allocator: ByteBufferAllocator { context?.channel.allocator ?? ByteBufferAllocator() }

    func sendWindow(stream id: UInt32) -> Int { session.sendWindow(stream: id) }

    /// Frames as much of `data` as the window allows (the rest stays in `data`).
    func sendData(stream id: UInt32, _ data: inout ByteBuffer, first: Bool) {
        let frames = session.send(stream: id, &data)
        for frame in frames { enqueue(frame) }
        if first && !frames.isEmpty && configuration.padding.withFirstData { enqueuePadding() }
    }

    func sendFinish(stream id: UInt32) {
        for frame in session.finish(stream: id) { enqueue(frame) }
    }

    func sendReset(stream id: UInt32) {
        for frame in session.reset(stream: id) { enqueue(frame) }
    }

    /// The stream's reader took `bytes`: the peer may get more window.
    func consumed(stream id: UInt32, bytes: Int) {
        for frame in session.consumed(stream: id, bytes: bytes) { enqueue(frame) }
    }

    /// Completes `promise` when the frames queued so far have been written.
    func completeWithNextWrite(_ promise: EventLoopPromise<Void>) {
        outboundPromises.append(promise)
    }

    /// Sends what is queued now, or at the end of the current read burst.
    func flushOutbound() {
        if !inReadBurst { writeOutbound() }
    }

    func readFromParent() {
        context?.read()
    }

    func streamClosed(_ stream: MuxStreamChannel) {
        if streams[stream.streamID] === stream { streams.removeValue(forKey: stream.streamID) }
        if streams.isEmpty && !closed && (session.wentAway || session.peerWentAway) {
            closeConnectionWhenFlushed()
        } else {
            flushOutbound()
        }
    }

    // MARK: Outbound

    private func enqueue(_ frame: MuxFrame) {
        frame.write(to: &outbound)
    }

    private func enqueue(_ frames: [MuxFrame]) {
        for frame in frames { frame.write(to: &outbound) }
    }

    private func enqueuePadding() {
        let padding = configuration.padding
        let length = Int.random(in: padding.lengths)
        var body = allocator.buffer(capacity: length)
        if length > 0 { body.writeBytes(SecureRandom.bytes(length)) }
        enqueue(MuxFrame(kind: .padding, stream: 0, body: body))
    }

    private func writeOutbound() {
        guard let context, !closed else {
            failOutboundPromises()
            return
        }
        guard outbound.readableBytes > 0 else {
            // Nothing new to send: the promises complete with what was sent before.
            let promises = outboundPromises
            outboundPromises.removeAll()
            if !promises.isEmpty {
                let previous = lastWrite ?? context.eventLoop.makeSucceededVoidFuture()
                previous.whenComplete { result in
                    for promise in promises { promise.completeWith(result) }
                }
            }
            return
        }
        if configuration.padding.probability > 0, Double.random(in: 0..<1) < configuration.padding.probability {
            enqueuePadding()
        }
        let buffer = outbound
        outbound = context.channel.allocator.buffer(capacity: 0)
        let promise = context.eventLoop.makePromise(of: Void.self)
        if !outboundPromises.isEmpty {
            let promises = outboundPromises
            outboundPromises.removeAll()
            promise.futureResult.whenComplete { result in
                for promise in promises { promise.completeWith(result) }
            }
        }
        lastWrite = promise.futureResult
        context.writeAndFlush(wrapOutboundOut(buffer), promise: promise)
    }

    private func failOutboundPromises() {
        let promises = outboundPromises
        outboundPromises.removeAll()
        for promise in promises { promise.fail(MuxError.connectionClosed) }
    }

    /// Sends what is queued (GOAWAY, the last FINISH), then closes the connection.
    private func closeConnectionWhenFlushed() {
        guard let context, !closed, !closingWhenFlushed else { return }
        closingWhenFlushed = true
        let promise = context.eventLoop.makePromise(of: Void.self)
        outboundPromises.append(promise)
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        promise.futureResult.whenComplete { _ in loopBound.value.close(promise: nil) }
        if !inReadBurst { writeOutbound() }
    }

    private func fail(error: Error, context: ChannelHandlerContext) {
        guard !closed else { return }
        closed = true
        inboundRemainder = nil
        closeAllStreams(error: error)
        context.close(promise: nil)
    }

    private func closeAllStreams(error: Error) {
        for timer in unanswered.values { timer.cancel() }
        unanswered.removeAll()
        let all = Array(streams.values)
        streams.removeAll()
        touched.removeAll()
        for stream in all { stream.connectionFailed(error: error) }
        failOutboundPromises()
    }
}

extension MuxHandler.Configuration {
    /// A share node's link to its rendezvous: it lives as long as the node
    /// runs and carries every invitee connection, so it neither ages out
    /// nor runs out of stream IDs in practice.
    public static let rendezvousLink = MuxHandler.Configuration(session: .init(maxStreams: 1024, maxStreamsPerConnection: 1 << 30), maxAge: nil)
}
