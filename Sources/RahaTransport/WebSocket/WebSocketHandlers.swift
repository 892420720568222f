import NIOCore
import RahaWire

// Trojan over WebSocket (`type=ws`), both ends, as thin handlers over
// RahaWire's WebSocket code. Once upgraded, the handlers turn frames into a
// plain byte stream and back, so the Trojan codecs (or anything else) sit
// above them unchanged:
//
//   bridge: [TLS] -> WebSocketServerHandler -> TrojanServerCodec -> exit
//   client: [TLS] -> WebSocketClientHandler -> TrojanClientCodec -> glue
//
// Half-closure maps onto Close frames: a Close frame received is the end of
// the input (`ChannelEvent.inputClosed`), `close(mode: .output)` sends one;
// when both have happened the connection closes.

/// The bridge's WebSocket end, on the plaintext side of TLS (or plain TCP
/// behind a reverse proxy such as nginx).
///
/// Until it has decided, it consumes nothing and reads at most
/// `WebSocketHandshake.maxRequestHeadLength` bytes (plus one read). A valid
/// upgrade on the secret path gets the 101 answer; from then on every
/// frame's payload is passed on as plain bytes and every buffer written is
/// sent as one unmasked binary frame. Anything else (another path, a
/// browser, a scanner, garbage) is spliced byte for byte to the fallback
/// site, exactly like `TrojanServerCodec` does with a wrong password. So is
/// an upgrade whose `Sec-WebSocket-Key` was seen before: a recorded upgrade
/// replayed by a prober (which, without TLS or behind a CDN, carries the
/// secret path) gets the site's 404 as a stranger would, not a 101.
public final class WebSocketServerHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum State {
        case deciding
        case upgraded
        case fallingBack
    }

    private let path: String
    private let fallback: FallbackDialer
    private let upgradeKeys: SharedReplayFilter?
    private var state: State = .deciding
    private var buffered = ByteBuffer()
    private var inputClosed = false
    private let stream = WebSocketStream(isClient: false)

    /// `path` is the secret path (a query in it is ignored, as is one in
    /// the client's request); `fallback` opens the site that everyone else sees;
    /// `upgradeKeys` remembers the upgrade keys of the listener's connections.
    public init(path: String, fallback: @escaping FallbackDialer, upgradeKeys: SharedReplayFilter? = nil) {
        self.path = path
        self.fallback = fallback
        self.upgradeKeys = upgradeKeys
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        switch state {
        case .upgraded:
            stream.read(&bytes, context: context)
        case .fallingBack:
            buffered.writeBuffer(&bytes)
        case .deciding:
            buffered.writeBuffer(&bytes)
            decide(context: context)
        }
    }

    private func decide(context: ChannelHandlerContext) {
        switch WebSocketHandshake.readRequest(from: buffered, path: path) {
        case .needMoreData:
            // A client that stops sending mid-request is not one of ours.
            if inputClosed { fallBack(context: context) }
        case .reject:
            fallBack(context: context)
        case .upgrade(let key, _, _) where upgradeKeys?.insert(Array(key.utf8)) == false:
            fallBack(context: context)
        case .upgrade(let key, let headLength, let earlyData):
            state = .upgraded
            buffered.moveReaderIndex(forwardBy: headLength)
            var frames = buffered
            buffered = ByteBuffer()
            let answer = WebSocketHandshake.serverResponse(accept: WebSocketHandshake.acceptValue(forKey: key),
                                                           subprotocol: earlyData?.header)
            context.writeAndFlush(wrapOutboundOut(answer), promise: nil)
            if let earlyData {
                context.fireChannelRead(wrapInboundOut(ByteBuffer(bytes: earlyData.bytes)))
            }
            if frames.readableBytes > 0 { stream.read(&frames, context: context) }
        }
    }

    private func fallBack(context: ChannelHandlerContext) {
        state = .fallingBack
        GlueHandler.spliceToFallback(replacing: self, at: context, dialer: fallback) { [self] in
            defer { buffered = ByteBuffer() }
            return (buffered, inputClosed)
        }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let channelEvent = event as? ChannelEvent, case .inputClosed = channelEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch state {
        case .upgraded:
            stream.endInput(context: context)
        case .fallingBack:
            inputClosed = true
        case .deciding:
            inputClosed = true
            decide(context: context)
        }
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .upgraded = state else {
            // Nothing above writes before the stream exists.
            promise?.fail(ChannelError.inappropriateOperationForState)
            return
        }
        stream.write(unwrapOutboundIn(data), promise: promise, context: context)
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard case .upgraded = state else {
            context.close(mode: mode, promise: promise)
            return
        }
        stream.close(mode: mode, promise: promise, context: context)
    }
}

