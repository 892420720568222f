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
            .bind(host: link.localAddress?.ipAddress ?? "0.0.0.0", port: Int(port))
        bound.whenComplete { [self] result in
            switch result {
            case .success(let listener):
                let current = lock.withLock { () -> Bool in
                    guard registrations[port]?.link === link else { return false }
                    registrations[port]?.listener = listener
                    return true
                }
                if current {
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
    private let eventLoop: EventLoop
    private let logger: Logger
    private let lock = NIOLock()
    private var link: Channel?
    private var stopped = false
    private var keepAlive: RepeatedTask?
    private var backoff: TimeAmount = .seconds(1)

    init(key: TrojanKey, port: UInt16, setup: @escaping Setup, eventLoop: EventLoop, logger: Logger) throws {
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
        let setup = self.setup, logger = self.logger, port = self.port
        dialer.dial(Rendezvous.destination(port: port), on: eventLoop).flatMapThrowing { channel -> Channel in
            let mux = MuxHandler(role: .server, configuration: .rendezvousLink) { stream in
                logger.debug("the rendezvous spliced a connection through", metadata: ["port": "\(port)"])
                return stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandler(RendezvousStreamStart(setup: setup))
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
            if NIODeadline.now() - opened > .seconds(60) { backoff = .seconds(1) }
            logger.info("the link to the rendezvous closed; linking again", metadata: ["port": "\(port)"])
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

    init(setup: @escaping RendezvousLink.Setup) { self.setup = setup }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ProxyRequestEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        do {
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
            try setup(context.channel)
        } catch {
            context.close(promise: nil)
        }
    }
}
