import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import RahaTransport
import RahaWire

/// Where a mail server is and how to reach it safely.
public struct MailServer: Hashable, Sendable {
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
    /// SHA-256 of the server's certificate, for servers whose CA is not
    /// among the system's (a domestic CA, a self-signed test server): that
    /// certificate exactly, whoever signed it.
    public var pin: [UInt8]?

    public init(host: String, port: Int, security: Security, serverName: String? = nil, pin: [UInt8]? = nil) {
        self.host = host
        self.port = port
        self.security = security
        self.serverName = serverName
        self.pin = pin
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

    /// How long a read may wait before the connection counts as dead.
    public static let readTimeout: TimeAmount = .seconds(120)

    private init(channel: Channel, inbound: NIOAsyncChannelInboundStream<ByteBuffer>, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, tls: TLSClient) {
        self.channel = channel
        self.inbound = inbound.makeAsyncIterator()
        self.outbound = outbound
        self.tls = tls
    }

    /// Connects (with TLS first for `.tls`), runs `body`, then closes.
    public static func withConnection<T>(to server: MailServer, readTimeout: TimeAmount = MailSocket.readTimeout,
                                         group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                                         _ body: (MailSocket) async throws -> T) async throws -> T {
        let tls: TLSClient
        do {
            tls = try TLSClient(serverName: server.certificateName, check: CertificateCheck(pin: server.pin, allowInsecure: false), alpn: [])
        } catch {
            throw MailError(.security, "TLS could not be set up for \(server.host): \(error)")
        }
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.so_keepalive), value: 1)
                .connectTimeout(.seconds(30))
                .connect(host: server.host, port: server.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handlers = channel.pipeline.syncOperations
                        if server.security == .tls { try handlers.addHandler(try tls.makeHandler()) }
                        try handlers.addHandler(IdleStateHandler(readTimeout: readTimeout))
                        try handlers.addHandler(ReadTimeoutCloser(timeout: readTimeout))
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw MailError(.transient, "could not reach the mail server \(server.host):\(server.port) (\(privacySafeReason(error))): check the address and port, or try again later")
        }
        return try await channel.executeThenClose { inbound, outbound in
            let socket = MailSocket(channel: channel.channel, inbound: inbound, outbound: outbound, tls: tls)
            return try await body(socket)
        }
    }

    /// The next bytes from the server; nil when it closed the connection.
    public func read() async throws -> ByteBuffer? {
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
