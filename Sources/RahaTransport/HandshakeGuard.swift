import NIOConcurrencyHelpers
import NIOCore

/// Keeps strangers from holding a bridge's connections: a connection that has
/// not authenticated is closed `deadline` after it was accepted, and one source
/// (an IPv4 address, an IPv6 /64) holds at most `perSource` such connections at
/// once; a newer one closes its oldest.
///
/// Both closes are the one a failed login gets: a bridge reads and discards a
/// stranger's bytes, never answers, and closes (FIN) at the same deadline, so a
/// prober cannot tell a slow handshake, a wrong password, garbage and a limit
/// apart. (Outline closes failed logins at a deadline from the start in the same
/// way; nginx gives a request's header 60 s, which is this deadline's default.)
/// A connection handed to the fallback site is timed by the site from then on,
/// as any visitor's, but keeps its place in its source's count until it closes.
public final class PendingHandshakes: Sendable {
    public let deadline: TimeAmount
    public let perSource: Int
    private let table = NIOLockedValueBox(Table())

    /// Where connections come from, as far as a limit per source is concerned.
    enum Source: Hashable {
        case v4(UInt32)
        case v6Prefix(UInt64)

        init?(_ address: SocketAddress?) {
            guard let address else { return nil }
            switch address {
            case .v4(let v4):
                self = .v4(UInt32(bigEndian: v4.address.sin_addr.s_addr))
            case .v6(let v6):
                let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
                if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
                    self = .v4(bytes[12..<16].reduce(0) { $0 << 8 | UInt32($1) })
                } else {
                    self = .v6Prefix(bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) })
                }
            case .unixDomainSocket:
                return nil
            }
        }
    }

    private struct Table {
        var nextTicket = 0
        /// Each source's connections not yet authenticated, oldest first.
        var bySource: [Source: [(ticket: Int, channel: Channel)]] = [:]
    }

    /// One connection's place in its source's count.
    struct Place {
        let source: Source
        let ticket: Int
    }

    public init(deadline: TimeAmount = .seconds(60), perSource: Int = 64) {
        precondition(perSource > 0, "at least one connection per source")
        self.deadline = deadline
        self.perSource = perSource
    }

    /// Counts `channel` against its source; closes that source's oldest
    /// connections beyond the limit. Nil when the channel has no IP source
    /// (a stream carried by a rendezvous link).
    func admit(_ channel: Channel) -> Place? {
        guard let source = Source(channel.remoteAddress) else { return nil }
        let (place, evicted) = table.withLockedValue { table -> (Place, [Channel]) in
            let ticket = table.nextTicket
            table.nextTicket += 1
            var entries = table.bySource[source, default: []]
            entries.append((ticket, channel))
            let excess = max(0, entries.count - perSource)
            let evicted = entries.prefix(excess).map(\.channel)
            entries.removeFirst(excess)
            table.bySource[source] = entries
            return (Place(source: source, ticket: ticket), evicted)
        }
        for channel in evicted { channel.close(promise: nil) }
        return place
    }

    func release(_ place: Place) {
        table.withLockedValue { table in
            guard var entries = table.bySource[place.source] else { return }
            entries.removeAll { $0.ticket == place.ticket }
            table.bySource[place.source] = entries.isEmpty ? nil : entries
        }
    }

    /// Connections counted now, for tests and logs.
    public var pendingCount: Int { table.withLockedValue { $0.bySource.values.reduce(0) { $0 + $1.count } } }
}

/// Sent up a bridge connection's pipeline when its bytes are handed to the
/// fallback site: from then on the site decides how long it stays.
public struct HandedToFallbackEvent: Sendable {
    public init() {}
}

/// Enforces `PendingHandshakes` on one connection until it authenticates.
/// It goes first in the pipeline, so that its close is the socket's own (a
/// FIN, with no TLS close_notify: nginx closes a timed-out handshake or
/// header the same way); its watcher (`makeWatcher`) goes after the listener's server
/// codec, to see the `ClientAuthenticatedEvent` or `HandedToFallbackEvent`.
public final class HandshakeGuard: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = NIOAny

    private let pending: PendingHandshakes
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?
    private var place: PendingHandshakes.Place?
    private var started = false

    public init(pending: PendingHandshakes) { self.pending = pending }

    /// The half that goes after the server codec.
    public func makeWatcher() -> any ChannelInboundHandler & RemovableChannelHandler { Watcher(guard: self) }

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { start(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        if let place { pending.release(place) }
        place = nil
        self.context = nil
    }

    private func start(context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: pending.deadline) { loopBound.value.close(promise: nil) }
        place = pending.admit(context.channel)
    }

    private func authenticated() {
        guard let context else { return }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private func handedToFallback() {
        timer?.cancel()
        timer = nil
    }

    private final class Watcher: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = NIOAny
        private let handshake: HandshakeGuard

        init(guard handshake: HandshakeGuard) { self.handshake = handshake }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            context.fireUserInboundEventTriggered(event)
            switch event {
            case is ClientAuthenticatedEvent:
                handshake.authenticated()
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            case is HandedToFallbackEvent:
                handshake.handedToFallback()
            default:
                break
            }
        }
    }
}
