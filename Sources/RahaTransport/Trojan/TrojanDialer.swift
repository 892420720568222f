import NIOCore
import NIOPosix
import RahaWire

/// Dials streams through a Trojan server (a Raha bridge, v2ray, Xray,
/// trojan-gfw): TCP to the key's address, TLS with the key's server name
/// and certificate check, optionally WebSocket, then the Trojan header with
/// the first payload. A stream is returned once TLS (and the WebSocket
/// upgrade) completed, so a blocked or impersonated server fails the dial.
/// With `mux=1` (a Raha bridge) streams share connections instead: one per
/// event loop, opened like any other but naming `Trojan.muxDestination`.
/// UDP associations get a connection each, with command UDP ASSOCIATE.
public final class TrojanDialer: StreamDialer {
    private let connector: TrojanConnector
    private let muxPool: MuxPool?

    public init(key: TrojanKey, connectTimeout: TimeAmount = .seconds(10)) throws {
        let connector = try TrojanConnector(key: key, connectTimeout: connectTimeout)
        self.connector = connector
        muxPool = key.mux ? MuxPool(configuration: .init(answerTimeout: .seconds(10))) { eventLoop in
            connector.connect(to: Trojan.muxDestination, on: eventLoop)
        } : nil
    }

    public var key: TrojanKey { connector.key }

    public var label: String { "trojan\(key.isWebSocket ? "+ws" : "")\(key.mux ? "+mux" : "") via \(key.server)" }

    public func dial(_ target: Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<Channel> {
        if let muxPool { return muxPool.openStream(to: target, on: eventLoop) }
        return connector.connect(to: target, on: eventLoop)
    }

    /// UDP goes on a Trojan connection of its own (command UDP ASSOCIATE),
    /// with or without `mux=1`: datagrams never wait behind streams.
    public func associate(on eventLoop: EventLoop, receive: @escaping @Sendable (Endpoint, ByteBuffer) -> Void) -> EventLoopFuture<PacketAssociation> {
        let connector = self.connector
        return TrojanPacketAssociation.start(on: eventLoop) { eventLoop in
            connector.openUDP(on: eventLoop, receive: receive)
        }
    }
}

/// Opens one Trojan connection: TCP, TLS, WebSocket, then the request.
struct TrojanConnector: Sendable {
    let key: TrojanKey
    let connectTimeout: TimeAmount
    private let tls: TLSClient?
    private let bridge: BridgeAddress

    init(key: TrojanKey, connectTimeout: TimeAmount) throws {
        self.key = key
        self.connectTimeout = connectTimeout
        if key.tls {
            // WebSocket goes over HTTP/1.1; a CDN offered h2 would answer in HTTP/2.
            let alpn = key.alpn.isEmpty ? (key.isWebSocket ? ["http/1.1"] : ["h2", "http/1.1"]) : key.alpn
            tls = try TLSClient(serverName: key.serverName,
                                check: CertificateCheck(pin: key.pinnedCertificateSHA256, allowInsecure: key.allowInsecure),
                                alpn: alpn)
        } else {
            tls = nil
        }
        self.bridge = BridgeAddress(key.server)
    }

    /// One connection carrying the stream to `target`, once TLS and WebSocket are up.
    func connect(to target: Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<Channel> {
        let password = key.password
        return open(on: eventLoop) { pipeline in
            try pipeline.addHandlers([TrojanClientCodec(password: password, target: target), FirstWriteDeadline()])
        }
    }

    /// One connection carrying UDP (command UDP ASSOCIATE), once TLS and
    /// WebSocket are up: write `Trojan.UDPFrame`s to it; replies go to `receive`.
    func openUDP(on eventLoop: EventLoop, receive: @escaping @Sendable (Endpoint, ByteBuffer) -> Void) -> EventLoopFuture<Channel> {
        let password = key.password
        return open(on: eventLoop) { pipeline in
            try pipeline.addHandler(TrojanUDPClientHandler(password: password, receive: receive))
        }
    }

    /// TCP, TLS and WebSocket, then `request` adds the Trojan handler at the end of the pipeline.
    private func open(on eventLoop: EventLoop,
                      request: @escaping @Sendable (ChannelPipeline.SynchronousOperations) throws -> Void) -> EventLoopFuture<Channel> {
        let tls = self.tls, fragment = key.fragment, key = self.key
        let bootstrap = ClientBootstrap.rahaStream(group: eventLoop, connectTimeout: connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    guard let tls else { return }
                    if let fragment { try sync.addHandler(ClientHelloFragmentingHandler(sizes: fragment)) }
                    try sync.addHandlers([try tls.makeHandler(), TLSHandshakeWaiter()])
                }
            }
        let connected = bridge.connect(with: bootstrap)
        return connected.flatMap { channel in
            Self.handshake(channel).flatMap {
                Self.upgrade(channel, key: key)
            }.flatMapThrowing {
                try request(channel.pipeline.syncOperations)
                return channel
            }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }
        }
    }

    /// Completes once TLS is up (at once without TLS).
    private static func handshake(_ channel: Channel) -> EventLoopFuture<Void> {
        guard let waiter = try? channel.pipeline.syncOperations.handler(type: TLSHandshakeWaiter.self) else {
            return channel.eventLoop.makeSucceededVoidFuture()
        }
        return waiter.completed
    }

    /// Completes once the WebSocket upgrade is done (at once without WebSocket).
    private static func upgrade(_ channel: Channel, key: TrojanKey) -> EventLoopFuture<Void> {
        guard case .webSocket(let path, let host) = key.transport else { return channel.eventLoop.makeSucceededVoidFuture() }
        let upgraded = channel.eventLoop.makePromise(of: Void.self)
        do {
            try channel.pipeline.syncOperations.addHandler(
                WebSocketClientHandler(path: path, host: host ?? key.serverName ?? key.server.hostText, upgraded: upgraded))
        } catch {
            upgraded.fail(error)
        }
        return upgraded.futureResult
    }
}

extension TrojanKey {
    public var isWebSocket: Bool {
        if case .webSocket = transport { return true }
        return false
    }
}
