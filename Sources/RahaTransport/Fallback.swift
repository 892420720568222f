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
