import Logging
import NIOCore
import NIOPosix
import NIOSSL
import RahaTransport
import RahaWire

/// A Trojan listener: where and how to listen (the key's address,
/// password, TLS and WebSocket settings), the TLS identity, and the web site
/// that everything else is handed to.
public struct TrojanListener: Sendable {
    public var key: TrojanKey
    /// Required when the key says TLS.
    public var identity: TLSIdentity?
    /// The fallback web site; nil means the bridge's own static site.
    public var fallback: SocketAddress?

    public init(key: TrojanKey, identity: TLSIdentity?, fallback: SocketAddress? = nil) {
        self.key = key
        self.identity = identity
        self.fallback = fallback
    }
}

/// A running bridge: one listener per access key (Shadowsocks on TCP and
/// UDP on the same port; Trojan on TCP, carrying UDP inside its
/// connections), all sharing one exit policy.
public final class Bridge: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var listeners: [ShadowsocksKey]
        public var trojanListeners: [TrojanListener]
        public var dnsListeners: [DNSTunnelListener]
        public var policy: ExitPolicy
        /// Connections with no bytes either way for this long are closed.
        public var idleTimeout: TimeAmount
        public var udpTimeout: TimeAmount
        /// A connection that has not authenticated is closed this long after
        /// it was accepted, like a failed login (see `PendingHandshakes`).
        public var handshakeTimeout: TimeAmount
        /// Connections one source (IPv4 address, IPv6 /64) may hold before
        /// they authenticate; a newer one closes the oldest.
        public var pendingPerSource: Int
        /// A share node's circle: when set, the Shadowsocks and Trojan
        /// listeners accept the circle's invitees (not their keys' own
        /// passwords) and meter, pace and cut them off as it says.
        public var share: ShareLedger?
        /// A share node behind NAT: every Shadowsocks and Trojan listener is
        /// also reached through this rendezvous bridge (its Trojan key), on
        /// the same port number there.
        public var rendezvousLink: TrojanKey?
        /// A rendezvous: public ports that share nodes may ask this
        /// bridge's Trojan listeners to open for them.
        public var rendezvous: RendezvousTable?
        /// A relay chain: streams leave through this dialer (another access key) instead of directly.
        public var onward: StreamDialer?

        public init(listeners: [ShadowsocksKey], trojanListeners: [TrojanListener] = [], dnsListeners: [DNSTunnelListener] = [],
                    policy: ExitPolicy = ExitPolicy(), idleTimeout: TimeAmount = .seconds(300), udpTimeout: TimeAmount = .seconds(120),
                    handshakeTimeout: TimeAmount = .seconds(60), pendingPerSource: Int = 64,
                    share: ShareLedger? = nil, rendezvousLink: TrojanKey? = nil, rendezvous: RendezvousTable? = nil, onward: StreamDialer? = nil) {
            self.share = share
            self.onward = onward
            self.rendezvousLink = rendezvousLink
            self.rendezvous = rendezvous
            self.listeners = listeners
            self.trojanListeners = trojanListeners
            self.dnsListeners = dnsListeners
            self.policy = policy
            self.idleTimeout = idleTimeout
            self.udpTimeout = udpTimeout
            self.handshakeTimeout = handshakeTimeout
            self.pendingPerSource = pendingPerSource
        }
    }

    public let configuration: Configuration
    private let group: EventLoopGroup
    private let threadPool: NIOThreadPool
    private let logger: Logger
    private var channels: [Channel] = []
    private var dnsServers: [DNSTunnelServer] = []
    private var links: [RendezvousLink] = []
    /// Every TCP listener's connections before they authenticate.
    private let pending: PendingHandshakes

    public init(configuration: Configuration, group: EventLoopGroup, threadPool: NIOThreadPool, logger: Logger) {
        self.configuration = configuration
        self.group = group
        self.threadPool = threadPool
        self.logger = logger
        self.pending = PendingHandshakes(deadline: configuration.handshakeTimeout, perSource: configuration.pendingPerSource)
    }

    /// The addresses actually bound, in listener order (TCP), once started.
    public private(set) var boundAddresses: [SocketAddress] = []
    /// The same for the Trojan listeners.
    public private(set) var trojanBoundAddresses: [SocketAddress] = []
    /// The same for the DNS tunnel listeners (UDP and TCP on each).
    public private(set) var dnsBoundAddresses: [SocketAddress] = []

    public func start() async throws {
        let exit = Exit(policy: configuration.policy, threadPool: threadPool, onward: configuration.onward)
        let ledger = configuration.share
        for key in configuration.listeners {
            let roster = try ledger?.roster ?? ClientRoster(shadowsocks: ShadowsocksCredential(method: key.method, password: key.password))
            let replay = SharedReplayFilter()
            let idle = configuration.idleTimeout
            let logger = self.logger, pending = self.pending
            let setup: ConnectionSetup = { channel in
                let sync = channel.pipeline.syncOperations
                let handshake = try Self.addTimeouts(to: sync, pending: pending, idle: idle)
                let share = try ledger.map { try ShareSlot.installed(for: $0, in: sync) }
                try sync.addHandlers([
                    ShadowsocksServerCodec(roster: roster, replayFilter: replay, logger: logger),
                    handshake.makeWatcher(),
                    BridgeExitHandler(exit: exit, logger: logger, share: share),
                ])
            }
            let sessionTimeout = configuration.udpTimeout
            // Datagrams a rendezvous carries to this listener meet the same relay as those on its own port.
            let datagramSetup: ConnectionSetup = { channel in
                try channel.pipeline.syncOperations.addHandlers([
                    RendezvousDatagramFraming(),
                    ShadowsocksUDPRelay(roster: roster, share: ledger, replayFilter: replay, exit: exit, sessionTimeout: sessionTimeout, logger: logger),
                ])
            }
            let tcp = try await listen(at: key.server, setup, datagramSetup: datagramSetup)
            let bound = tcp.localAddress!
            boundAddresses.append(bound)
            let udp = try await ShadowsocksUDPRelay.bind(
                at: bound, roster: roster, share: ledger, replayFilter: replay, exit: exit,
                sessionTimeout: configuration.udpTimeout, group: group, logger: logger)
            channels.append(udp)
        }
        var staticSite: SocketAddress?
        for listener in configuration.trojanListeners {
            let fallbackAddress: SocketAddress
            if let address = listener.fallback {
                fallbackAddress = address
            } else if let staticSite {
                fallbackAddress = staticSite
            } else {
                let site = try await StaticSite.start(group: group)
                channels.append(site)
                fallbackAddress = site.localAddress!
                staticSite = fallbackAddress
            }
            let channel = try await listen(at: listener.key.server, try trojanSetup(listener, fallback: fallbackAddress, exit: exit))
            trojanBoundAddresses.append(channel.localAddress!)
        }
        for listener in configuration.dnsListeners {
            let server = DNSTunnelServer(listener: listener, eventLoop: group.next(), exit: exit, share: ledger, logger: logger)
            dnsServers.append(server)
            dnsBoundAddresses.append(try await server.start(group: group))
        }
    }

    /// Sets up one connection to a listener: a socket it accepted, or a
    /// stream a rendezvous carried to it. Runs on the channel's event loop.
    typealias ConnectionSetup = @Sendable (Channel) throws -> Void

    /// What every listener's connection starts with: the handshake deadline
    /// and limit per source, then the idle timeout. The guard's watcher goes
    /// after the listener's server codec.
    private static func addTimeouts(to sync: ChannelPipeline.SynchronousOperations, pending: PendingHandshakes,
                                    idle: TimeAmount) throws -> HandshakeGuard {
        let handshake = HandshakeGuard(pending: pending)
        try sync.addHandlers([handshake, IdleStateHandler(allTimeout: idle), IdleCloser()])
        return handshake
    }

    /// Listens at `endpoint` with `setup` for every connection, and, on a
    /// share node behind NAT, keeps a link to the rendezvous for the same port.
    private func listen(at endpoint: Endpoint, _ setup: @escaping ConnectionSetup, datagramSetup: ConnectionSetup? = nil) async throws -> Channel {
        let channel = try await ServerBootstrap.rahaListener(group: group)
            .childChannelInitializer { channel in channel.eventLoop.makeCompletedFuture { try setup(channel) } }
            .bind(host: endpoint.hostText, port: Int(endpoint.port)).get()
        channels.append(channel)
        if let key = configuration.rendezvousLink, let port = channel.localAddress?.port {
            let link = try RendezvousLink(key: key, port: UInt16(port), setup: setup, datagramSetup: datagramSetup, eventLoop: group.next(), logger: logger)
            links.append(link)
            link.start()
        }
        return channel
    }

    private func trojanSetup(_ listener: TrojanListener, fallback: SocketAddress, exit: Exit) throws -> ConnectionSetup {
        let key = listener.key
        var tls: NIOSSLContext?
        if key.tls {
            guard let identity = listener.identity else { throw TLSIdentity.LoadError(description: "the Trojan listener on \(key.server) needs a certificate") }
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: identity.chain.map { .certificate($0) }, privateKey: .privateKey(identity.privateKey))
            configuration.minimumTLSVersion = .tlsv12
            // Browsers get HTTP/1.1 from the fallback site, as from any such site.
            configuration.applicationProtocols = ["http/1.1"]
            tls = try NIOSSLContext(configuration: configuration)
        }
        let ledger = configuration.share
        let roster = ledger?.roster ?? ClientRoster(trojanPasswords: [key.password])
        let idle = configuration.idleTimeout, udpTimeout = configuration.udpTimeout
        let logger = self.logger, pending = self.pending
        let site: FallbackDialer = { eventLoop in
            ClientBootstrap.rahaStream(group: eventLoop, connectTimeout: .seconds(5)).connect(to: fallback)
        }
        // Upgrade keys are remembered for a day (at least, while under 200,000 newer):
        // the GFW replayed recorded connections from seconds to hours later.
        let upgradeKeys = SharedReplayFilter(capacity: 200_000, retention: 86_400)
        let rendezvous = configuration.rendezvous, tlsContext = tls
        return { channel in
            let sync = channel.pipeline.syncOperations
            let handshake = try Self.addTimeouts(to: sync, pending: pending, idle: idle)
            let share = try ledger.map { try ShareSlot.installed(for: $0, in: sync) }
            if let tlsContext {
                try sync.addHandlers([TLSRecordSniffer(fallback: site), NIOSSLServerHandler(context: tlsContext)])
            }
            if case .webSocket(let path, _) = key.transport {
                try sync.addHandler(WebSocketServerHandler(path: path, fallback: site, upgradeKeys: upgradeKeys))
            }
            try sync.addHandlers([
                TrojanServerCodec(roster: roster, fallback: site),
                handshake.makeWatcher(),
                BridgeExitHandler(exit: exit, logger: logger, udpTimeout: udpTimeout, share: share, rendezvous: rendezvous),
            ])
        }
    }

    public func close() async {
        for link in links { link.stop() }
        links = []
        configuration.rendezvous?.close()
        for channel in channels { try? await channel.close() }
        channels = []
        for server in dnsServers { await server.close() }
        dnsServers = []
    }
}

/// Closes a connection when its IdleStateHandler says it has been idle.
final class IdleCloser: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
