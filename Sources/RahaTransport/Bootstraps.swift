import NIOCore
import NIOPosix
import RahaWire

extension ServerBootstrap {
    /// The options every Raha stream listener uses: a deep accept queue,
    /// quick restarts, half-closure passed through, no Nagle delay; and the
    /// process's `ConnectionGate`, so that it never accepts more than its
    /// descriptors can carry.
    public static func rahaListener(group: EventLoopGroup, gate: ConnectionGate = .process) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ConnectionGateHandler(gate: gate))
                }
            }
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

/// The bridge a dialer connects to: its address is parsed once when the key
/// names it by IP, so connections to it need no lookup; a name is resolved
/// per connection.
struct BridgeAddress: Sendable {
    let endpoint: Endpoint
    private let literal: SocketAddress?

    init(_ endpoint: Endpoint) {
        self.endpoint = endpoint
        self.literal = try? SocketAddress(ipAddress: endpoint.hostText, port: Int(endpoint.port))
    }

    func connect(with bootstrap: ClientBootstrap) -> EventLoopFuture<Channel> {
        if let literal { return bootstrap.connect(to: literal) }
        return bootstrap.connect(host: endpoint.hostText, port: Int(endpoint.port))
    }

    /// The socket address (a blocking lookup for a name).
    func resolved() throws -> SocketAddress {
        try literal ?? SocketAddress.makeAddressResolvingHost(endpoint.hostText, port: Int(endpoint.port))
    }
}
