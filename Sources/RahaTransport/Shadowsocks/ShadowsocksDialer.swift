import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RahaWire

/// Dials streams and UDP associations through a Shadowsocks server.
public final class ShadowsocksDialer: StreamDialer {
    public let key: ShadowsocksKey
    public let credential: ShadowsocksCredential
    public let connectTimeout: TimeAmount

    private let bridge: BridgeAddress
    /// 2022 only: response salts seen, so a recorded response cannot be replayed to us.
    private let responseSalts: SharedReplayFilter?

    public init(key: ShadowsocksKey, connectTimeout: TimeAmount = .seconds(10)) throws {
        self.key = key
        self.credential = try ShadowsocksCredential(method: key.method, password: key.password)
        self.connectTimeout = connectTimeout
        self.bridge = BridgeAddress(key.server)
        self.responseSalts = key.method.is2022 ? SharedReplayFilter(capacity: 50_000) : nil
    }

    public var label: String { "ss \(key.method.rawValue) via \(key.server)" }

    public func dial(_ target: Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<Channel> {
        let credential = self.credential, prefix = key.prefix, responseSalts = self.responseSalts
        let bootstrap = ClientBootstrap.rahaStream(group: eventLoop, connectTimeout: connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ShadowsocksClientCodec(credential: credential, target: target, prefix: prefix, replayFilter: responseSalts),
                        FirstWriteDeadline(),
                    ])
                }
            }
        return bridge.connect(with: bootstrap)
    }

    public func associate(on eventLoop: EventLoop, receive: @escaping @Sendable (Endpoint, ByteBuffer) -> Void) -> EventLoopFuture<PacketAssociation> {
        let credential = self.credential
        let resolved: EventLoopFuture<SocketAddress>
        do {
            resolved = eventLoop.makeSucceededFuture(try bridge.resolved())
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        return resolved.flatMap { address in
            let state = ShadowsocksUDPClientState(credential: credential)
            return DatagramBootstrap(group: eventLoop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ShadowsocksUDPClientHandler(state: state, receive: receive))
                    }
                }
                .bind(host: address.protocol == .inet6 ? "::" : "0.0.0.0", port: 0)
                .map { channel in ShadowsocksPacketAssociation(channel: channel, server: address, state: state) as PacketAssociation }
        }
    }
}

/// Per-association state: the 2022 session and packet IDs and the replay
/// windows of the server sessions that answer.
final class ShadowsocksUDPClientState: @unchecked Sendable {
    let credential: ShadowsocksCredential
    let sessionID = UInt64.random(in: .min ... .max)
    private let lock = NIOLock()
    private var packetID: UInt64 = 0
    private var windows: [UInt64: PacketWindow] = [:]
    private var subkeys = ShadowsocksUDP.SubkeyCache()

    init(credential: ShadowsocksCredential) { self.credential = credential }

    func seal(_ payload: ByteBuffer, to target: Endpoint) -> [UInt8] {
        lock.withLock {
            defer { packetID += 1 }
            return ShadowsocksUDP.seal(ShadowsocksDatagram(endpoint: target, payload: Array(payload.readableBytesView)),
                                       direction: .clientToServer, credential: credential,
                                       sessionID: sessionID, packetID: packetID, now: unixNow(), subkeyCache: &subkeys)
        }
    }

    func open(_ packet: ByteBuffer) -> ShadowsocksDatagram? {
        lock.withLock {
            guard let d = try? ShadowsocksUDP.open(Array(packet.readableBytesView), direction: .serverToClient,
                                                   credential: credential, now: unixNow(), subkeyCache: &subkeys) else { return nil }
            if let server = d.sessionID, let id = d.packetID {
                guard d.clientSessionID == sessionID else { return nil }
                if windows[server] == nil {
                    if windows.count >= 4 { windows.removeAll() }
                    windows[server] = PacketWindow()
                }
                guard windows[server]!.accept(id) else { return nil }
            }
            return d
        }
    }
}

final class ShadowsocksUDPClientHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let state: ShadowsocksUDPClientState
    private let receive: @Sendable (Endpoint, ByteBuffer) -> Void

    init(state: ShadowsocksUDPClientState, receive: @escaping @Sendable (Endpoint, ByteBuffer) -> Void) {
        self.state = state
        self.receive = receive
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let datagram = state.open(envelope.data) else { return }
        receive(datagram.endpoint, ByteBuffer(bytes: datagram.payload))
    }
}

struct ShadowsocksPacketAssociation: PacketAssociation {
    let channel: Channel
    let server: SocketAddress
    let state: ShadowsocksUDPClientState

    func send(_ payload: ByteBuffer, to target: Endpoint) {
        let packet = state.seal(payload, to: target)
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: server, data: ByteBuffer(bytes: packet)), promise: nil)
    }

    func close() { channel.close(promise: nil) }
}
