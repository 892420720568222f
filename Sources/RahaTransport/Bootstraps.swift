import NIOCore
import NIOPosix

extension ServerBootstrap {
    /// The options every Raha stream listener uses: a deep accept queue,
    /// quick restarts, half-closure passed through, no Nagle delay.
    public static func rahaListener(group: EventLoopGroup) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
    }
}

extension ClientBootstrap {
    /// The options every outgoing Raha stream uses (see `ServerBootstrap.rahaListener`).
    public static func rahaStream(group: EventLoopGroup, connectTimeout: TimeAmount) -> ClientBootstrap {
        ClientBootstrap(group: group)
            .connectTimeout(connectTimeout)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
    }
}
