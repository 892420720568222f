import NIOCore

/// Goes after a client codec whose first write carries its header
/// (Shadowsocks, Trojan). If the application has written nothing within
/// `delay` (a server-first protocol such as SMTP or SSH), or half-closes
/// first, it writes an empty buffer so the codec sends its header alone and
/// the bridge can connect.
public final class FirstWriteDeadline: ChannelDuplexHandler {
    public typealias InboundIn = NIOAny
    public typealias OutboundIn = NIOAny

    private let delay: TimeAmount
    private var written = false
    private var timer: Scheduled<Void>?

    public init(delay: TimeAmount = .milliseconds(100)) { self.delay = delay }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { schedule(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        schedule(context: context)
        context.fireChannelActive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    private func schedule(context: ChannelHandlerContext) {
        guard timer == nil, !written else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: delay) {
            let (handler, context) = loopBound.value
            handler.writeEmptyIfNothingWritten(context: context)
        }
    }

    private func writeEmptyIfNothingWritten(context: ChannelHandlerContext) {
        guard !written else { return }
        written = true
        context.writeAndFlush(NIOAny(ByteBuffer()), promise: nil)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        written = true
        timer?.cancel()
        context.write(data, promise: promise)
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .output { writeEmptyIfNothingWritten(context: context) }
        context.close(mode: mode, promise: promise)
    }
}
