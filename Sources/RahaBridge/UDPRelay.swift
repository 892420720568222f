import Logging
import NIOCore
import NIOPosix
import RahaTransport
import RahaWire

/// The bridge's Shadowsocks UDP relay: a NAT table from client (2022:
/// client session ID; legacy: client address) to an outbound UDP socket.
/// Packets that fail to open are dropped silently, like any loss.
final class ShadowsocksUDPRelay: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private enum NATKey: Hashable {
        case session(UInt64)
        case address(SocketAddress)
    }

    private final class Entry {
        var clientAddress: SocketAddress
        var clientSessionID: UInt64
        var window = PacketWindow()
        var serverSessionID = UInt64.random(in: .min ... .max)
        var serverPacketID: UInt64 = 0
        var outbound: Channel?
        var queued: [(Endpoint, ByteBuffer)] = []
        var lastActivity: NIODeadline = .now()
        var resolved: [Endpoint: SocketAddress] = [:]
        init(clientAddress: SocketAddress, clientSessionID: UInt64) {
            self.clientAddress = clientAddress
            self.clientSessionID = clientSessionID
        }
    }

    static let maxEntries = 4096
    static let maxQueued = 64

    private let credential: ShadowsocksCredential
    private let replayFilter: SharedReplayFilter
    private let exit: Exit
    private let sessionTimeout: TimeAmount
    private let logger: Logger
    private var table: [NATKey: Entry] = [:]
    private var subkeys = ShadowsocksUDP.SubkeyCache()
    private var context: ChannelHandlerContext?
    private var sweeper: RepeatedTask?

    init(credential: ShadowsocksCredential, replayFilter: SharedReplayFilter, exit: Exit, sessionTimeout: TimeAmount, logger: Logger) {
        self.credential = credential
        self.replayFilter = replayFilter
        self.exit = exit
        self.sessionTimeout = sessionTimeout
        self.logger = logger
    }

    static func bind(at address: SocketAddress, credential: ShadowsocksCredential, replayFilter: SharedReplayFilter, exit: Exit,
                     sessionTimeout: TimeAmount, group: EventLoopGroup, logger: Logger) async throws -> Channel {
        try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ShadowsocksUDPRelay(credential: credential, replayFilter: replayFilter, exit: exit, sessionTimeout: sessionTimeout, logger: logger))
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
        for entry in table.values { entry.outbound?.close(promise: nil) }
        table = [:]
        self.context = nil
    }

    private func sweep() {
        let cutoff = NIODeadline.now() - sessionTimeout
        for (key, entry) in table where entry.lastActivity < cutoff {
            entry.outbound?.close(promise: nil)
            table[key] = nil
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let datagram: ShadowsocksDatagram
        do {
            datagram = try ShadowsocksUDP.open(Array(envelope.data.readableBytesView), direction: .clientToServer,
                                               credential: credential, now: unixNow(), subkeyCache: &subkeys)
        } catch {
            return
        }
        let key: NATKey
        if let salt = datagram.salt {
            guard replayFilter.insert(salt) else { return }
            key = .address(envelope.remoteAddress)
        } else {
            key = .session(datagram.sessionID!)
        }
        let entry: Entry
        if let existing = table[key] {
            entry = existing
        } else {
            guard table.count < Self.maxEntries else { return }
            entry = Entry(clientAddress: envelope.remoteAddress, clientSessionID: datagram.sessionID ?? 0)
            table[key] = entry
        }
        if let packetID = datagram.packetID {
            guard entry.window.accept(packetID) else { return }
        }
        entry.clientAddress = envelope.remoteAddress
        entry.lastActivity = .now()
        send(ByteBuffer(bytes: datagram.payload), to: datagram.endpoint, entry: entry, context: context)
    }

    private func send(_ payload: ByteBuffer, to target: Endpoint, entry: Entry, context: ChannelHandlerContext) {
        if let address = entry.resolved[target], let outbound = entry.outbound {
            outbound.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: payload), promise: nil)
            return
        }
        guard entry.queued.count < Self.maxQueued else { return }
        entry.queued.append((target, payload))
        let loopBound = NIOLoopBound((self, entry, context), eventLoop: context.eventLoop)
        let outboundReady: EventLoopFuture<Channel>
        if let outbound = entry.outbound {
            outboundReady = context.eventLoop.makeSucceededFuture(outbound)
        } else {
            outboundReady = openOutbound(for: entry, context: context)
        }
        outboundReady.and(exit.resolve(target, on: context.eventLoop)).whenComplete { result in
            let (handler, entry, _) = loopBound.value
            guard case .success(let (outbound, addresses)) = result,
                  let address = addresses.first(where: { handler.exit.policy.allows($0) }) else {
                entry.queued.removeAll { $0.0 == target }
                return
            }
            entry.resolved[target] = address
            for (t, p) in entry.queued where t == target {
                outbound.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: p), promise: nil)
            }
            entry.queued.removeAll { $0.0 == target }
        }
    }

    private func openOutbound(for entry: Entry, context: ChannelHandlerContext) -> EventLoopFuture<Channel> {
        let loopBound = NIOLoopBound((self, entry), eventLoop: context.eventLoop)
        let future = DatagramBootstrap(group: context.eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ReplyHandler { envelope in
                        let (relay, entry) = loopBound.value
                        relay.reply(envelope, entry: entry)
                    })
                }
            }
            .bind(host: "::", port: 0)
            .flatMapError { _ in DatagramBootstrap(group: context.eventLoop).bind(host: "0.0.0.0", port: 0) }
        future.whenSuccess { channel in loopBound.value.1.outbound = channel }
        return future
    }

    private func reply(_ envelope: AddressedEnvelope<ByteBuffer>, entry: Entry) {
        guard let context else { return }
        entry.lastActivity = .now()
        var source = Endpoint(host: .domain("0"), port: UInt16(envelope.remoteAddress.port ?? 0))
        if let ip = envelope.remoteAddress.ipAddress, let parsed = try? Endpoint(parsing: ip[...], defaultPort: source.port) {
            source = parsed
        }
        // An IPv4 peer reached through a dual-stack socket reports ::ffff:a.b.c.d: give the client plain IPv4.
        if case .ipv6(let b) = source.host, b[0..<10].allSatisfy({ $0 == 0 }), b[10] == 0xff, b[11] == 0xff {
            source.host = .ipv4(Array(b[12...]))
        }
        let packet = ShadowsocksUDP.seal(
            ShadowsocksDatagram(endpoint: source, payload: Array(envelope.data.readableBytesView)),
            direction: .serverToClient, credential: credential,
            sessionID: entry.serverSessionID, packetID: entry.serverPacketID, clientSessionID: entry.clientSessionID,
            now: unixNow(), subkeyCache: &subkeys)
        entry.serverPacketID += 1
        context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: entry.clientAddress, data: ByteBuffer(bytes: packet))), promise: nil)
    }
}

/// Passes each datagram received on an outbound socket to a closure.
final class ReplyHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let onReply: (AddressedEnvelope<ByteBuffer>) -> Void
    init(_ onReply: @escaping (AddressedEnvelope<ByteBuffer>) -> Void) { self.onReply = onReply }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { onReply(unwrapInboundIn(data)) }
}

