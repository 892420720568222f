import Logging
import NIOCore
import NIOPosix
import RahaTransport
import RahaWire

/// The local proxy: SOCKS5 and HTTP on one port, told apart by the first
/// byte (SOCKS5 always opens with 0x05; an HTTP request line never does).
public final class ProxyFront: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var listen: Endpoint
        public var credentials: ProxyCredentials?
        public init(listen: Endpoint, credentials: ProxyCredentials? = nil) {
            self.listen = listen
            self.credentials = credentials
        }
    }

    public let configuration: Configuration
    private let dialer: StreamDialer
    private let group: EventLoopGroup
    private let logger: Logger
    private var channel: Channel?

    public init(configuration: Configuration, dialer: StreamDialer, group: EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.dialer = dialer
        self.group = group
        self.logger = logger
    }

    public var localAddress: SocketAddress? { channel?.localAddress }

    public func start() async throws {
        let dialer = self.dialer, credentials = configuration.credentials, logger = self.logger
        channel = try await ServerBootstrap.rahaListener(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ProxyFrontHandler(dialer: dialer, credentials: credentials, logger: logger))
                }
            }
            .bind(host: configuration.listen.hostText, port: Int(configuration.listen.port)).get()
    }

    public func close() async {
        try? await channel?.close()
    }
}

