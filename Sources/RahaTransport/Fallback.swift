import NIOCore

/// Opens a connection to the bridge's fallback web site, on the event loop given
/// (the codec joins it to the client channel on that loop).
public typealias FallbackDialer = @Sendable (EventLoop) -> EventLoopFuture<Channel>

extension GlueHandler {
    /// Hands a connection that a deciding handler found is not one of ours
    /// to the fallback site, so that a prober sees that site and nothing else.
    ///
    /// Stops reading, dials the site, then calls `takeReceived` for every
    /// byte the handler has received (it keeps collecting late arrivals
    /// until then, and says whether the client half-closed meanwhile),
    /// writes those bytes to the site unchanged and splices the site in the
    /// handler's place (see `splice`). If the site cannot be reached, the
    /// client is closed, like a web server that is down; if the client has
    /// gone meanwhile, the site is closed.
    public static func spliceToFallback(replacing handler: RemovableChannelHandler, at context: ChannelHandlerContext,
                                        dialer: FallbackDialer,
                                        takeReceived: @escaping () -> (bytes: ByteBuffer, inputClosed: Bool)) {
        let client = context.channel
        let loopBound = NIOLoopBound((handler, context, takeReceived), eventLoop: context.eventLoop)
        client.setOption(.autoRead, value: false).whenComplete { _ in }
        dialer(context.eventLoop).whenComplete { result in
            let (handler, context, takeReceived) = loopBound.value
            switch result {
            case .failure:
                context.close(promise: nil)
            case .success(let site):
                guard client.isActive else { site.close(promise: nil); return }
                let (bytes, inputClosed) = takeReceived()
                if bytes.readableBytes > 0 { site.write(bytes, promise: nil) }
                site.flush()
                // The glue takes the handler's place, so no later handler
                // (the exit, waiting for a request) ever sees the prober's bytes.
                splice(replacing: handler, at: context, with: site, inputClosed: inputClosed)
            }
        }
    }
}

/// Sits before the bridge's TLS handler and looks at the first byte: a TLS
/// handshake record (0x16) goes on to TLS untouched, anything else (plain
/// HTTP sent to the TLS port, a scanner's garbage) is spliced byte for byte
/// to the fallback site like every other stranger, instead of getting a TLS
/// alert that no ordinary web site would send to it.
public final class TLSRecordSniffer: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private let fallback: FallbackDialer
    private var buffered = ByteBuffer()
    private var inputClosed = false
    private var fallingBack = false

    public init(fallback: @escaping FallbackDialer) { self.fallback = fallback }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if fallingBack {
            buffered.writeBuffer(&bytes)
            return
        }
        guard let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) else { return }
        if first == 0x16 {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        } else {
            buffered.writeBuffer(&bytes)
            fallBack(context: context)
        }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event, fallingBack {
            inputClosed = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func fallBack(context: ChannelHandlerContext) {
        fallingBack = true
        GlueHandler.spliceToFallback(replacing: self, at: context, dialer: fallback) { [self] in
            defer { buffered = ByteBuffer() }
            return (buffered, inputClosed)
        }
    }
}
