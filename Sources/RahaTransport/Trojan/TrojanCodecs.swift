import NIOCore
import RahaWire

/// Opens a connection to the bridge's fallback web site, on the event loop given
/// (the codec joins it to the client channel on that loop).
public typealias FallbackDialer = @Sendable (EventLoop) -> EventLoopFuture<Channel>

/// The bridge's Trojan codec, on the plaintext side of TLS (or WebSocket).
///
/// Until it has decided, it consumes nothing. An authenticated CONNECT
/// becomes a `ProxyRequestEvent` followed by the payload, exactly like the
/// Shadowsocks codec, so the same exit serves both. Anything else (a
/// browser, a scanner, a wrong password, garbage) is spliced byte for byte
/// to the fallback site, so a prober sees that site and nothing else.
public final class TrojanServerCodec: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private enum State {
        case deciding
        case authenticated
        case fallingBack
    }

    private let userHashes: [[UInt8]]
    private let fallback: FallbackDialer
    private var state: State = .deciding
    private var buffered = ByteBuffer()

    public init(passwords: [String], fallback: @escaping FallbackDialer) {
        self.userHashes = passwords.map(Trojan.passwordHash)
        self.fallback = fallback
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .authenticated:
            context.fireChannelRead(data)
        case .fallingBack:
            var bytes = unwrapInboundIn(data)
            buffered.writeBuffer(&bytes)
        case .deciding:
            var bytes = unwrapInboundIn(data)
            buffered.writeBuffer(&bytes)
            decide(context: context)
        }
    }

    private func decide(context: ChannelHandlerContext) {
        switch Trojan.readHeader(from: &buffered, userHashes: userHashes) {
        case .needMoreData:
            return
        case .authenticated(_, let request) where request.command == .connect:
            state = .authenticated
            context.fireUserInboundEventTriggered(ProxyRequestEvent(target: request.destination))
            if buffered.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(buffered))
                buffered = ByteBuffer()
            }
        case .authenticated, .fallback:
            // UDP over Trojan is not served yet: treat it like any other non-request.
            fallBack(context: context)
        }
    }

    private func fallBack(context: ChannelHandlerContext) {
        state = .fallingBack
        let client = context.channel
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        client.setOption(.autoRead, value: false).whenComplete { _ in }
        fallback(context.eventLoop).whenComplete { result in
            let (handler, context) = loopBound.value
            switch result {
            case .failure:
                // Like a web server that is down: close.
                context.close(promise: nil)
            case .success(let site):
                guard client.isActive else { site.close(promise: nil); return }
                site.writeAndFlush(handler.buffered, promise: nil)
                handler.buffered = ByteBuffer()
                // The glue takes this codec's place, so no later handler
                // (the exit, waiting for a request) ever sees the prober's bytes.
                GlueHandler.splice(replacing: handler, at: context, with: site)
            }
        }
    }
}

/// The client's Trojan codec, on the plaintext side of TLS: the first write
/// carries the header and the first payload together.
public final class TrojanClientCodec: ChannelOutboundHandler {
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private let passwordHash: [UInt8]
    private let target: Endpoint
    private var headerSent = false

    public init(password: String, target: Endpoint) {
        self.passwordHash = Trojan.passwordHash(password)
        self.target = target
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !headerSent else {
            context.write(data, promise: promise)
            return
        }
        headerSent = true
        let payload = unwrapOutboundIn(data)
        var out = context.channel.allocator.buffer(capacity: Trojan.maxHeaderLength + payload.readableBytes)
        Trojan.writeHeader(passwordHash: passwordHash, request: .init(command: .connect, destination: target),
                           payload: payload.readableBytesView, to: &out)
        context.write(wrapOutboundOut(out), promise: promise)
    }
}
