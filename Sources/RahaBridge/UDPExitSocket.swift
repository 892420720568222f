import NIOCore
import NIOPosix
import RahaTransport
import RahaWire

/// The bridge's side of one client's UDP session (a Shadowsocks NAT entry,
/// a Trojan UDP connection): one outbound UDP socket, opened on the first
/// datagram, that sends each datagram to its destination through the exit
/// policy and hands every reply to `onReply` with the address it came from.
///
/// Names are resolved at the bridge, once per destination per session (the
/// answers are cached, at most `maxCached` of them). A datagram waits only
/// while the socket opens or its destination resolves, and at most
/// `maxQueued` wait; a destination the policy refuses, or a name that does
/// not resolve, loses its datagrams, like any UDP loss. When the socket is
/// not writable, datagrams are dropped rather than queued. In a relay chain
/// (`Exit.onward`) the datagrams go on through the onward key's UDP
/// association instead, names unresolved. Lives on one event loop;
/// `close()` ends it.
final class UDPExitSocket {
    static let maxQueued = 64
    static let maxCached = 256

    private let exit: Exit
    private let eventLoop: EventLoop
    // Let go of on close: they usually hold the session that holds this socket.
    private var onReply: ((Endpoint, ByteBuffer) -> Void)?
    private var onRefused: ((Exit.ExitError) -> Void)?
    private var opening: EventLoopFuture<Channel>?
    private var channel: Channel?
    private var queued: [(target: Endpoint, payload: ByteBuffer)] = []
    private var resolving: Set<Endpoint> = []
    private var resolved: [Endpoint: SocketAddress] = [:]
    private var refused: Set<Endpoint> = []
    private var closed = false
    /// A relay chain's association onward, once open (or while opening).
    private var onward: PacketAssociation?
    private var associating = false

    /// `onRefused` is told, once per destination, why its datagrams go
    /// nowhere (for a log line: it carries no address).
    init(exit: Exit, eventLoop: EventLoop, onReply: @escaping (Endpoint, ByteBuffer) -> Void,
         onRefused: @escaping (Exit.ExitError) -> Void = { _ in }) {
        self.exit = exit
        self.eventLoop = eventLoop
        self.onReply = onReply
        self.onRefused = onRefused
    }

    func send(_ payload: ByteBuffer, to target: Endpoint) {
        eventLoop.preconditionInEventLoop()
        guard !closed, !refused.contains(target) else { return }
        if let dialer = exit.onward {
            sendOnward(payload, to: target, through: dialer)
            return
        }
        if let channel, let address = resolved[target] {
            write(payload, to: address, on: channel)
            return
        }
        guard queued.count < Self.maxQueued else { return }
        queued.append((target, payload))
        // Either may complete at once (an address literal; a bind on this
        // loop), so the datagram is queued and its resolution under way first.
        if resolved[target] == nil, resolving.insert(target).inserted {
            let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
            exit.resolve(target, on: eventLoop).hop(to: eventLoop).whenComplete { result in
                loopBound.value.resolvedOne(target, result)
            }
        }
        openIfNeeded()
    }

    func close() {
        closed = true
        queued = []
        onward?.close()
        onward = nil
        onReply = nil
        onRefused = nil
        channel?.close(promise: nil)
        channel = nil
        opening?.whenSuccess { $0.close(promise: nil) }
        opening = nil
    }

