import Logging
import NIOCore
import RahaTransport
import RahaWire

/// Forwards absolute-URI HTTP requests (`GET http://host/path`) with
/// keep-alive: one stream per origin, requests rewritten to origin form,
/// bodies and responses passed through untouched but measured, so the
/// connection can carry the next request (to the same origin or, once
/// every response is complete, to another).
///
/// Backpressure: each side reads only while the other is writable.
final class HTTPForwardHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct WaitingRequest {
        var head: HTTPRequestHead
        var origin: Endpoint
    }

    private let dialer: StreamDialer
    private let credentials: ProxyCredentials?
    private let logger: Logger
    private var context: ChannelHandlerContext?

    // Client → origin.
    private var clientBuffer = ByteBuffer()
    private var requestBody: HTTPBodyFramer?
    private var waiting: WaitingRequest?
    private var closeWhenIdle = false
    private var tunnel = false

    // Origin → client.
    private var upstream: Channel?
    private var upstreamOrigin: Endpoint?
    private var pendingMethods: [String] = []
    private var responseBuffer = ByteBuffer()
    private var responseBody: HTTPBodyFramer?

    init(dialer: StreamDialer, credentials: ProxyCredentials?, logger: Logger) {
        self.dialer = dialer
        self.credentials = credentials
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        upstream?.close(promise: nil)
        self.context = nil
    }

    /// Takes over from the front with its first (already rewritten) request.
    func start(head: HTTPRequestHead, origin: Endpoint, clientKeepAlive: Bool, rest: ByteBuffer) {
        clientBuffer = rest
        handle(head: head, origin: origin, keepAlive: clientKeepAlive)
        pump()
    }

    // MARK: Client side

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        clientBuffer.writeBuffer(&incoming)
        pump()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // The client sent all it will; finish the responses it waits for, then close.
            closeWhenIdle = true
            if tunnel { upstream?.close(mode: .output, promise: nil) }
            if pendingMethods.isEmpty && !tunnel { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        upstream?.close(promise: nil)
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        upstream?.setOption(.autoRead, value: context.channel.isWritable).whenComplete { _ in }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// Moves complete client requests and body bytes to the upstream.
    private func pump() {
        guard let context else { return }
        defer { upstream?.flush() }
        while waiting == nil {
            if tunnel {
                if clientBuffer.readableBytes > 0, let upstream {
                    upstream.write(clientBuffer.readSlice(length: clientBuffer.readableBytes)!, promise: nil)
                }
                return
            }
            if var body = requestBody {
                let n: Int
                do { n = try body.consume(clientBuffer) } catch { return fail(context, status: 400, reason: "Bad Request", error) }
                if n > 0, let slice = clientBuffer.readSlice(length: n) { upstream?.write(slice, promise: nil) }
                requestBody = body.isComplete ? nil : body
                if !body.isComplete { return }
                continue
            }
            let head: HTTPRequestHead
            do {
                guard let h = try HTTPRequestHead.read(from: &clientBuffer) else { return }
                head = h
            } catch {
                return fail(context, status: 400, reason: "Bad Request", error)
            }
            if let credentials, !head.hasProxyAuthorization(credentials) {
                return failWith(context, HTTPProxy.proxyAuthenticationRequired())
            }
            do {
                guard case .forward(let rewritten, let origin) = try HTTPProxyRequest(head: head) else {
                    return fail(context, status: 400, reason: "Bad Request", WireError.unsupported("CONNECT after a forwarded request on one connection"))
                }
                handle(head: rewritten, origin: origin, keepAlive: head.isKeepAlive)
            } catch {
                return fail(context, status: 400, reason: "Bad Request", error)
            }
        }
    }

    private func handle(head: HTTPRequestHead, origin: Endpoint, keepAlive: Bool) {
        if !keepAlive { closeWhenIdle = true }
        if let upstream, upstream.isActive, upstreamOrigin == origin {
            send(head)
        } else if pendingMethods.isEmpty {
            open(origin, then: head)
        } else {
            // Another origin: wait until every response on this stream is complete.
            waiting = WaitingRequest(head: head, origin: origin)
            context?.channel.setOption(.autoRead, value: false).whenComplete { _ in }
        }
    }

    private func open(_ origin: Endpoint, then head: HTTPRequestHead) {
        guard let context else { return }
        upstream?.close(promise: nil)
        upstream = nil
        upstreamOrigin = origin
        waiting = WaitingRequest(head: head, origin: origin)
        context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        dialer.dial(origin, on: context.eventLoop).flatMap { stream in
            stream.pipeline.addHandler(UpstreamHandler(forwarder: loopBound)).map { stream }
        }.whenComplete { result in
            let handler = loopBound.value
            guard let context = handler.context else {
                if case .success(let stream) = result { stream.close(promise: nil) }
                return
            }
            switch result {
            case .failure(let error):
                handler.logger.debug("could not open a stream", metadata: ["via": "\(handler.dialer.label)", "error": "\(privacySafeReason(error))"])
                handler.failWith(context, httpDialFailureResponse(error))
            case .success(let stream):
                handler.upstream = stream
                handler.waiting = nil
                handler.send(head)
                context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
                handler.pump()
            }
        }
    }

    private func send(_ head: HTTPRequestHead) {
        guard let upstream else { return }
        var out = upstream.allocator.buffer(capacity: 512)
        head.serialize(into: &out)
        upstream.write(out, promise: nil)
        pendingMethods.append(head.method)
        if let body = try? HTTPBodyFramer(request: head), !body.isComplete {
            requestBody = body
        }
    }

    private func fail(_ context: ChannelHandlerContext, status: Int, reason: String, _ error: Error) {
        if let error = error as? WireError {
            failWith(context, HTTPProxy.errorResponse(for: error))
        } else {
            failWith(context, HTTPProxy.errorResponse(status: status, reason: reason))
        }
    }

    /// Answers with an error once earlier responses are out, then closes.
    private func failWith(_ context: ChannelHandlerContext, _ response: ByteBuffer) {
        waiting = nil
        upstream?.close(promise: nil)
        if pendingMethods.isEmpty {
            context.writeAndFlush(wrapOutboundOut(response)).whenComplete { _ in context.close(promise: nil) }
        } else {
            // Mid-response: the only honest signal left is closing.
            context.close(promise: nil)
        }
    }

    // MARK: Origin side (called by UpstreamHandler)

    fileprivate func upstreamRead(_ bytes: inout ByteBuffer, from channel: Channel) {
        guard let context, channel === upstream else { return }
        if tunnel {
            context.write(wrapOutboundOut(bytes), promise: nil)
            return
        }
        responseBuffer.writeBuffer(&bytes)
        while true {
            if var body = responseBody {
                guard let n = try? body.consume(responseBuffer) else { context.close(promise: nil); return }
                if n > 0, let slice = responseBuffer.readSlice(length: n) { context.write(wrapOutboundOut(slice), promise: nil) }
                responseBody = body
                if body.isComplete { finishResponse() } else { return }
                continue
            }
            var scan = responseBuffer
            let head: HTTPResponseHead
            do {
                guard let h = try HTTPResponseHead.read(from: &scan) else { return }
                head = h
            } catch {
                return failWith(context, HTTPProxy.errorResponse(status: 502, reason: "Bad Gateway", message: "the destination sent an invalid HTTP response"))
            }
            let raw = responseBuffer.readSlice(length: scan.readerIndex - responseBuffer.readerIndex)!
            context.write(wrapOutboundOut(raw), promise: nil)
            let method = pendingMethods.first ?? "GET"
            guard let body = try? HTTPBodyFramer(response: head, requestMethod: method) else {
                context.close(promise: nil)
                return
            }
            if body.framing == .tunnel {
                tunnel = true
                if responseBuffer.readableBytes > 0 { context.write(wrapOutboundOut(responseBuffer.readSlice(length: responseBuffer.readableBytes)!), promise: nil) }
                pump()
                return
            }
            if head.isInformational { continue } // a final response follows for the same request
            responseBody = body
        }
    }

    fileprivate func upstreamReadComplete() { context?.flush() }

    private func finishResponse() {
        responseBody = nil
        if !pendingMethods.isEmpty { pendingMethods.removeFirst() }
        guard pendingMethods.isEmpty, let context else { return }
        if closeWhenIdle && requestBody == nil && clientBuffer.readableBytes == 0 {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer())).whenComplete { _ in context.close(promise: nil) }
        } else if let waiting {
            self.waiting = nil
            open(waiting.origin, then: waiting.head)
        }
    }

    fileprivate func upstreamEnded(_ channel: Channel) {
        guard let context, channel === upstream else { return }
        upstream = nil
        if tunnel || responseBody?.framing == .untilClose {
            // The response ran until the origin closed: so does ours.
            context.flush()
            context.close(promise: nil)
        } else if !pendingMethods.isEmpty {
            // Closed with responses outstanding: the client must see the failure.
            context.close(promise: nil)
        }
    }

    fileprivate func upstreamWritabilityChanged(_ writable: Bool) {
        context?.channel.setOption(.autoRead, value: writable && waiting == nil).whenComplete { _ in }
    }
}

/// Passes an upstream stream's events to its forwarder.
private final class UpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let forwarder: NIOLoopBound<HTTPForwardHandler>

    init(forwarder: NIOLoopBound<HTTPForwardHandler>) { self.forwarder = forwarder }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        forwarder.value.upstreamRead(&bytes, from: context.channel)
    }

    func channelReadComplete(context: ChannelHandlerContext) { forwarder.value.upstreamReadComplete() }

    func channelInactive(context: ChannelHandlerContext) {
        forwarder.value.upstreamEnded(context.channel)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        forwarder.value.upstreamWritabilityChanged(context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}
