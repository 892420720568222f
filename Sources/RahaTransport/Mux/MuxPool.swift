import NIOConcurrencyHelpers
import NIOCore
import RahaWire

/// What a bridge-side codec fires instead of a `ProxyRequestEvent` when an
/// authenticated client asks for a multiplexed connection: the handler after
/// it should become a server `MuxHandler`, which then asks for each stream.
public struct MuxRequestEvent: Sendable {
    public init() {}
}

/// The client's multiplexed connections: one per event loop, shared by
/// every stream opened on that loop (the glue needs both of a stream's
/// channels on one loop). A new connection is opened when there is none,
/// when it closed, or when it takes no more streams (its stream count or
/// age reached, or the bridge said go away).
public final class MuxPool: Sendable {
    /// Opens one connection whose plaintext carries the mux (for Trojan: a
    /// TLS connection whose request names `Trojan.muxDestination`).
    public typealias Connect = @Sendable (EventLoop) -> EventLoopFuture<Channel>

    private let connect: Connect
    private let configuration: MuxHandler.Configuration
    private struct Entry {
        let opening: EventLoopFuture<Channel>
        var channel: Channel?
    }
    private let connections = NIOLockedValueBox([ObjectIdentifier: Entry]())

    public init(configuration: MuxHandler.Configuration = .init(), connect: @escaping Connect) {
        self.configuration = configuration
        self.connect = connect
    }

    public func openStream(to target: Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<Channel> {
        connection(on: eventLoop).flatMap { connection in
            if let stream = Self.mux(of: connection)?.openStream(to: target) { return stream }
            // Full or draining: replace it (once) and open on the new one.
            self.forget(connection, on: eventLoop)
            return self.connection(on: eventLoop).flatMap { fresh in
                Self.mux(of: fresh)?.openStream(to: target)
                    ?? eventLoop.makeFailedFuture(MuxError(.connectionClosed, "the bridge took no stream on a fresh connection"))
            }
        }
    }

    private static func mux(of connection: Channel) -> MuxHandler? {
        guard connection.isActive else { return nil }
        return try? connection.pipeline.syncOperations.handler(type: MuxHandler.self)
    }

    /// The loop's current connection, opened if there is none.
    private func connection(on eventLoop: EventLoop) -> EventLoopFuture<Channel> {
        let key = ObjectIdentifier(eventLoop)
        let (future, isNew) = connections.withLockedValue { table -> (EventLoopFuture<Channel>, Bool) in
            if let existing = table[key] { return (existing.opening, false) }
            let configuration = Self.varied(self.configuration)
            let opening = connect(eventLoop).flatMapThrowing { channel in
                let mux = MuxHandler(role: .client, configuration: configuration)
                // One connection's bridge not answering means the path to it is cut: the
                // other loops' connections go the same way, so they are dropped at once
                // rather than each left to time out a stream of its own.
                mux.onAnswerTimeout = { [weak self] in self?.dropAll() }
                try channel.pipeline.syncOperations.addHandler(mux)
                return channel
            }
            table[key] = Entry(opening: opening)
            return (opening, true)
        }
        guard isNew else { return future }
        future.whenComplete { result in
            self.connections.withLockedValue { table in
                guard table[key]?.opening === future else { return }
                switch result {
                case .success(let channel): table[key]?.channel = channel
                case .failure: table[key] = nil  // nothing cached for a connection that never came up
                }
            }
            if case .success(let channel) = result {
                channel.closeFuture.whenComplete { _ in self.forget(channel, on: eventLoop) }
            }
        }
        return future
    }

    /// Each connection's limits drawn between half and one and a half times
    /// the configured ones, so that connection lifetimes and stream counts
    /// have no fixed value for an observer to learn.
    static func varied(_ configuration: MuxHandler.Configuration) -> MuxHandler.Configuration {
        var varied = configuration
        let streams = configuration.session.maxStreamsPerConnection
        varied.session.maxStreamsPerConnection = max(1, Int.random(in: (streams / 2)...(streams + streams / 2)))
        if let age = configuration.maxAge {
            varied.maxAge = .nanoseconds(Int64.random(in: (age.nanoseconds / 2)...(age.nanoseconds + age.nanoseconds / 2)))
        }
        return varied
    }

    /// Closes and forgets every open connection, so that the next stream opens a new one.
    private func dropAll() {
        let dropped = connections.withLockedValue { table -> [Channel] in
            let open = table.filter { $0.value.channel != nil }
            for key in open.keys { table[key] = nil }
            return open.values.compactMap(\.channel)
        }
        for channel in dropped { channel.close(promise: nil) }
    }

    /// Drops the loop's connection if it is still `channel`.
    private func forget(_ channel: Channel, on eventLoop: EventLoop) {
        let key = ObjectIdentifier(eventLoop)
        connections.withLockedValue { table in
            if let cached = table[key]?.channel, cached === channel { table[key] = nil }
        }
    }
}