/// Reads a proxy request on one accepted connection, opens the stream
/// through the dialer, answers, and joins the two.
final class ProxyFrontHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case detecting
        case socks(SOCKS5ServerStateMachine)
        case http
        case connecting
        case udp(UDPAssociation)
        case done
    }

    private let dialer: StreamDialer
    private let credentials: ProxyCredentials?
    private let logger: Logger
    private var state: State = .detecting
    private var buffer = ByteBuffer()
    private var inputClosed = false

    init(dialer: StreamDialer, credentials: ProxyCredentials?, logger: Logger) {
        self.dialer = dialer
        self.credentials = credentials
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        process(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            inputClosed = true
            switch state {
            case .connecting: return // passed on once joined
            case .udp: context.close(promise: nil) // the association lives as long as its control connection
            default: context.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .udp(let association) = state { association.close() }
        state = .done
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func process(context: ChannelHandlerContext) {
        switch state {
        case .detecting:
            guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
            if first == SOCKS5.version {
                state = .socks(SOCKS5ServerStateMachine(credentials: credentials))
            } else {
                state = .http
            }
            process(context: context)
        case .socks(var machine):
            while true {
                let action = machine.receive(&buffer)
                state = .socks(machine)
                switch action {
                case .needMoreData:
                    return
                case .send(let reply):
                    context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
                case .connect(let target):
                    connect(context: context, target: target) { result in
                        switch result {
                        case .success:
                            return SOCKS5ServerStateMachine.reply(.succeeded, bound: SOCKS5.unspecifiedAddress)
                        case .failure(let error):
                            return SOCKS5ServerStateMachine.reply(Self.socksReply(for: error), bound: SOCKS5.unspecifiedAddress)
                        }
                    }
                    return
                case .udpAssociate:
                    startUDP(context: context)
                    return
                case .fail(let reply, let reason):
                    logger.debug("refused a SOCKS5 request", metadata: ["code": "\(reason.code)"])
                    state = .done
                    if let reply { context.writeAndFlush(wrapOutboundOut(reply), promise: nil) }
                    context.close(promise: nil)
                    return
                }
            }
        case .http:
            let head: HTTPRequestHead
            do {
                guard let h = try HTTPRequestHead.read(from: &buffer) else { return }
                head = h
            } catch let error as WireError {
                failHTTP(context: context, HTTPProxy.errorResponse(for: error))
                return
            } catch {
                failHTTP(context: context, HTTPProxy.errorResponse(status: 400, reason: "Bad Request"))
                return
            }
            if let credentials, !head.hasProxyAuthorization(credentials) {
                failHTTP(context: context, HTTPProxy.proxyAuthenticationRequired())
                return
            }
            let request: HTTPProxyRequest
            do { request = try HTTPProxyRequest(head: head) } catch let error as WireError {
                failHTTP(context: context, HTTPProxy.errorResponse(for: error))
                return
            } catch {
                failHTTP(context: context, HTTPProxy.errorResponse(status: 400, reason: "Bad Request"))
                return
            }
            switch request {
            case .connect(let target):
                connect(context: context, target: target) { result in
                    switch result {
                    case .success: return HTTPProxy.connectionEstablished
                    case .failure(let error): return httpDialFailureResponse(error)
                    }
                }
            case .forward(let rewritten, let origin):
                state = .done
                let forwarder = HTTPForwardHandler(dialer: dialer, credentials: credentials, logger: logger)
                let rest = buffer
                buffer = ByteBuffer()
                do {
                    try context.pipeline.syncOperations.addHandler(forwarder, position: .after(self))
                } catch {
                    context.close(promise: nil)
                    return
                }
                forwarder.start(head: rewritten, origin: origin, clientKeepAlive: head.isKeepAlive, rest: rest)
                context.pipeline.syncOperations.removeHandler(self, promise: nil)
            }
        case .connecting, .udp, .done:
            // After the request only a well-behaved client sends more, and it waits for our answer.
            break
        }
    }

    private func failHTTP(context: ChannelHandlerContext, _ response: ByteBuffer) {
        state = .done
        context.writeAndFlush(wrapOutboundOut(response)).whenComplete { _ in context.close(promise: nil) }
    }

    /// Dials `target`, answers with `answer(result)`, then joins client and
    /// stream. Bytes the client sent after its request (now or while the
    /// stream opens) go to the stream first.
    private func connect(context: ChannelHandlerContext, target: Endpoint,
                         answer: @escaping (Result<Channel, Error>) -> ByteBuffer) {
        state = .connecting
        context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
        let client = context.channel
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        dialer.dial(target, on: context.eventLoop).whenComplete { result in
            let (handler, context) = loopBound.value
            switch result {
            case .failure(let error):
                handler.logger.debug("could not open a stream", metadata: ["via": "\(handler.dialer.label)", "error": "\(privacySafeReason(error))"])
                handler.state = .done
                context.writeAndFlush(handler.wrapOutboundOut(answer(result))).whenComplete { _ in context.close(promise: nil) }
            case .success(let stream):
                guard client.isActive else { stream.close(promise: nil); return }
                context.writeAndFlush(handler.wrapOutboundOut(answer(result)), promise: nil)
                if handler.buffer.readableBytes > 0 {
                    stream.writeAndFlush(handler.buffer, promise: nil)
                    handler.buffer = ByteBuffer()
                }
                handler.state = .done
                GlueHandler.splice(replacing: handler, at: context, with: stream, inputClosed: handler.inputClosed)
            }
        }
    }

    static func socksReply(for error: Error) -> SOCKS5Reply {
        if error is NoTransportError { return .networkUnreachable } // no transport gets through from this network
        if error is RouteBlocked { return .connectionNotAllowed }
        if let error = error as? IOError {
            switch error.errnoCode {
            case ECONNREFUSED: return .connectionRefused
            case ENETUNREACH: return .networkUnreachable
            case EHOSTUNREACH: return .hostUnreachable
            case ETIMEDOUT: return .ttlExpired
            default: return .generalFailure
            }
        }
        if error is ChannelError { return .hostUnreachable }
        return .generalFailure
    }

    // MARK: SOCKS5 UDP ASSOCIATE

    private func startUDP(context: ChannelHandlerContext) {
        state = .connecting
        guard let local = context.channel.localAddress, let peer = context.channel.remoteAddress else {
            context.close(promise: nil)
            return
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        UDPAssociation.open(local: local, client: peer, dialer: dialer, on: context.eventLoop).whenComplete { result in
            let (handler, context) = loopBound.value
            switch result {
            case .success(let association):
                guard context.channel.isActive else { association.close(); return }
                handler.state = .udp(association)
                let bound = association.boundEndpoint
                context.writeAndFlush(handler.wrapOutboundOut(SOCKS5ServerStateMachine.reply(.succeeded, bound: bound)), promise: nil)
            case .failure:
                handler.state = .done
                context.writeAndFlush(handler.wrapOutboundOut(SOCKS5ServerStateMachine.reply(.generalFailure, bound: SOCKS5.unspecifiedAddress)))
                    .whenComplete { _ in context.close(promise: nil) }
            }
        }
    }
}

/// One SOCKS5 UDP association: a local UDP socket for the application and
/// a packet association through the transport. Lives as long as the TCP
/// control connection; accepts datagrams only from the client's address.
final class UDPAssociation: @unchecked Sendable {
    let local: Channel
    private(set) var upstream: PacketAssociation?

    private init(local: Channel) { self.local = local }

    var boundEndpoint: Endpoint {
        guard let address = local.localAddress, let ip = address.ipAddress,
              let endpoint = try? Endpoint(parsing: ip, defaultPort: UInt16(address.port ?? 0)) else { return SOCKS5.unspecifiedAddress }
        return endpoint
    }

    static func open(local: SocketAddress, client: SocketAddress, dialer: StreamDialer, on eventLoop: EventLoop) -> EventLoopFuture<UDPAssociation> {
        let relay = UDPRelayHandler(clientIP: client.ipAddress)
        return DatagramBootstrap(group: eventLoop)
            .channelInitializer { $0.pipeline.addHandler(relay) }
            .bind(host: local.ipAddress ?? "127.0.0.1", port: 0)
            .flatMap { channel in
                let association = UDPAssociation(local: channel)
                let loopBound = NIOLoopBound(relay, eventLoop: eventLoop)
                return dialer.associate(on: eventLoop) { source, payload in
                    eventLoop.execute { loopBound.value.deliver(payload, from: source) }
                }.map { upstream in
                    association.upstream = upstream
                    relay.upstream = upstream
                    return association
                }.flatMapErrorThrowing { error in
                    channel.close(promise: nil)
                    throw error
                }
            }
    }

    func close() {
        upstream?.close()
        local.close(promise: nil)
    }
}

/// The application side of a UDP association.
final class UDPRelayHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    let clientIP: String?
    var upstream: PacketAssociation?
    private var clientAddress: SocketAddress?
    private var context: ChannelHandlerContext?

    init(clientIP: String?) { self.clientIP = clientIP }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        // Only the client that asked for the association may use it (RFC 1928 section 7).
        guard envelope.remoteAddress.ipAddress == clientIP,
              let datagram = try? SOCKS5UDPDatagram.parse(envelope.data),
              !datagram.isFragment else { return } // fragments are dropped, as the RFC allows
        clientAddress = envelope.remoteAddress
        upstream?.send(datagram.payload, to: datagram.destination)
    }

    func deliver(_ payload: ByteBuffer, from source: Endpoint) {
        guard let context, let clientAddress else { return }
        var out = context.channel.allocator.buffer(capacity: payload.readableBytes + 32)
        SOCKS5UDPDatagram(fragment: 0, destination: source, payload: payload).write(to: &out)
        context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: clientAddress, data: out)), promise: nil)
    }
}
