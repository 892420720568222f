import NIOCore
import NIOPosix
import RahaWire

/// Connects straight to the destination, no bridge: for destinations that
/// routing rules send `direct`. A name is resolved locally by NIO's
/// resolver (getaddrinfo off the event loop, then Happy Eyeballs), so only
/// use it for destinations whose names may be seen by the local resolver.
public struct DirectDialer: StreamDialer {
    public let connectTimeout: TimeAmount

    public init(connectTimeout: TimeAmount = .seconds(10)) {
        self.connectTimeout = connectTimeout
    }

    public var label: String { "direct" }

    public func dial(_ target: Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<Channel> {
        let bootstrap = ClientBootstrap.rahaStream(group: eventLoop, connectTimeout: connectTimeout)
        if let literal = try? SocketAddress(ipAddress: target.hostText, port: Int(target.port)) {
            return bootstrap.connect(to: literal)
        }
        return bootstrap.connect(host: target.hostText, port: Int(target.port))
    }

    /// UDP is not routed directly yet.
    public func associate(on eventLoop: EventLoop, receive: @escaping @Sendable (Endpoint, ByteBuffer) -> Void) -> EventLoopFuture<PacketAssociation> {
        eventLoop.makeFailedFuture(WireError.unsupported("direct UDP is not supported: UDP goes through the tunnel"))
    }
}
