import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RahaTransport
import RahaWire

/// The public side of a rendezvous (`raha bridge --rendezvous PORTS`): share
/// nodes that cannot accept connections register a public port over their
/// link (see `Rendezvous`); while a link is up, its port is open, and each
/// connection arriving there is spliced, bytes untouched, into a new stream
/// over the link, on the address the link came in at. A newer link for a
/// port replaces the older one (a share node that reconnected).
public final class RendezvousTable: @unchecked Sendable {
    private struct Registration {
        let link: Channel
        var listener: Channel?
    }

    public let ports: [ClosedRange<UInt16>]
    private let logger: Logger
    private let lock = NIOLock()
    private var registrations: [UInt16: Registration] = [:]

    public init(ports: [ClosedRange<UInt16>], logger: Logger) {
        self.ports = ports
        self.logger = logger
    }

    func offers(_ port: UInt16) -> Bool { ports.contains { $0.contains(port) } }

    /// Opens `port` for the share node behind `link`, whose mux (client role:
    /// this side opens the streams) is `mux`. Call on the link's event loop.
    func register(port: UInt16, link: Channel, mux: MuxHandler) {
        let previous = lock.withLock { registrations.updateValue(Registration(link: link, listener: nil), forKey: port) }
        if let previous {
            // The share node came back on a new link: the old one is dead or dying.
            previous.listener?.close(promise: nil)
            previous.link.close(promise: nil)
        }
        let loopMux = NIOLoopBound(mux, eventLoop: link.eventLoop)
        let address = link.localAddress?.ipAddress ?? "0.0.0.0"
        let logger = self.logger
        // Invitee connections are accepted on the link's event loop, so each is glued to its stream on one loop.
        let bound = ServerBootstrap.rahaListener(group: link.eventLoop)
            .childChannelInitializer { invitee in
                guard let opened = loopMux.value.openStream(to: Rendezvous.destination(port: port)) else {
                    logger.debug("the share node's link takes no more streams", metadata: ["port": "\(port)"])
                    return invitee.close()
                }
                logger.debug("splicing a connection to the share node", metadata: ["port": "\(port)"])
                return opened.flatMap { stream in GlueHandler.join(invitee, stream) }
            }
            // On the address the share node reached this bridge at.
            .bind(host: address, port: Int(port))
        bound.whenComplete { [self] result in
            switch result {
            case .success(let listener):
                let current = lock.withLock { () -> Bool in
                    guard registrations[port]?.link === link else { return false }
                    registrations[port]?.listener = listener
                    return true
                }
                if current {
                    // Shadowsocks UDP too, on the same port (a node without UDP there closes the stream).
                    RendezvousDatagrams.open(port: port, address: address, mux: loopMux.value, link: link)
                    logger.info("a share node is reachable through this rendezvous", metadata: ["port": "\(port)"])
                } else {
                    listener.close(promise: nil)
                }
            case .failure(let error):
                logger.info("cannot open the port a share node asked for", metadata: ["port": "\(port)", "reason": "\(privacySafeReason(error))"])
                link.close(promise: nil)
            }
        }
        link.closeFuture.whenComplete { [self] _ in
            let listener = lock.withLock { () -> Channel? in
                guard registrations[port]?.link === link else { return nil }
                return registrations.removeValue(forKey: port)?.listener
            }
            listener?.close(promise: nil)
        }
    }

    public func close() {
        let all = lock.withLock { () -> [Registration] in
            defer { registrations = [:] }
            return Array(registrations.values)
        }
        for registration in all {
            registration.listener?.close(promise: nil)
            registration.link.close(promise: nil)
        }
    }
}

/// The share node's side: one link per public port to the rendezvous,
/// kept up for as long as the node runs (redialled after a failure, from
/// 1 s up to 60 s apart), each stream arriving over it set up exactly like a
/// connection accepted on the node's own port.
final class RendezvousLink: @unchecked Sendable {
    typealias Setup = @Sendable (Channel) throws -> Void

    private let dialer: TrojanDialer
    private let port: UInt16
    private let setup: Setup
    private let datagramSetup: Setup?
    private let eventLoop: EventLoop
    private let logger: Logger
    private let lock = NIOLock()
    private var link: Channel?
    private var stopped = false
    private var keepAlive: RepeatedTask?
    private var backoff: TimeAmount = .seconds(1)

    /// `datagramSetup`: for a listener with UDP (Shadowsocks), sets up the
    /// stream that carries the datagrams arriving at the rendezvous's port.
    init(key: TrojanKey, port: UInt16, setup: @escaping Setup, datagramSetup: Setup?, eventLoop: EventLoop, logger: Logger) throws {
        self.datagramSetup = datagramSetup
        var key = key
        key.mux = false
        self.dialer = try TrojanDialer(key: key)
        self.port = port
        self.setup = setup
        self.eventLoop = eventLoop
        self.logger = logger
    }

