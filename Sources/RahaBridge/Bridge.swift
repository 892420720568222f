import Logging
import NIOCore
import NIOPosix
import RahaTransport
import RahaWire

/// A running bridge: one listener per access key, TCP and UDP on the same
/// port, all sharing one exit policy.
public final class Bridge: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var listeners: [ShadowsocksKey]
        public var policy: ExitPolicy
        /// Idle connections close after this long; connections that failed
        /// authentication close after exactly the same time.
        public var idleTimeout: TimeAmount
        public var udpTimeout: TimeAmount

        public init(listeners: [ShadowsocksKey], policy: ExitPolicy = ExitPolicy(), idleTimeout: TimeAmount = .seconds(300), udpTimeout: TimeAmount = .seconds(120)) {
            self.listeners = listeners
            self.policy = policy
            self.idleTimeout = idleTimeout
            self.udpTimeout = udpTimeout
        }
    }

    public let configuration: Configuration
    private let group: EventLoopGroup
    private let threadPool: NIOThreadPool
    private let logger: Logger
    private var channels: [Channel] = []

    public init(configuration: Configuration, group: EventLoopGroup, threadPool: NIOThreadPool, logger: Logger) {
        self.configuration = configuration
        self.group = group
        self.threadPool = threadPool
        self.logger = logger
    }

    /// The addresses actually bound, in listener order (TCP), once started.
    public private(set) var boundAddresses: [SocketAddress] = []

    public func start() async throws {
        let exit = Exit(policy: configuration.policy, threadPool: threadPool)
        for key in configuration.listeners {
            let credential = try ShadowsocksCredential(method: key.method, password: key.password)
            let replay = SharedReplayFilter()
            let idle = configuration.idleTimeout
            let logger = self.logger
            let tcp = try await ServerBootstrap.rahaListener(group: group)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers([
                            IdleStateHandler(allTimeout: idle),
                            IdleCloser(),
                            ShadowsocksServerCodec(credential: credential, replayFilter: replay, logger: logger),
                            BridgeExitHandler(exit: exit, logger: logger),
                        ])
                    }
                }
                .bind(host: key.server.hostText, port: Int(key.server.port)).get()
            channels.append(tcp)
            let bound = tcp.localAddress!
            boundAddresses.append(bound)
            let udp = try await ShadowsocksUDPRelay.bind(
                at: bound, credential: credential, replayFilter: replay, exit: exit,
                sessionTimeout: configuration.udpTimeout, group: group, logger: logger)
            channels.append(udp)
        }
    }

    public func close() async {
        for channel in channels { try? await channel.close() }
        channels = []
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
