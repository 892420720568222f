import NIOCore

/// Joins two channels so that bytes read on one are written to the other.
///
/// Reads are issued only while the partner channel is writable, so a slow
/// reader on either side stops reading on the other: memory per joined pair
/// is bounded by the channels' write-buffer watermarks. Half-closure is
/// passed through (needs `allowRemoteHalfClosure` on both channels); once
/// both directions have ended, both channels close. Bytes already passed on
/// are never dropped by a clean end: a channel half-closes or closes only
/// after the writes queued in it are out. An error on either side aborts both.
public final class GlueHandler: ChannelDuplexHandler {
    public typealias InboundIn = NIOAny
    public typealias OutboundIn = NIOAny
    public typealias OutboundOut = NIOAny

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputEnded = false
    private var outputClosing = false
    private var partnerGone = false
    private var sawError = false
    /// Completes when the last bytes from the partner have been written.
    private var lastWrite: EventLoopFuture<Void>?
    private var outputEnded = false

    private init() {}

    /// Two handlers that know each other: add one to each channel.
    public static func matchedPair() -> (GlueHandler, GlueHandler) {
        let a = GlueHandler(), b = GlueHandler()
        a.partner = b
        b.partner = a
        return (a, b)
    }

    /// Joins two channels. Both need autoRead on: the glue holds a channel's
    /// reads back while its partner cannot take more, and lets them go on after.
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

    private func partnerWrite(_ data: NIOAny) {
        guard let context else { return }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.write(data, promise: promise)
        lastWrite = promise.futureResult
    }

    private func partnerFlush() { context?.flush() }

    private func partnerEndedInput() {
        guard let context, !outputClosing else { return }
        outputClosing = true
        // Half-close once the partner's last bytes are out: NIO turns the
        // half-close of a socket whose input has ended into a full close,
        // which drops queued writes.
        afterQueuedWrites(context) { handler, context in
            let closed = context.eventLoop.makePromise(of: Void.self)
            let loopBound = NIOLoopBound(handler, eventLoop: context.eventLoop)
            closed.futureResult.whenComplete { _ in
                let handler = loopBound.value
                handler.outputEnded = true
                if handler.partnerGone {
                    handler.context?.close(promise: nil)
                } else {
                    handler.closeIfBothEnded()
                }
            }
            context.close(mode: .output, promise: closed)
        }
    }

    /// The partner closed. After an error (a reset, a failed connection) this
    /// side is aborted at once. A clean close (NIO closes a socket whose
    /// output had ended when its input ends, without an `inputClosed`
    /// event) still delivers what the partner sent: this side closes once
    /// those bytes are out.
    private func partnerClosed(cleanly: Bool) {
        guard let context, !partnerGone else { return }
        partnerGone = true
        guard cleanly else {
            context.close(promise: nil)
            return
        }
        if outputClosing {
            if outputEnded { context.close(promise: nil) } // else: closes when the output has closed
            return
        }
        outputClosing = true
        afterQueuedWrites(context) { _, context in context.close(promise: nil) }
    }

    /// Runs `body` once every write from the partner so far has been written.
    private func afterQueuedWrites(_ context: ChannelHandlerContext, _ body: @escaping (GlueHandler, ChannelHandlerContext) -> Void) {
        context.flush()
        let written = lastWrite ?? context.eventLoop.makeSucceededVoidFuture()
        lastWrite = nil
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        written.whenComplete { _ in
            let handler = loopBound.value
            guard let context = handler.context else { return }
            body(handler, context)
        }
    }

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
        partner?.partnerClosed(cleanly: !sawError)
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
        sawError = true
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
