import NIOCore
import NIOPosix
import NIOSSL
import RahaWire

/// A small HTTP/1.1 GET client for online configurations: one request per
/// connection, TLS checked against the system's CAs and the host name, a
/// deadline for the whole fetch, a cap on the body, up to `maxRedirects`
/// redirects. Errors name the address without its path or query
/// (`WebURL.redacted`), which often carry secrets.
public struct WebFetcher: Sendable {
    public var deadline: TimeAmount
    public var maxBodyBytes: Int
    public var maxRedirects: Int
    /// Overrides the system CAs (tests); nil means the system's.
    public var trustRoots: NIOSSLTrustRoots?
    /// What is fetched, for error messages ("online config", "page").
    public var what = "online config"
    /// When set, the server's name is resolved first and the connection made
    /// only to an address this allows (for each redirect too): a gateway
    /// fetching for others keeps off private and loopback addresses,
    /// including names that resolve to them.
    public var addressFilter: (@Sendable (SocketAddress) -> Bool)?

    public init(deadline: TimeAmount = .seconds(10), maxBodyBytes: Int = 64 * 1024, maxRedirects: Int = 3,
                trustRoots: NIOSSLTrustRoots? = nil) {
        self.deadline = deadline
        self.maxBodyBytes = maxBodyBytes
        self.maxRedirects = maxRedirects
        self.trustRoots = trustRoots
    }

    /// The body of a 2xx answer to GET `url`. Throws a `WireError` whose
    /// sentence starts with the redacted address.
    public func get(_ url: WebURL, group: EventLoopGroup) async throws -> [UInt8] {
        try await getWithType(url, group: group).body
    }

    /// The body of a 2xx answer and its Content-Type (for the charset).
    public func getWithType(_ url: WebURL, group: EventLoopGroup) async throws -> (body: [UInt8], contentType: String?) {
        var current = url
        var redirects = 0
        let deadline = NIODeadline.now() + self.deadline
        while true {
            let response: WebResponseReader.Response
            do {
                var address: SocketAddress?
                if let addressFilter {
                    let resolved = try SocketAddress.makeAddressResolvingHost(current.server.hostText, port: Int(current.server.port))
                    guard addressFilter(resolved) else {
                        throw WireError(.refused, "its address is private or local, which is not fetched here")
                    }
                    address = resolved
                }
                response = try await once(current, address: address, group: group, deadline: deadline).get()
            } catch let error as WireError {
                throw WireError(error.code, "\(what) \(current.redacted): \(error.reason)")
            } catch {
                throw WireError(.handshake, "\(what) \(current.redacted): \(WebFetcher.describe(error))")
            }
            switch response.status {
            case 200..<300:
                return (response.body, response.contentType)
            case 301, 302, 303, 307, 308:
                guard let location = response.location else {
                    throw WireError(.refused, "\(what) \(current.redacted): HTTP \(response.status) without a Location")
                }
                redirects += 1
                guard redirects <= maxRedirects else {
                    throw WireError(.refused, "\(what) \(url.redacted): more than \(maxRedirects) redirects")
                }
                do { current = try current.following(location: location) } catch {
                    throw WireError(.refused, "\(what) \(current.redacted): \(error)")
                }
            default:
                throw WireError(.refused, "\(what) \(current.redacted): HTTP \(response.status)")
            }
        }
    }

    private func once(_ url: WebURL, address: SocketAddress?, group: EventLoopGroup, deadline: NIODeadline) -> EventLoopFuture<WebResponseReader.Response> {
        let eventLoop = group.next()
        let promise = eventLoop.makePromise(of: WebResponseReader.Response.self)
        let timeout = eventLoop.scheduleTask(deadline: deadline) {
            promise.fail(WireError(.handshake, "no complete answer within \(self.deadline.nanoseconds / 1_000_000_000) s"))
        }
        promise.futureResult.whenComplete { _ in timeout.cancel() }
        let tls: NIOSSLClientHandler?
        do {
            tls = try url.secure ? makeTLSHandler(for: url) : nil
        } catch {
            promise.fail(error)
            return promise.futureResult
        }
        let reader = WebResponseHandler(reader: WebResponseReader(maxBodyBytes: maxBodyBytes), promise: promise)
        let remaining = deadline - .now()
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(max(.milliseconds(1), remaining))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(tls) }
                    try channel.pipeline.syncOperations.addHandler(reader)
                }
            }
        let connected = address.map { bootstrap.connect(to: $0) } ?? bootstrap.connect(host: url.server.hostText, port: Int(url.server.port))
        connected
            .whenComplete { result in
                switch result {
                case .failure(let error): promise.fail(error)
                case .success(let channel):
                    promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
                    channel.writeAndFlush(url.request, promise: nil)
                }
            }
        return promise.futureResult
    }

    private func makeTLSHandler(for url: WebURL) throws -> NIOSSLClientHandler {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .fullVerification
        if let trustRoots { configuration.trustRoots = trustRoots }
        let name: String? = if case .domain(let host) = url.server.host { host } else { nil }
        return try NIOSSLClientHandler(context: NIOSSLContext(configuration: configuration), serverHostname: name)
    }

    private static func describe(_ error: Error) -> String {
        if isTLSFailure(error) {
            return "the TLS handshake failed (the certificate is not trusted or not for this host)"
        }
        if let error = error as? IOError { return "cannot connect (error \(error.errnoCode))" }
        if error is ChannelError { return "cannot connect (\(error))" }
        if error is NIOConnectionError || error is SocketAddressError { return "cannot connect: the name does not resolve or no address answers" }
        return "\(error)"
    }
}

/// Feeds a connection's bytes to a `WebResponseReader` and completes the promise.
private final class WebResponseHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    private var reader: WebResponseReader
    private let promise: EventLoopPromise<WebResponseReader.Response>

    init(reader: WebResponseReader, promise: EventLoopPromise<WebResponseReader.Response>) {
        self.reader = reader
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        do {
            if let response = try reader.receive(&bytes) { promise.succeed(response) }
        } catch {
            promise.fail(error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.completeWith(Result { try reader.endOfInput() })
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A server that closes without close_notify after a complete body is common.
        if let error = error as? NIOSSLError, case .uncleanShutdown = error { return }
        promise.fail(error)
        context.close(promise: nil)
    }
}
