import Logging
import NIOCore
import RahaTransport
import RahaWire

/// Refused by a `block` routing rule. The fronts answer it with SOCKS5
/// reply 0x02 (connection not allowed by ruleset) and HTTP 403.
public struct RouteBlocked: Error, Hashable, Sendable, CustomStringConvertible {
    /// The rule's line in its rule set.
    public var line: Int
    public var description: String { "a routing rule (line \(line)) blocks this destination" }
}

/// Sends each stream direct, through the tunnel, or nowhere, as `rules` say.
///
/// UDP associations always go through the tunnel: UDP is not split yet
/// (a SOCKS5 association carries datagrams to many destinations, and
/// routing them one by one is future work).
public struct RoutingDialer: StreamDialer {
    public let rules: RoutingRules
    public let tunnel: StreamDialer
    public let direct: StreamDialer
    private let logger: Logger

    public init(rules: RoutingRules, tunnel: StreamDialer, direct: StreamDialer = DirectDialer(), logger: Logger) {
        self.rules = rules
        self.tunnel = tunnel
        self.direct = direct
        self.logger = logger
    }

    public var label: String { tunnel.label }

    public func dial(_ target: Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<Channel> {
        let decision = rules.route(target.host)
        if let line = decision.line {
            // The action and the rule's line only: never the destination.
            logger.debug("\(decision.action.rawValue) by rule \(line)")
        }
        switch decision.action {
        case .proxy: return tunnel.dial(target, on: eventLoop)
        case .direct: return direct.dial(target, on: eventLoop)
        case .block: return eventLoop.makeFailedFuture(RouteBlocked(line: decision.line ?? 0))
        }
    }

    public func associate(on eventLoop: EventLoop, receive: @escaping @Sendable (Endpoint, ByteBuffer) -> Void) -> EventLoopFuture<PacketAssociation> {
        tunnel.associate(on: eventLoop, receive: receive)
    }
}

/// The HTTP proxy's answer when a stream to the destination cannot be opened:
/// 403 when a rule blocks it, else 502 (saying so when no transport gets through).
func httpDialFailureResponse(_ error: Error) -> ByteBuffer {
    if let blocked = error as? RouteBlocked {
        return HTTPProxy.errorResponse(status: 403, reason: "Forbidden", message: "\(blocked) (raha connect --rules)")
    }
    if let none = error as? NoTransportError {
        return HTTPProxy.errorResponse(status: 502, reason: "Bad Gateway", message: none.description)
    }
    return HTTPProxy.errorResponse(status: 502, reason: "Bad Gateway", message: "the proxy could not open a stream to the destination")
}