/// The client's WebSocket end, on the plaintext side of TLS (or plain TCP).
///
/// Sends the upgrade request as soon as the channel is active (a TLS
/// handler below holds it until its handshake is done), checks the 101
/// answer and its `Sec-WebSocket-Accept`, then succeeds `upgraded`. On any
/// other answer it fails `upgraded` with a `WireError` that says what to
/// check, and closes. Buffers written before the upgrade wait and go out
/// right after it (so a dialer should wait for `upgraded` before joining the
/// channel to a fast local reader: until then they are held in memory).
/// Afterwards every buffer written is one masked binary frame, and every
/// frame's payload is passed on as plain bytes.
public final class WebSocketClientHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum State {
        case idle
        case awaitingResponse
        case upgraded
        case failed
    }

    private let path: String
    private let host: String
    private let key = WebSocketHandshake.makeKey()
    private let upgraded: EventLoopPromise<Void>
    private var promiseCompleted = false
    private var state: State = .idle
    private var response = ByteBuffer()
    private var queued = CircularBuffer<(ByteBuffer, EventLoopPromise<Void>?)>()
    /// `close(mode: .output)` asked for before the upgrade: done right after it.
    private var queuedOutputClose: (requested: Bool, promise: EventLoopPromise<Void>?) = (false, nil)
    private let stream = WebSocketStream(isClient: true)

    /// `path` is the request target (a query such as `?ed=2048` is sent as
    /// given), `host` the Host field (with the port when not the default).
    public init(path: String, host: String, upgraded: EventLoopPromise<Void>) {
        self.path = path
        self.host = host
        self.upgraded = upgraded
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { sendRequest(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        sendRequest(context: context)
        context.fireChannelActive()
    }

    private func sendRequest(context: ChannelHandlerContext) {
        guard case .idle = state else { return }
        state = .awaitingResponse
        let request = WebSocketHandshake.clientRequest(path: path, host: host, key: key)
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        switch state {
        case .upgraded:
            stream.read(&bytes, context: context)
        case .awaitingResponse:
            response.writeBuffer(&bytes)
            readResponse(context: context)
        case .idle, .failed:
            break
        }
    }

    private func readResponse(context: ChannelHandlerContext) {
        let expected = WebSocketHandshake.acceptValue(forKey: key)
        switch WebSocketHandshake.readResponse(from: &response, expectedAccept: expected) {
        case .needMoreData:
            return
        case .rejected(let error):
            fail(error, context: context)
        case .accepted:
            state = .upgraded
            var frames = response
            response = ByteBuffer()
            while let (buffer, promise) = queued.popFirst() {
                stream.write(buffer, promise: promise, context: context)
            }
            context.flush()
            if queuedOutputClose.requested {
                stream.close(mode: .output, promise: queuedOutputClose.promise, context: context)
                queuedOutputClose = (false, nil)
            }
            // Succeed first: whoever waits for the upgrade may add the
            // handler that takes the frames' payload.
            completePromise(nil)
            if frames.readableBytes > 0 { stream.read(&frames, context: context) }
        }
    }

    /// The upgrade failed: tell whoever waits, drop what was queued, close.
    private func fail(_ error: Error, context: ChannelHandlerContext) {
        guard state != .failed else { return }
        state = .failed
        completePromise(error)
        failQueued(error)
        context.close(promise: nil)
    }

    private func completePromise(_ error: Error?) {
        guard !promiseCompleted else { return }
        promiseCompleted = true
        if let error { upgraded.fail(error) } else { upgraded.succeed() }
    }

    private func failQueued(_ error: Error) {
        while let (_, promise) = queued.popFirst() { promise?.fail(error) }
        queuedOutputClose.promise?.fail(error)
        queuedOutputClose = (false, nil)
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let channelEvent = event as? ChannelEvent, case .inputClosed = channelEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch state {
        case .upgraded:
            stream.endInput(context: context)
        case .idle, .awaitingResponse:
            fail(WireError.malformed("the server closed the connection before answering the WebSocket upgrade: check the path, host and TLS setting in the access key"), context: context)
        case .failed:
            break
        }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        if state != .upgraded {
            let error = WireError.malformed("the connection closed before the WebSocket upgrade was answered: check the path, host and TLS setting in the access key")
            completePromise(error)
            failQueued(error)
        }
        context.fireChannelInactive()
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        if state != .upgraded {
            completePromise(error)
        }
        context.fireErrorCaught(error)
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        if state != .upgraded {
            completePromise(ChannelError.ioOnClosedChannel)
            failQueued(ChannelError.ioOnClosedChannel)
        }
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch state {
        case .upgraded:
            stream.write(unwrapOutboundIn(data), promise: promise, context: context)
        case .idle, .awaitingResponse:
            queued.append((unwrapOutboundIn(data), promise))
        case .failed:
            promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    public func flush(context: ChannelHandlerContext) {
        // Queued writes are flushed once the upgrade is done.
        if case .upgraded = state { context.flush() }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch (state, mode) {
        case (.upgraded, _):
            stream.close(mode: mode, promise: promise, context: context)
        case (.idle, .output), (.awaitingResponse, .output):
            if queuedOutputClose.requested {
                promise?.succeed()
            } else {
                queuedOutputClose = (true, promise)
            }
        default:
            if mode == .all {
                let error = ChannelError.ioOnClosedChannel
                completePromise(error)
                failQueued(error)
                state = .failed
            }
            context.close(mode: mode, promise: promise)
        }
    }
}

/// What both ends do once upgraded: frames in, payload out; each buffer
/// written becomes one binary frame (masked by the client); pings are
/// answered; Close frames stand for half-closes.
final class WebSocketStream {
    private var reader: WebSocketFrameReader
    private let isClient: Bool
    private var maskKeys: MaskKeyGenerator
    private var inputEnded = false
    /// Completes once the Close frame has been written (it is the last frame).
    private var closeWritten: EventLoopFuture<Void>?
    private var closeSent: Bool { closeWritten != nil }
    private var failed = false

    init(isClient: Bool) {
        self.isClient = isClient
        self.reader = WebSocketFrameReader(requireMasked: !isClient)
        self.maskKeys = MaskKeyGenerator()
    }

    /// Reads frames from `bytes` (consumed entirely) and passes on what they held.
    func read(_ bytes: inout ByteBuffer, context: ChannelHandlerContext) {
        guard !failed else { return }
        let events: [WebSocketFrameReader.Event]
        do {
            events = try reader.read(&bytes)
        } catch {
            fail(error, context: context)
            return
        }
        for event in events {
            switch event {
            case .data(let payload):
                context.fireChannelRead(NIOAny(payload))
            case .ping(let payload):
                guard !closeSent else { continue }
                context.writeAndFlush(NIOAny(frame(.pong, payload, context: context)), promise: nil)
            case .pong:
                break
            case .close:
                endInput(context: context)
            }
        }
    }

    /// The peer has sent its last byte (a Close frame, or the connection's end).
    func endInput(context: ChannelHandlerContext) {
        guard !inputEnded else { return }
        inputEnded = true
        context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        closeIfBothEnded(context: context)
    }

    func write(_ payload: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard !closeSent else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        guard payload.readableBytes > 0 else {
            // An empty frame would say nothing; some peers take it for the end.
            promise?.succeed()
            return
        }
        context.write(NIOAny(frame(.binary, payload, context: context)), promise: promise)
    }

    func close(mode: CloseMode, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        switch mode {
        case .output:
            guard !closeSent else {
                promise?.succeed()
                return
            }
            sendClose(code: WebSocketFrame.normalClosure, promise: promise, context: context)
            closeIfBothEnded(context: context)
        case .all:
            if !closeSent && !failed {
                sendClose(code: WebSocketFrame.normalClosure, promise: nil, context: context)
            }
            context.close(mode: .all, promise: promise)
        case .input:
            context.close(mode: mode, promise: promise)
        }
    }

    private func sendClose(code: UInt16, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        let written = context.eventLoop.makePromise(of: Void.self)
        closeWritten = written.futureResult
        if let promise { written.futureResult.cascade(to: promise) }
        context.writeAndFlush(NIOAny(frame(.close, WebSocketFrame.closePayload(code: code), context: context)), promise: written)
    }

    private func closeIfBothEnded(context: ChannelHandlerContext) {
        guard inputEnded, let closeWritten else { return }
        // Once everything written (the Close frame last) has left, so that
        // closing does not drop the end of the stream.
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        closeWritten.whenComplete { _ in
            loopBound.value.close(promise: nil)
        }
    }

    /// A protocol violation: Close with 1002, tell the handlers above, close.
    private func fail(_ error: Error, context: ChannelHandlerContext) {
        failed = true
        if !closeSent { sendClose(code: WebSocketFrame.protocolError, promise: nil, context: context) }
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }

    private func frame(_ opcode: WebSocketOpcode, _ payload: ByteBuffer, context: ChannelHandlerContext) -> ByteBuffer {
        let maskKey = isClient ? maskKeys.next() : nil
        var out = context.channel.allocator.buffer(
            capacity: WebSocketFrame.headerLength(payloadLength: payload.readableBytes, masked: maskKey != nil) + payload.readableBytes)
        WebSocketFrame.write(opcode: opcode, payload: payload.readableBytesView, maskKey: maskKey, to: &out)
        return out
    }
}

/// Mask keys for client frames. Masking only keeps a client's bytes from
/// being predictable to proxies that might misparse them (RFC 6455 section
/// 10.3), so a fast generator (SplitMix64) seeded from the system's CSPRNG
/// is enough.
struct MaskKeyGenerator {
    private var state: UInt64
    private var spare: UInt32?

    init() {
        state = SecureRandom.bytes(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    mutating func next() -> UInt32 {
        if let spare {
            self.spare = nil
            return spare
        }
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        spare = UInt32(truncatingIfNeeded: z >> 32)
        return UInt32(truncatingIfNeeded: z)
    }
}
