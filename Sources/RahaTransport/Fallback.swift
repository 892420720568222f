import NIOCore
import RahaWire

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
        context.fireUserInboundEventTriggered(HandedToFallbackEvent())
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

/// Sits before the bridge's TLS handler and does with a connection's first bytes what
/// an ordinary HTTPS server (nginx with OpenSSL) does, `TLSPortFirstBytes`: a TLS
/// handshake goes on to TLS untouched; plain bytes (HTTP sent to the TLS port, a
/// scanner's garbage) are spliced byte for byte to the fallback site like every other
/// stranger; bytes that such a server would give to OpenSSL and OpenSSL would refuse
/// are refused the same way, with the same alert or none. So a prober sees what it
/// would see from an nginx HTTPS server, not an alert nginx would not send, nor a web
/// page where nginx says nothing.
public final class TLSRecordSniffer: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum State {
        case sniffing
        case fallingBack
        case closed
    }

    private let fallback: FallbackDialer
    private var buffered = ByteBuffer()
    private var inputClosed = false
    private var state = State.sniffing

    public init(fallback: @escaping FallbackDialer) { self.fallback = fallback }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        switch state {
        case .fallingBack:
            buffered.writeBuffer(&bytes)
            return
        case .closed:
            return
        case .sniffing:
            buffered.writeBuffer(&bytes)
        }
        switch TLSPortFirstBytes(buffered.readableBytesView) {
        case .needMore:
            return
        case .tls:
            let all = buffered
            buffered = ByteBuffer()
            context.fireChannelRead(wrapInboundOut(all))
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        case .http:
            fallBack(context: context)
        case .closeSilently:
            close(context: context)
        case .alertThenClose(let description):
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: TLSPortFirstBytes.alertRecord(description))),
                                  promise: nil)
            close(context: context)
        }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            switch state {
            case .fallingBack:
                inputClosed = true
                return
            case .sniffing:
                // The client is done before a decision (or before its announced length):
                // a server has nothing to answer.
                close(context: context)
                return
            case .closed:
                return
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func close(context: ChannelHandlerContext) {
        state = .closed
        buffered = ByteBuffer()
        context.close(promise: nil)
    }

    private func fallBack(context: ChannelHandlerContext) {
        state = .fallingBack
        GlueHandler.spliceToFallback(replacing: self, at: context, dialer: fallback) { [self] in
            defer { buffered = ByteBuffer() }
            return (buffered, inputClosed)
        }
    }
}
