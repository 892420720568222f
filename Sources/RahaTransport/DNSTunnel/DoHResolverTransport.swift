import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import RahaWire

/// Messages go to the resolver as DNS over HTTPS (RFC 8484): one HTTP/2
/// connection over TLS, each query a POST of `application/dns-message` on a
/// stream of its own; the connection is opened again when it closed.
final class DoHResolverTransport: ResolverTransport {
    let responseLimit = Int(UInt16.max)
    private let eventLoop: EventLoop
    private let resolver: SocketAddress
    private let authority: String
    private let path: String
    private let tls: TLSClient
    private let receive: ([UInt8]) -> Void
    private var connection: EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer>?
    private var closed = false
    private var channels: [Channel] = []

    /// `url`: https://HOST[:PORT]/PATH. A name host is the TLS server name
    /// checked against the certificate and is looked up (through the system's
    /// resolver) once; for an address only the certificate's chain is checked.
    init(url: String, on eventLoop: EventLoop, receive: @escaping ([UInt8]) -> Void) throws {
        guard url.lowercased().hasPrefix("https://") else { throw DNSTunnelError("a DoH resolver is an https:// URL") }
        let rest = url.dropFirst("https://".count)
        let hostPort = rest.prefix { $0 != "/" }
        path = rest.count > hostPort.count ? String(rest.dropFirst(hostPort.count)) : "/dns-query"
        let endpoint = try Endpoint(parsing: hostPort, defaultPort: 443)
        authority = endpoint.port == 443 ? endpoint.hostText : "\(endpoint.hostText):\(endpoint.port)"
        if case .domain(let name) = endpoint.host {
            resolver = try SocketAddress.makeAddressResolvingHost(name, port: Int(endpoint.port))
            tls = try TLSClient(serverName: name, check: .system, alpn: ["h2"])
        } else {
            // An address has no name to check: the certificate's chain is checked alone.
            resolver = try endpoint.socketAddress()
            tls = try TLSClient(serverName: nil, check: .system, alpn: ["h2"])
        }
        self.eventLoop = eventLoop
        self.receive = receive
    }

    func send(_ message: [UInt8]) {
        guard !closed else { return }
        let request = Request(authority: authority, path: path, body: message, receive: receive)
        multiplexer().whenSuccess { multiplexer in
            multiplexer.createStreamChannel { stream in
                stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(request) }
            }.whenFailure { _ in } // a lost query: the tunnel's ARQ sends again
        }
    }

    private func multiplexer() -> EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer> {
        if let connection { return connection }
        let tls = self.tls
        let opening = ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(try tls.makeHandler())
                }
            }
            .connect(to: resolver)
            .flatMapThrowing { channel -> (Channel, NIOHTTP2Handler.StreamMultiplexer) in
                let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                    mode: .client, connectionConfiguration: .init(), streamConfiguration: .init()
                ) { stream in stream.close() } // the resolver opens no streams
                return (channel, multiplexer)
            }
        let result = opening.map { $0.1 }
        connection = result
        opening.whenComplete { outcome in
            switch outcome {
            case .success(let (channel, _)):
                self.channels.append(channel)
                channel.closeFuture.whenComplete { _ in
                    self.forget(result)
                    self.channels.removeAll { $0 === channel }
                }
            case .failure:
                self.forget(result)
            }
        }
        return result
    }

    private func forget(_ future: EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer>) {
        if connection === future { connection = nil }
    }

    func close() {
        closed = true
        connection = nil
        for channel in channels { channel.close(promise: nil) }
        channels = []
    }

    /// One query on one stream: the POST, then the answer's body on a 200.
    private final class Request: ChannelInboundHandler {
        typealias InboundIn = HTTP2Frame.FramePayload
        typealias OutboundOut = HTTP2Frame.FramePayload
        let authority: String, path: String, body: [UInt8]
        let receive: ([UInt8]) -> Void
        var status: String?
        var answer: [UInt8] = []

        init(authority: String, path: String, body: [UInt8], receive: @escaping ([UInt8]) -> Void) {
            self.authority = authority
            self.path = path
            self.body = body
            self.receive = receive
        }

        func channelActive(context: ChannelHandlerContext) {
            let headers = HPACKHeaders([
                (":method", "POST"), (":scheme", "https"), (":authority", authority), (":path", path),
                ("content-type", "application/dns-message"), ("accept", "application/dns-message"),
                ("content-length", String(body.count)),
            ])
            context.write(wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
            let data = HTTP2Frame.FramePayload.Data(data: .byteBuffer(context.channel.allocator.buffer(bytes: body)), endStream: true)
            context.writeAndFlush(wrapOutboundOut(.data(data)), promise: nil)
            context.fireChannelActive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .headers(let headers):
                if status == nil { status = headers.headers.first(name: ":status") }
                if headers.endStream { finish(context: context) }
            case .data(let frame):
                if case .byteBuffer(let buffer) = frame.data, answer.count + buffer.readableBytes <= Int(UInt16.max) {
                    answer += buffer.readableBytesView
                }
                if frame.endStream { finish(context: context) }
            default:
                break
            }
        }

        private func finish(context: ChannelHandlerContext) {
            if status == "200", !answer.isEmpty { receive(answer) }
            answer = []
            context.close(promise: nil)
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            context.close(promise: nil)
        }
    }
}
