import NIOCore
import NIOPosix
import RahaWire

/// Dials streams through a Trojan server (a Raha bridge, v2ray, Xray,
/// trojan-gfw): TCP to the key's address, TLS with the key's server name
/// and certificate check, optionally WebSocket, then the Trojan header with
/// the first payload. A stream is returned once TLS (and the WebSocket
/// upgrade) completed, so a blocked or impersonated server fails the dial.
public final class TrojanDialer: StreamDialer {
    public let key: TrojanKey
    public let connectTimeout: TimeAmount
    private let tls: TLSClient?
    private let serverAddress: SocketAddress?

    public init(key: TrojanKey, connectTimeout: TimeAmount = .seconds(10)) throws {
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
        self.serverAddress = try? SocketAddress(ipAddress: key.server.hostText, port: Int(key.server.port))
    }

    public var label: String { "trojan\(key.isWebSocket ? "+ws" : "") via \(key.server)" }

    public func dial(_ target: Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<Channel> {
        let tls = self.tls, fragment = key.fragment, password = key.password
        let bootstrap = ClientBootstrap.rahaStream(group: eventLoop, connectTimeout: connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    guard let tls else { return }
                    if let fragment { try sync.addHandler(ClientHelloFragmentingHandler(sizes: fragment)) }
                    try sync.addHandlers([try tls.makeHandler(), TLSHandshakeWaiter()])
                }
            }
        let connected = serverAddress.map { bootstrap.connect(to: $0) }
            ?? bootstrap.connect(host: key.server.hostText, port: Int(key.server.port))
        return connected.flatMap { channel in
            Self.handshake(channel).flatMapThrowing {
                try channel.pipeline.syncOperations.addHandlers([
                    TrojanClientCodec(password: password, target: target),
                    FirstWriteDeadline(),
                ])
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

    public func associate(on eventLoop: EventLoop, receive: @escaping @Sendable (Endpoint, ByteBuffer) -> Void) -> EventLoopFuture<PacketAssociation> {
        eventLoop.makeFailedFuture(WireError.unsupported("UDP through a Trojan key is not supported yet: use a Shadowsocks key for UDP"))
    }
}

extension TrojanKey {
    public var isWebSocket: Bool {
        if case .webSocket = transport { return true }
        return false
    }
}
