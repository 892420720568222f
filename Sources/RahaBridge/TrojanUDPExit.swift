import Logging
import NIOCore
import RahaTransport
import RahaWire

/// The bridge's side of a Trojan UDP connection (after an authenticated UDP
/// ASSOCIATE): reads `Trojan.UDPFrame`s from the client's stream, sends each
/// payload to the destination its frame names through one `UDPExitSocket`
/// (the exit policy applies, names resolve at the bridge), and writes every
/// reply back as a frame that names the reply's source.
///
/// Memory is bounded: the stream holds at most one incomplete frame, the
/// socket at most `UDPExitSocket.maxQueued` datagrams while names resolve,
/// and a reply that finds the client's stream not writable is dropped (it is
/// UDP) rather than queued. A malformed frame, the end of the client's
/// input, or `timeout` with no datagram either way ends the connection.
final class TrojanUDPExitHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Makes the session's exit on the channel's event loop, given where
    /// replies go and where the reasons for refused destinations go.
    typealias MakeExit = (EventLoop, @escaping (Endpoint, ByteBuffer) -> Void, @escaping (Exit.ExitError) -> Void) -> DatagramExit

    private let makeExit: MakeExit
    private let timeout: TimeAmount
    private let logger: Logger
    private var cutter = Trojan.UDPFrameCutter()
    private var socket: DatagramExit?
    private var lastActivity = NIODeadline.uptimeNanoseconds(0)
    private var idleCheck: Scheduled<Void>?

    convenience init(exit: Exit, timeout: TimeAmount, logger: Logger) {
        self.init(timeout: timeout, logger: logger) { eventLoop, onReply, onRefused in
            UDPExitSocket(exit: exit, eventLoop: eventLoop, onReply: onReply, onRefused: onRefused)
        }
    }

    init(timeout: TimeAmount, logger: Logger, makeExit: @escaping MakeExit) {
        self.makeExit = makeExit
        self.timeout = timeout
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        lastActivity = context.eventLoop.now
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let logger = self.logger
        socket = makeExit(context.eventLoop, { source, payload in
            let (handler, context) = loopBound.value
            handler.reply(payload, from: source, context: context)
        }, { reason in
            logger.debug("Trojan UDP datagrams dropped", metadata: ["reason": "\(reason.description)"])
        })
        scheduleIdleCheck(context: context, at: lastActivity + timeout)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
        socket?.close()
        socket = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        socket?.close()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        cutter.append(unwrapInboundIn(data))
        do {
            while let frame = try cutter.next() {
                lastActivity = context.eventLoop.now
                socket?.send(frame.payload, to: frame.endpoint)
            }
        } catch {
            cutter = Trojan.UDPFrameCutter()
            logger.debug("Trojan UDP connection closed", metadata: ["reason": "a malformed frame"])
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // The client is done sending: there is nothing more to relay.
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func reply(_ payload: ByteBuffer, from source: Endpoint, context: ChannelHandlerContext) {
        guard context.channel.isActive, context.channel.isWritable, payload.readableBytes <= Trojan.maxUDPPayload else { return }
        lastActivity = context.eventLoop.now
        var out = context.channel.allocator.buffer(capacity: 263 + payload.readableBytes)
        Trojan.UDPFrame(endpoint: source, payload: payload).write(to: &out)
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    private func scheduleIdleCheck(context: ChannelHandlerContext, at deadline: NIODeadline) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = loopBound.value
            let due = handler.lastActivity + handler.timeout
            if context.eventLoop.now >= due {
                context.close(promise: nil)
            } else {
                handler.scheduleIdleCheck(context: context, at: due)
            }
        }
    }
}