    func start() { dial() }

    func stop() {
        let link = lock.withLock { () -> Channel? in
            stopped = true
            keepAlive?.cancel()
            return self.link
        }
        link?.close(promise: nil)
    }

    private func dial() {
        guard !lock.withLock({ stopped }) else { return }
        let setup = self.setup, datagramSetup = self.datagramSetup, logger = self.logger, port = self.port
        dialer.dial(Rendezvous.destination(port: port), on: eventLoop).flatMapThrowing { channel -> Channel in
            let mux = MuxHandler(role: .server, configuration: .rendezvousLink) { stream in
                logger.debug("the rendezvous spliced a connection through", metadata: ["port": "\(port)"])
                return stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandler(RendezvousStreamStart(setup: setup, datagramSetup: datagramSetup))
                }
            }
            try channel.pipeline.syncOperations.addHandler(mux)
            return channel
        }.whenComplete { [self] result in
            switch result {
            case .success(let channel):
                linked(channel)
            case .failure(let error):
                logger.info("cannot reach the rendezvous; trying again", metadata: ["port": "\(port)", "reason": "\(privacySafeReason(error))", "in": "\(backoff.nanoseconds / 1_000_000_000) s"])
                retryLater()
            }
        }
    }

    private func linked(_ channel: Channel) {
        let opened = NIODeadline.now()
        let mux = try? channel.pipeline.syncOperations.handler(type: MuxHandler.self)
        let keepAliveTask = channel.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(30), delay: .seconds(30)) { _ in mux?.sendKeepAlive() }
        let closeNow = lock.withLock { () -> Bool in
            link = channel
            keepAlive = keepAliveTask
            return stopped
        }
        if closeNow { channel.close(promise: nil) }
        logger.info("linked to the rendezvous", metadata: ["port": "\(port)"])
        channel.closeFuture.whenComplete { [self] _ in
            keepAliveTask.cancel()
            lock.withLock { link = nil }
            // A link that lived a while was healthy: come back at once.
            let lived = NIODeadline.now() - opened
            if lived > .seconds(60) { backoff = .seconds(1) }
            if lived < .seconds(2) {
                logger.info("the rendezvous closed the link at once: it may not offer this port (choose ports in its range with --shadowsocks-port, --trojan-port and --web-socket-port); trying again", metadata: ["port": "\(port)"])
            } else {
                logger.info("the link to the rendezvous closed; linking again", metadata: ["port": "\(port)"])
            }
            retryLater()
        }
    }

    private func retryLater() {
        guard !lock.withLock({ stopped }) else { return }
        let delay = backoff
        backoff = min(backoff * 2, .seconds(60))
        eventLoop.scheduleTask(in: delay) { [self] in dial() }
    }
}

/// First on a stream the rendezvous opened: takes the stream's request (the
/// public port, which the link already knows) and puts the listener's
/// pipeline in its place, so the invitee's bytes meet the same codec as on
/// a direct connection.
private final class RendezvousStreamStart: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private let setup: RendezvousLink.Setup
    private let datagramSetup: RendezvousLink.Setup?

    init(setup: @escaping RendezvousLink.Setup, datagramSetup: RendezvousLink.Setup?) {
        self.setup = setup
        self.datagramSetup = datagramSetup
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let request = event as? ProxyRequestEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        let datagrams = RendezvousDatagram.port(of: request.target) != nil
        guard let chosen = datagrams ? datagramSetup : setup else {
            context.close(promise: nil) // no UDP on this port
            return
        }
        do {
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
            try chosen(context.channel)
        } catch {
            context.close(promise: nil)
        }
    }
}

/// The rendezvous's side of one port's datagrams: the UDP socket invitees
/// send to, and the stream over the link that carries them, each framed
/// with a tag for its sender's address (the share node never learns
/// addresses). Both live on the link's event loop.
final class RendezvousDatagrams {
    static let maxSenders = 4096
    private var udp: Channel?
    private var stream: Channel?
    private var tags: [SocketAddress: UInt32] = [:]
    private var senders: [UInt32: SocketAddress] = [:]
    private var nextTag: UInt32 = 1

