import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import RahaTransport
import RahaWire

/// Where a mail server is and how to reach it safely (stored as JSON in the account).
public struct MailServer: Codable, Hashable, Sendable {
    public enum Security: String, Hashable, Sendable, Codable {
        /// TLS from the first byte (SMTP 465, IMAP 993).
        case tls
        /// STARTTLS before anything else (SMTP 587, IMAP 143); refused if not offered.
        case starttls
        /// No TLS: only for a server on loopback or a link you trust.
        case none
    }

    public var host: String
    public var port: Int
    public var security: Security
    /// The name the certificate must carry; nil: the host (when it is a name).
    public var serverName: String?
    /// SHA-256 of the server's certificate in hex, for servers whose CA is
    /// not among the system's (a domestic CA, a self-signed test server):
    /// that certificate exactly, whoever signed it.
    public var pin: String?
    /// A SOCKS5 proxy HOST:PORT (such as `raha connect`'s) to reach the
    /// server through when it cannot be reached directly, or always with
    /// `proxyOnly`: so the courier rides any live tunnel, the DNS tunnel included.
    public var proxy: String?
    public var proxyOnly: Bool?

    public init(host: String, port: Int, security: Security, serverName: String? = nil, pin: String? = nil,
                proxy: String? = nil, proxyOnly: Bool = false) {
        self.host = host
        self.port = port
        self.security = security
        self.serverName = serverName
        self.pin = pin
        self.proxy = proxy
        self.proxyOnly = proxyOnly ? true : nil
    }

    /// 32 bytes from 64 hex digits (colons allowed), or nil.
    public static func bytes(hex: String) -> [UInt8]? {
        Hex.decode(hex.filter { $0 != ":" }).flatMap { $0.count == 32 ? $0 : nil }
    }

    var proxyAddress: (host: String, port: Int)? {
        proxy.flatMap { try? Endpoint(parsing: $0, defaultPort: 1080) }.map { (host: $0.hostText, port: Int($0.port)) }
    }

    /// The name checked in the server's certificate: `serverName`, else the host unless it is an IP address.
    var certificateName: String? {
        if let serverName { return serverName }
        return (try? Endpoint(parsing: host, defaultPort: 1)).flatMap { endpoint in
            if case .domain = endpoint.host { return host }
            return nil
        }
    }
}

/// One connection to a mail server, for SMTP or IMAP: bytes in and out,
/// TLS from the start or on demand (STARTTLS), and a deadline on every
/// read so a silent server cannot hang the courier.
public final class MailSocket {
    private let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    private var inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private let channel: Channel
    private let tls: TLSClient
    /// Bytes read past the proxy's answer (the server's greeting), for the next `read`.
    private var pending: ByteBuffer?

    /// How long a read may wait before the connection counts as dead.
    public static let readTimeout: TimeAmount = .seconds(120)

    private init(channel: Channel, inbound: NIOAsyncChannelInboundStream<ByteBuffer>, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, tls: TLSClient) {
        self.channel = channel
        self.inbound = inbound.makeAsyncIterator()
        self.outbound = outbound
        self.tls = tls
    }

    /// Connects (directly, or through the server's SOCKS5 proxy: see
    /// `MailServer.proxy`), starts TLS at once for `.tls`, runs `body`, then closes.
    public static func withConnection<T>(to server: MailServer, readTimeout: TimeAmount = MailSocket.readTimeout,
                                         group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                                         _ body: (MailSocket) async throws -> T) async throws -> T {
        let tls: TLSClient
        do {
            tls = try TLSClient(serverName: server.certificateName, check: CertificateCheck(pin: server.pin.flatMap(MailServer.bytes(hex:)), allowInsecure: false), alpn: [])
        } catch {
            throw MailError(.security, "TLS could not be set up for \(server.host): \(error)")
        }
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        var viaProxy = false
        let proxy = server.proxyAddress
        if let proxy, server.proxyOnly == true {
            channel = try await connect(to: proxy, what: "the proxy", timeout: .seconds(30), readTimeout: readTimeout, group: group)
            viaProxy = true
        } else {
            do {
                // With a proxy to fall back on, a blocked server is given up on sooner.
                channel = try await connect(to: (server.host, server.port), what: "the mail server",
                                            timeout: proxy == nil ? .seconds(30) : .seconds(10), readTimeout: readTimeout, group: group)
            } catch {
                guard let proxy else { throw error }
                channel = try await connect(to: proxy, what: "the proxy", timeout: .seconds(30), readTimeout: readTimeout, group: group)
                viaProxy = true
            }
        }
        return try await channel.executeThenClose { inbound, outbound in
            let socket = MailSocket(channel: channel.channel, inbound: inbound, outbound: outbound, tls: tls)
            if viaProxy { try await socket.socksConnect(host: server.host, port: server.port) }
            if server.security == .tls { try await socket.startTLS() }
            return try await body(socket)
        }
    }

