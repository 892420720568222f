import Logging
import NIOCore
import RahaTransport
import RahaWire

/// Sits after a transport's server codec on the bridge: when the codec
/// reports the client's request, connects the exit and joins the two.
///
/// While connecting it stops reading from the client and holds what has
/// already arrived (at most one read), so nothing is lost and nothing grows.
///
/// On a share node (`share` set), the codec's `ClientAuthenticatedEvent`
/// ties the connection to the invitee, who must still be in the circle and
/// within their quota; each stream must fit within their connection limit,
/// and reads from its destination are paced to their rate.
final class BridgeExitHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private enum State {
        case awaitingRequest
        case connecting(pending: [ByteBuffer], inputClosed: Bool)
    }

    private let exit: Exit
    private let logger: Logger
    private let udpTimeout: TimeAmount
    private let share: ShareSlot?
    private let rendezvous: RendezvousTable?
    private var state: State = .awaitingRequest

    /// `udpTimeout`: how long a Trojan UDP connection may go without a datagram.
    /// `rendezvous`: this bridge is a rendezvous, and a connection asking for
    /// one of its ports becomes a share node's link.
    init(exit: Exit, logger: Logger, udpTimeout: TimeAmount = .seconds(120), share: ShareSlot? = nil, rendezvous: RendezvousTable? = nil) {
        self.exit = exit
        self.logger = logger
        self.udpTimeout = udpTimeout
        self.share = share
        self.rendezvous = rendezvous
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ClientAuthenticatedEvent {
            if let share, !share.attach(clientID: event.clientID, connection: context.channel) {
                context.close(promise: nil)
            }
            return
        }
        if let share, event is ProxyRequestEvent || event is UDPAssociateRequestEvent,
           !(share.account?.admit(stream: context.channel) ?? false) {
            context.close(promise: nil)
            return
        }
        if let event = event as? ChannelEvent, case .inputClosed = event, case .connecting(let pending, _) = state {
            state = .connecting(pending: pending, inputClosed: true)
            return
        }
        if event is MuxRequestEvent, case .awaitingRequest = state {
            becomeMux(context: context)
            return
        }
        if event is UDPAssociateRequestEvent, case .awaitingRequest = state {
            become(TrojanUDPExitHandler(exit: exit, timeout: udpTimeout, logger: logger), context: context)
            return
        }
        guard let request = event as? ProxyRequestEvent, case .awaitingRequest = state else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        if let port = Rendezvous.port(of: request.target) {
            becomeRendezvousLink(port: port, context: context)
            return
        }
        state = .connecting(pending: [], inputClosed: false)
        context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
        let client = context.channel
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        exit.connect(to: request.target, on: context.eventLoop).whenComplete { result in
            let (handler, context) = loopBound.value
            switch result {
            case .success(let upstream):
                handler.joined(context: context, client: client, upstream: upstream)
            case .failure(let error):
                handler.logger.debug("exit connection failed", metadata: ["reason": "\((error as? Exit.ExitError)?.description ?? privacySafeReason(error))"])
                context.close(promise: nil)
            }
        }
    }

    /// The connection carries many streams: a server mux takes this
    /// handler's place, and each stream gets an exit handler of its own.
    private func becomeMux(context: ChannelHandlerContext) {
        let exit = self.exit, logger = self.logger, share = self.share
        let mux = MuxHandler(role: .server) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(BridgeExitHandler(exit: exit, logger: logger, share: share))
            }
        }
        become(mux, context: context)
    }

    /// A share node asks to be reached on `port`: this connection becomes its
    /// link, a mux whose streams this side opens, one per invitee arriving there.
    /// A bridge that is no rendezvous, or does not offer the port, closes it
    /// like any connection to a destination that does not resolve.
    private func becomeRendezvousLink(port: UInt16, context: ChannelHandlerContext) {
        guard let rendezvous, rendezvous.offers(port) else {
            logger.debug("refused a rendezvous link", metadata: ["reason": "\(rendezvous == nil ? "this bridge is no rendezvous" : "the port is not offered")"])
            context.close(promise: nil)
            return
        }
        let mux = MuxHandler(role: .client, configuration: .rendezvousLink)
        become(mux, context: context)
        rendezvous.register(port: port, link: context.channel, mux: mux)
    }

    /// Puts `handler` in this handler's place, before the codec passes on what follows the request.
    private func become(_ handler: ChannelHandler, context: ChannelHandlerContext) {
        do {
            try context.pipeline.syncOperations.addHandler(handler, position: .after(self))
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        } catch {
            context.close(promise: nil)
        }
    }

    private func joined(context: ChannelHandlerContext, client: Channel, upstream: Channel) {
        guard case .connecting(let pending, let inputClosed) = state, client.isActive else {
            upstream.close(promise: nil)
            return
        }
        if let account = share?.account {
            try? upstream.pipeline.syncOperations.addHandler(SharePacer(direction: .down) { account }, position: .first)
        }
        for buffer in pending { upstream.write(buffer, promise: nil) }
        upstream.flush()
        GlueHandler.splice(replacing: self, at: context, with: upstream, inputClosed: inputClosed)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .connecting(var pending, let inputClosed):
            pending.append(unwrapInboundIn(data))
            state = .connecting(pending: pending, inputClosed: inputClosed)
        case .awaitingRequest:
            break // the codec never passes payload before the request
        }
    }
}
