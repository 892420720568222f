import Logging
import NIOCore
import NIOPosix
import RahaTransport
import RahaWire

/// The bridge's Shadowsocks UDP relay: a NAT table from client (2022:
/// client session ID; legacy: client and address) to an outbound UDP socket.
/// Packets that fail to open are dropped silently, like any loss. On a
/// share node every datagram is counted against its invitee and dropped
/// while they are revoked, over quota or over their rate.
final class ShadowsocksUDPRelay: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private enum NATKey: Hashable {
        case session(UInt64)
        case address(client: String, SocketAddress)
    }

    private final class Entry {
        let credential: ShadowsocksCredential
        let account: InviteeAccount?
        var clientAddress: SocketAddress
        var clientSessionID: UInt64
        var window = PacketWindow()
        var serverSessionID = UInt64.random(in: .min ... .max)
        var serverPacketID: UInt64 = 0
        var socket: UDPExitSocket?
        var lastActivity: NIODeadline = .now()
        init(credential: ShadowsocksCredential, account: InviteeAccount?, clientAddress: SocketAddress, clientSessionID: UInt64) {
            self.credential = credential
            self.account = account
            self.clientAddress = clientAddress
            self.clientSessionID = clientSessionID
        }
    }

    static let maxEntries = 4096

    private let roster: ClientRoster
    private let share: ShareLedger?
    private let replayFilter: SharedReplayFilter
    private let exit: Exit
    private let sessionTimeout: TimeAmount
    private let logger: Logger
    private var table: [NATKey: Entry] = [:]
    private var subkeys = ShadowsocksUDP.SubkeyCache()
    private var context: ChannelHandlerContext?
    private var sweeper: RepeatedTask?

    init(roster: ClientRoster, share: ShareLedger?, replayFilter: SharedReplayFilter, exit: Exit, sessionTimeout: TimeAmount, logger: Logger) {
        self.roster = roster
        self.share = share
        self.replayFilter = replayFilter
        self.exit = exit
        self.sessionTimeout = sessionTimeout
        self.logger = logger
    }

    static func bind(at address: SocketAddress, roster: ClientRoster, share: ShareLedger?, replayFilter: SharedReplayFilter, exit: Exit,
                     sessionTimeout: TimeAmount, group: EventLoopGroup, logger: Logger) async throws -> Channel {
        try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ShadowsocksUDPRelay(roster: roster, share: share, replayFilter: replayFilter, exit: exit, sessionTimeout: sessionTimeout, logger: logger))
                }
            }
            .bind(to: address).get()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        sweeper = context.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(5), delay: .seconds(5)) { _ in
            loopBound.value.sweep()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        sweeper?.cancel()
        for entry in table.values { entry.socket?.close() }
        table = [:]
        self.context = nil
    }

    private func sweep() {
        let cutoff = NIODeadline.now() - sessionTimeout
        for (key, entry) in table where entry.lastActivity < cutoff {
            entry.socket?.close()
            table[key] = nil
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let packet = Array(envelope.data.readableBytesView)
        // The first client whose key opens the packet sent it.
        var opened: (ShadowsocksDatagram, ClientRoster.Client)?
        for client in roster.shadowsocks {
            if let datagram = try? ShadowsocksUDP.open(packet, direction: .clientToServer, credential: client.shadowsocks!,
                                                       now: unixNow(), subkeyCache: &subkeys) {
                opened = (datagram, client)
                break
            }
        }
        guard let (datagram, client) = opened else { return }
        let account = share?.account(for: client.id)
        if let account {
            guard account.delay(.up) == nil, account.count(packet.count, .up) else { return }
        }
        let key: NATKey
        if let salt = datagram.salt {
            guard replayFilter.insert(salt) else { return }
            key = .address(client: client.id, envelope.remoteAddress)
        } else {
            key = .session(datagram.sessionID!)
        }
        let entry: Entry
        if let existing = table[key] {
            entry = existing
        } else {
            guard table.count < Self.maxEntries else { return }
            entry = Entry(credential: client.shadowsocks!, account: account, clientAddress: envelope.remoteAddress, clientSessionID: datagram.sessionID ?? 0)
            let loopBound = NIOLoopBound((self, entry), eventLoop: context.eventLoop)
            let logger = self.logger
            entry.socket = UDPExitSocket(exit: exit, eventLoop: context.eventLoop, onReply: { source, payload in
                let (relay, entry) = loopBound.value
                relay.reply(payload, from: source, entry: entry)
            }, onRefused: { reason in
                logger.debug("UDP datagrams dropped", metadata: ["reason": "\(reason.description)"])
            })
            table[key] = entry
        }
        if let packetID = datagram.packetID {
            guard entry.window.accept(packetID) else { return }
        }
        entry.clientAddress = envelope.remoteAddress
        entry.lastActivity = .now()
        entry.socket?.send(ByteBuffer(bytes: datagram.payload), to: datagram.endpoint)
    }

    private func reply(_ payload: ByteBuffer, from source: Endpoint, entry: Entry) {
        guard let context else { return }
        if let account = entry.account {
            guard account.delay(.down) == nil, account.mayUse else { return }
        }
        entry.lastActivity = .now()
        let packet = ShadowsocksUDP.seal(
            ShadowsocksDatagram(endpoint: source, payload: Array(payload.readableBytesView)),
            direction: .serverToClient, credential: entry.credential,
            sessionID: entry.serverSessionID, packetID: entry.serverPacketID, clientSessionID: entry.clientSessionID,
            now: unixNow(), subkeyCache: &subkeys)
        entry.serverPacketID += 1
        _ = entry.account?.count(packet.count, .down)
        context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: entry.clientAddress, data: ByteBuffer(bytes: packet))), promise: nil)
    }
}