    private func write(_ payload: ByteBuffer, to address: SocketAddress, on channel: Channel) {
        guard channel.isWritable else { return }
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: payload), promise: nil)
    }

    private func resolvedOne(_ target: Endpoint, _ result: Result<[SocketAddress], Error>) {
        resolving.remove(target)
        guard !closed else { return }
        let addresses = (try? result.get()) ?? []
        guard let address = addresses.first(where: { exit.policy.allows($0) }) else {
            queued.removeAll { $0.target == target }
            if addresses.isEmpty {
                onRefused?(.unresolvable)
            } else {
                if refused.count >= Self.maxCached { refused.removeAll() }
                refused.insert(target)
                onRefused?(.refusedByPolicy)
            }
            return
        }
        if resolved.count >= Self.maxCached { resolved.removeAll() }
        resolved[target] = address
        if let channel { flush(on: channel) }
    }

    /// Sends every waiting datagram whose destination has resolved.
    private func flush(on channel: Channel) {
        var waiting: [(target: Endpoint, payload: ByteBuffer)] = []
        for datagram in queued {
            if let address = resolved[datagram.target] {
                write(datagram.payload, to: address, on: channel)
            } else if resolving.contains(datagram.target) {
                waiting.append(datagram)
            }
        }
        queued = waiting
    }

    private func openIfNeeded() {
        guard channel == nil, opening == nil else { return }
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        let bootstrap = DatagramBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ReplyHandler { envelope in loopBound.value.reply(envelope) })
                }
            }
        // Dual-stack, or IPv4 on a host without IPv6.
        let future = bootstrap.bind(host: "::", port: 0).flatMapError { _ in bootstrap.bind(host: "0.0.0.0", port: 0) }
        opening = future
        future.hop(to: eventLoop).whenComplete { result in
            let socket = loopBound.value
            socket.opening = nil
            switch result {
            case .success(let channel) where socket.closed:
                channel.close(promise: nil)
            case .success(let channel):
                socket.channel = channel
                socket.flush(on: channel)
            case .failure:
                socket.queued = [] // lost; the next datagram tries again
            }
        }
    }

    /// A relay chain: the datagram goes on through the onward key (address
    /// literals still meet this bridge's policy; names go on unresolved).
    private func sendOnward(_ payload: ByteBuffer, to target: Endpoint, through dialer: StreamDialer) {
        if exit.refusesOnward(target) {
            onRefused?(.refusedByPolicy)
            return
        }
        if let onward {
            onward.send(payload, to: target)
            return
        }
        guard queued.count < Self.maxQueued else { return }
        queued.append((target, payload))
        guard !associating else { return }
        associating = true
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        let eventLoop = self.eventLoop
        dialer.associate(on: eventLoop) { source, payload in
            eventLoop.execute {
                let socket = loopBound.value
                guard !socket.closed else { return }
                socket.onReply?(source, payload)
            }
        }.hop(to: eventLoop).whenComplete { result in
            let socket = loopBound.value
            socket.associating = false
            switch result {
            case .success(let association) where socket.closed:
                association.close()
            case .success(let association):
                socket.onward = association
                for datagram in socket.queued { association.send(datagram.payload, to: datagram.target) }
                socket.queued = []
            case .failure:
                socket.queued = [] // lost; the next datagram tries again
            }
        }
    }

    private func reply(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard !closed else { return }
        onReply?(Endpoint(replySource: envelope.remoteAddress), envelope.data)
    }
}

/// What a UDP session at the bridge sends through: a `UDPExitSocket`, or a stand-in in tests.
protocol DatagramExit: AnyObject {
    func send(_ payload: ByteBuffer, to target: Endpoint)
    func close()
}

extension UDPExitSocket: DatagramExit {}

extension Endpoint {
    /// Where a reply came from, as the client should be told it: an IPv4
    /// peer reached through a dual-stack socket (`::ffff:a.b.c.d`) as plain IPv4.
    init(replySource address: SocketAddress) {
        var source = Endpoint(host: .domain("0"), port: UInt16(address.port ?? 0))
        if let ip = address.ipAddress, let parsed = try? Endpoint(parsing: ip[...], defaultPort: source.port) {
            source = parsed
        }
        if case .ipv6(let b) = source.host, b[0..<10].allSatisfy({ $0 == 0 }), b[10] == 0xff, b[11] == 0xff {
            source.host = .ipv4(Array(b[12...]))
        }
        self = source
    }
}

/// Passes each datagram received on an outbound socket to a closure.
final class ReplyHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let onReply: (AddressedEnvelope<ByteBuffer>) -> Void
    init(_ onReply: @escaping (AddressedEnvelope<ByteBuffer>) -> Void) { self.onReply = onReply }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { onReply(unwrapInboundIn(data)) }
}