    /// Opens the stream over `mux` and the UDP socket on `address`; either failing closes both.
    static func open(port: UInt16, address: String, mux: MuxHandler, link: Channel) {
        let datagrams = RendezvousDatagrams()
        let box = NIOLoopBound(datagrams, eventLoop: link.eventLoop)
        guard let opened = mux.openStream(to: RendezvousDatagram.destination(port: port), initializer: { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(FromLink(box.value))
            }
        }) else { return }
        opened.flatMap { stream -> EventLoopFuture<Channel> in
            box.value.stream = stream
            return DatagramBootstrap(group: link.eventLoop)
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(FromInvitees(box.value)) }
                }
                .bind(host: address, port: Int(port))
        }.whenComplete { result in
            let datagrams = box.value
            switch result {
            case .success(let udp):
                datagrams.udp = udp
                datagrams.stream?.closeFuture.whenComplete { _ in udp.close(promise: nil) }
                link.closeFuture.whenComplete { _ in udp.close(promise: nil) }
            case .failure:
                datagrams.stream?.close(promise: nil)
            }
        }
    }

    private func fromInvitee(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard let stream, stream.isWritable, envelope.data.readableBytes <= Int(UInt16.max) else { return }
        let tag: UInt32
        if let known = tags[envelope.remoteAddress] {
            tag = known
        } else {
            if tags.count >= Self.maxSenders { tags = [:]; senders = [:] }
            tag = nextTag
            nextTag &+= 1
            tags[envelope.remoteAddress] = tag
            senders[tag] = envelope.remoteAddress
        }
        var frame = stream.allocator.buffer(capacity: RendezvousDatagram.headerLength + envelope.data.readableBytes)
        RendezvousDatagram.write(tag: tag, payload: envelope.data, to: &frame)
        stream.writeAndFlush(frame, promise: nil)
    }

    private func fromLink(_ tag: UInt32, _ payload: ByteBuffer) {
        guard let udp, let address = senders[tag], udp.isWritable else { return }
        udp.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: payload), promise: nil)
    }

    private final class FromInvitees: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let datagrams: RendezvousDatagrams
        init(_ datagrams: RendezvousDatagrams) { self.datagrams = datagrams }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { datagrams.fromInvitee(unwrapInboundIn(data)) }
    }

    private final class FromLink: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let datagrams: RendezvousDatagrams
        var buffer = ByteBuffer()
        init(_ datagrams: RendezvousDatagrams) { self.datagrams = datagrams }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            buffer.writeBuffer(&bytes)
            while let (tag, payload) = RendezvousDatagram.read(from: &buffer) { datagrams.fromLink(tag, payload) }
            buffer.discardReadBytes()
        }
    }
}

/// The share node's side of one port's datagrams: frames from the link
/// become datagrams from stand-in addresses (one per tag) for the
/// listener's UDP relay, and its replies go back framed.
final class RendezvousDatagramFraming: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = AddressedEnvelope<ByteBuffer>
    typealias OutboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = ByteBuffer

    private var buffer = ByteBuffer()

    /// fd72:6168:6100::TAG, port 1: an address that stands for a tag and for nothing on any network.
    static func address(for tag: UInt32) -> SocketAddress {
        var bytes = [UInt8](repeating: 0, count: 16)
        bytes[0...5] = [0xfd, 0x72, 0x61, 0x68, 0x61, 0x00]
        bytes[12...15] = [UInt8(tag >> 24), UInt8(tag >> 16 & 0xff), UInt8(tag >> 8 & 0xff), UInt8(tag & 0xff)]
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_port = UInt16(1).bigEndian
        withUnsafeMutableBytes(of: &address.sin6_addr) { $0.copyBytes(from: bytes) }
        return SocketAddress(address, host: "")
    }

    static func tag(of address: SocketAddress) -> UInt32? {
        guard case .v6(let v6) = address else { return nil }
        let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        guard bytes[0...5] == [0xfd, 0x72, 0x61, 0x68, 0x61, 0x00] else { return nil }
        return bytes[12...15].reduce(0) { $0 << 8 | UInt32($1) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer.writeBuffer(&bytes)
        while let (tag, payload) = RendezvousDatagram.read(from: &buffer) {
            context.fireChannelRead(wrapInboundOut(AddressedEnvelope(remoteAddress: Self.address(for: tag), data: payload)))
        }
        buffer.discardReadBytes()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let envelope = unwrapOutboundIn(data)
        guard let tag = Self.tag(of: envelope.remoteAddress), context.channel.isWritable else {
            promise?.succeed(())
            return
        }
        var frame = context.channel.allocator.buffer(capacity: RendezvousDatagram.headerLength + envelope.data.readableBytes)
        RendezvousDatagram.write(tag: tag, payload: envelope.data, to: &frame)
        context.write(wrapOutboundOut(frame), promise: promise)
    }
}
