import NIOCore
import RahaWire

/// What a bridge-side codec fires when an authenticated client asks for UDP
/// (Trojan's UDP ASSOCIATE): what follows on the stream, both ways, is
/// `Trojan.UDPFrame`s, and the handler after the codec should relay them.
public struct UDPAssociateRequestEvent: Sendable {
    public init() {}
}

/// The bridge's Trojan codec, on the plaintext side of TLS (or WebSocket).
///
/// Until it has decided, it consumes nothing. An authenticated CONNECT
/// becomes a `ProxyRequestEvent` followed by the payload, exactly like the
/// Shadowsocks codec, so the same exit serves both; an authenticated UDP
/// ASSOCIATE becomes a `UDPAssociateRequestEvent` followed by the frames. Anything else (a
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

    private let clients: [ClientRoster.Client]
    private let userHashes: [[UInt8]]
    private let fallback: FallbackDialer
    private var state: State = .deciding
    private var buffered = ByteBuffer()
    private var inputClosed = false

    /// - Parameter roster: read once, when the connection opens.
    public init(roster: ClientRoster, fallback: @escaping FallbackDialer) {
        self.clients = roster.trojan
        self.userHashes = clients.map { $0.trojanHash! }
        self.fallback = fallback
    }

    public convenience init(passwords: [String], fallback: @escaping FallbackDialer) {
        self.init(roster: ClientRoster(trojanPasswords: passwords), fallback: fallback)
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
        case .authenticated(let user, let request) where request.command == .connect:
            state = .authenticated
            context.fireUserInboundEventTriggered(ClientAuthenticatedEvent(clientID: clients[user].id))
            // A Raha client asking for a multiplexed connection names a reserved destination.
            context.fireUserInboundEventTriggered(request.destination == Trojan.muxDestination
                                                  ? MuxRequestEvent() as Any : ProxyRequestEvent(target: request.destination))
            if buffered.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(buffered))
                buffered = ByteBuffer()
            }
        case .authenticated(let user, let request) where request.command == .udpAssociate:
            // The header's destination means nothing for UDP (clients send the
            // first datagram's or 0.0.0.0:0): every frame names its own.
            state = .authenticated
            context.fireUserInboundEventTriggered(ClientAuthenticatedEvent(clientID: clients[user].id))
            context.fireUserInboundEventTriggered(UDPAssociateRequestEvent())
            if buffered.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(buffered))
                buffered = ByteBuffer()
            }
        case .authenticated, .fallback:
            fallBack(context: context)
        }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, case .inputClosed = event, state != .authenticated else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        // A client that stops sending before its header is complete is not
        // one of ours: the site gets its bytes and the half-close.
        inputClosed = true
        if state == .deciding { fallBack(context: context) }
    }

    private func fallBack(context: ChannelHandlerContext) {
        state = .fallingBack
        GlueHandler.spliceToFallback(replacing: self, at: context, dialer: fallback) { [self] in
            defer { buffered = ByteBuffer() }
            return (buffered, inputClosed)
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