    private static func connect(to address: (host: String, port: Int), what: String, timeout: TimeAmount, readTimeout: TimeAmount,
                                group: EventLoopGroup) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        do {
            return try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.so_keepalive), value: 1)
                .connectTimeout(timeout)
                .connect(host: address.host, port: address.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handlers = channel.pipeline.syncOperations
                        try handlers.addHandler(IdleStateHandler(readTimeout: readTimeout))
                        try handlers.addHandler(ReadTimeoutCloser(timeout: readTimeout))
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw MailError(.transient, "could not reach \(what) \(address.host):\(address.port) (\(privacySafeReason(error))): check the address and port, or try again later")
        }
    }

    /// SOCKS5 CONNECT (RFC 1928, no authentication) to the mail server through the proxy.
    private func socksConnect(host: String, port: Int) async throws {
        var request = ByteBuffer()
        SOCKS5Greeting(methods: [.noAuthentication]).write(to: &request)
        let destination = (try? Endpoint(parsing: host, defaultPort: UInt16(port))).map { Endpoint(host: $0.host, port: UInt16(port)) }
            ?? Endpoint(host: .domain(host), port: UInt16(port))
        SOCKS5Request(command: .connect, destination: destination).write(to: &request)
        try await write(Array(request.readableBytesView))
        var received = ByteBuffer()
        var selected = false
        while true {
            if !selected, let selection = try? SOCKS5MethodSelection.read(from: &received) {
                guard selection.method == .noAuthentication else {
                    throw MailError(.permanent, "the proxy wants a login (method \(selection.method)); Raha uses proxies without one, such as raha connect")
                }
                selected = true
            }
            if selected, let response = try? SOCKS5Response.read(from: &received) {
                guard response.reply == .succeeded else {
                    throw MailError(.transient, "the proxy could not reach the mail server (\(response.reply)): the tunnel behind it may be down")
                }
                if received.readableBytes > 0 { pending = received }
                return
            }
            guard var more = try await inbound.next() else {
                throw MailError(.transient, "the proxy closed the connection before reaching the mail server")
            }
            received.writeBuffer(&more)
        }
    }

    /// The next bytes from the server; nil when it closed the connection.
    public func read() async throws -> ByteBuffer? {
        if let pending {
            self.pending = nil
            return pending
        }
        do {
            return try await inbound.next()
        } catch let error as NIOSSLError {
            throw MailError(.security, "TLS with the mail server failed (\(error)): check the server name and its certificate")
        } catch let error as BoringSSLError {
            throw MailError(.security, "TLS with the mail server failed (\(error)): check the server name and its certificate")
        } catch {
            throw MailError(.transient, "the connection to the mail server failed (\(privacySafeReason(error)))")
        }
    }

    public func write(_ bytes: [UInt8]) async throws {
        do {
            try await outbound.write(ByteBuffer(bytes: bytes))
        } catch {
            throw MailError(.transient, "the connection to the mail server failed while sending (\(privacySafeReason(error)))")
        }
    }

    /// Writes `bytes` after `delay` unless `flag` is set by then (and sets it): for IMAP's DONE.
    func scheduleWrite(_ bytes: [UInt8], in delay: TimeAmount, unless flag: NIOLockedValueBox<Bool>) -> Scheduled<Void> {
        channel.eventLoop.scheduleTask(in: delay) { [channel] in
            if flag.withLockedValue({ sent in defer { sent = true }; return !sent }) {
                channel.writeAndFlush(ByteBuffer(bytes: bytes), promise: nil)
            }
        }
    }

    /// Starts TLS now (after the server agreed to STARTTLS). Bytes written
    /// from here on wait for the handshake; a failed handshake shows as an
    /// error on the next read.
    public func startTLS() async throws {
        let tls = self.tls
        do {
            try await channel.eventLoop.flatSubmit { [channel] in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(try tls.makeHandler(), position: .first)
                }
            }.get()
        } catch {
            throw MailError(.security, "TLS could not start with the mail server: \(error)")
        }
    }
}

/// Closes the connection when the read idle timer fires.
private final class ReadTimeoutCloser: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    let timeout: TimeAmount

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case IdleStateHandler.IdleStateEvent.read = event {
            context.fireErrorCaught(MailError(.transient, "the mail server sent nothing for \(timeout.nanoseconds / 1_000_000_000) s"))
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
