import NIOCore
import NIOPosix
import RahaWire

/// How a DNS tunnel client reaches its recursive resolver: whole DNS
/// messages out and in. Used only on its event loop.
protocol ResolverTransport: AnyObject {
    /// Largest response this transport carries (what to ask the server for at most).
    var responseLimit: Int { get }
    func send(_ message: [UInt8])
    func close()
}

/// Messages go to the resolver in UDP datagrams from one socket; only
/// datagrams from the resolver's address are taken.
final class UDPResolverTransport: ResolverTransport {
    let responseLimit = 4096
    private let channel: Channel
    private let resolver: SocketAddress

    private init(channel: Channel, resolver: SocketAddress) {
        self.channel = channel
        self.resolver = resolver
    }

    static func open(to resolver: SocketAddress, on eventLoop: EventLoop,
                     receive: @escaping ([UInt8]) -> Void) -> EventLoopFuture<ResolverTransport> {
        let any = resolver.protocol == .inet6 ? "::" : "0.0.0.0"
        return DatagramBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Reader(resolver: resolver, receive: receive))
                }
            }
            .bind(host: any, port: 0)
            .map { UDPResolverTransport(channel: $0, resolver: resolver) }
    }

    func send(_ message: [UInt8]) {
        let buffer = channel.allocator.buffer(bytes: message)
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: resolver, data: buffer), promise: nil)
    }

    func close() {
        channel.close(promise: nil)
    }

    private final class Reader: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let resolver: SocketAddress
        let receive: ([UInt8]) -> Void
        init(resolver: SocketAddress, receive: @escaping ([UInt8]) -> Void) {
            self.resolver = resolver
            self.receive = receive
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            guard envelope.remoteAddress == resolver else { return }
            receive(Array(envelope.data.readableBytesView))
        }
        func errorCaught(context: ChannelHandlerContext, error: Error) {
            // ICMP port unreachable and the like: the ARQ retransmits.
        }
    }
}

/// Messages go to the resolver over one TCP connection (RFC 7766: two-byte
/// length prefix, pipelined), or over TLS on it (DNS over TLS, RFC 7858),
/// opened again when it closed.
final class TCPResolverTransport: ResolverTransport {
    let responseLimit = Int(UInt16.max)
    private let eventLoop: EventLoop
    private let resolver: SocketAddress
    private let tls: TLSClient?
    private let receive: ([UInt8]) -> Void
    private var channel: EventLoopFuture<Channel>?
    private var closed = false

    init(resolver: SocketAddress, tls: TLSClient? = nil, on eventLoop: EventLoop, receive: @escaping ([UInt8]) -> Void) {
        self.eventLoop = eventLoop
        self.resolver = resolver
        self.tls = tls
        self.receive = receive
    }

    func send(_ message: [UInt8]) {
        guard !closed else { return }
        var buffer = ByteBufferAllocator().buffer(capacity: message.count + 2)
        buffer.writeInteger(UInt16(message.count))
        buffer.writeBytes(message)
        connection().whenSuccess { $0.writeAndFlush(buffer, promise: nil) }
    }

    private func connection() -> EventLoopFuture<Channel> {
        if let channel { return channel }
        let receive = self.receive, tls = self.tls
        let opening = ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(try tls.makeHandler()) }
                    try channel.pipeline.syncOperations.addHandler(Reader(receive: receive))
                }
            }
            .connect(to: resolver)
        channel = opening
        opening.whenComplete { result in
            switch result {
            case .success(let channel):
                channel.closeFuture.whenComplete { _ in self.forget(opening) }
            case .failure:
                self.forget(opening)
            }
        }
        return opening
    }

    private func forget(_ opening: EventLoopFuture<Channel>) {
        if channel === opening { channel = nil }
    }

    func close() {
        closed = true
        channel?.whenSuccess { $0.close(promise: nil) }
        channel = nil
    }

    private final class Reader: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        var framer = DNSTCPFramer()
        let receive: ([UInt8]) -> Void
        init(receive: @escaping ([UInt8]) -> Void) { self.receive = receive }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            framer.append(unwrapInboundIn(data))
            while let message = framer.nextMessageBytes() { receive(message) }
        }
        func errorCaught(context: ChannelHandlerContext, error: Error) {
            context.close(promise: nil)
        }
    }
}

/// The first `nameserver` of /etc/resolv.conf, for keys that name no resolver.
func systemResolverAddress() throws -> SocketAddress {
    let text = (try? String(contentsOfFile: ResolvConf.path, encoding: .utf8)) ?? ""
    for server in ResolvConf.nameservers(text) {
        let address = server.prefix { $0 != "%" } // an IPv6 zone: not part of the address
        if let socketAddress = try? SocketAddress(ipAddress: String(address), port: 53) { return socketAddress }
    }
    throw WireError(.init(rawValue: "dns-no-system-resolver"),
                    "no nameserver in \(ResolvConf.path): name a resolver in the key (resolver=udp://IP:53)")
}
