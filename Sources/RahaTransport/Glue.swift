import NIOCore

/// Joins two channels so that bytes read on one are written to the other.
///
/// Reads are issued only while the partner channel is writable, so a slow
/// reader on either side stops reading on the other: memory per joined pair
/// is bounded by the channels' write-buffer watermarks. Half-closure is
/// passed through (needs `allowRemoteHalfClosure` on both channels); once
/// both directions have ended, both channels close.
public final class GlueHandler: ChannelDuplexHandler {
    public typealias InboundIn = NIOAny
    public typealias OutboundIn = NIOAny
    public typealias OutboundOut = NIOAny

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputEnded = false
    private var outputEnded = false

    private init() {}

    /// Two handlers that know each other: add one to each channel.
    public static func matchedPair() -> (GlueHandler, GlueHandler) {
        let a = GlueHandler(), b = GlueHandler()
        a.partner = b
        b.partner = a
        return (a, b)
    }

    /// Joins two channels (each must be set up with autoRead off or on; reads
    /// are driven from here either way).
    public static func join(_ a: Channel, _ b: Channel) -> EventLoopFuture<Void> {
        let (ga, gb) = matchedPair()
        return a.pipeline.addHandler(ga).and(b.pipeline.addHandler(gb)).map { _ in }
    }

    /// Puts a glue to `partner` exactly where `handler` sits in its pipeline,
    /// then removes `handler` and resumes reading: the handler's job (reading
    /// a request, deciding on a header) is done and the stream takes over.
    /// Nothing later in the pipeline sees the stream's bytes. Call it on the
    /// event loop that both channels share. `inputClosed` passes on a
    /// half-close that arrived while the handler was still deciding.
    public static func splice(replacing handler: RemovableChannelHandler, at context: ChannelHandlerContext,
                              with partner: Channel, inputClosed: Bool = false) {
        let (local, remote) = matchedPair()
        do {
            try context.pipeline.syncOperations.addHandler(local, position: .after(handler))
            try partner.pipeline.syncOperations.addHandler(remote)
        } catch {
            context.close(promise: nil)
            partner.close(promise: nil)
            return
        }
        if inputClosed { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        context.pipeline.syncOperations.removeHandler(handler, promise: nil)
        context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { context.read() }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    // MARK: Called by the partner

    private func partnerWrite(_ data: NIOAny) { context?.write(data, promise: nil) }
    private func partnerFlush() { context?.flush() }

    private func partnerEndedInput() {
        guard let context, !outputEnded else { return }
        outputEnded = true
        context.close(mode: .output, promise: nil)
        closeIfBothEnded()
    }

    private func partnerClosed() { context?.close(promise: nil) }

    private func partnerBecameWritable() {
        if pendingRead, let context {
            pendingRead = false
            context.read()
        }
    }

    private var isWritable: Bool { context?.channel.isWritable ?? false }

    private func closeIfBothEnded() {
        if inputEnded && outputEnded { context?.close(promise: nil) }
    }

    // MARK: Channel events

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.partnerWrite(data)
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        partner?.partnerClosed()
        context.fireChannelInactive()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            inputEnded = true
            partner?.partnerEndedInput()
            closeIfBothEnded()
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    public func read(context: ChannelHandlerContext) {
        if partner?.isWritable ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }
}
