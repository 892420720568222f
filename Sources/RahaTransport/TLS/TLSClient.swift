import Crypto
import Foundation
import NIOCore
import NIOSSL
import NIOTLS
import RahaWire

/// How a client checks the bridge's certificate.
public enum CertificateCheck: Sendable, Equatable {
    /// The system's CAs (or `SSL_CERT_FILE`'s) and the server name (the
    /// default); the chain alone when there is no name to check.
    case system
    /// Exactly this certificate: SHA-256 of its DER, whatever signed it.
    case pinned([UInt8])
    /// None at all (`allowInsecure=1` without a pin): anyone on the path can
    /// read and change the stream.
    case none

    public init(pin: [UInt8]?, allowInsecure: Bool) {
        if let pin { self = .pinned(pin) } else if allowInsecure { self = .none } else { self = .system }
    }
}

/// A client TLS setup: one context shared by every connection of a key.
public struct TLSClient: @unchecked Sendable {
    public let context: NIOSSLContext
    public let serverName: String?
    public let check: CertificateCheck

    public init(serverName: String?, check: CertificateCheck, alpn: [String]) throws {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = alpn
        switch check {
        case .system:
            configuration.certificateVerification = serverName == nil ? .noHostnameVerification : .fullVerification
            // As OpenSSL and curl do: SSL_CERT_FILE names the CA file to trust instead of the system's.
            if let file = ProcessInfo.processInfo.environment["SSL_CERT_FILE"], !file.isEmpty {
                configuration.trustRoots = .file(file)
            }
        // The callback replaces chain and name checks; the pin is the check.
        case .pinned: configuration.certificateVerification = .noHostnameVerification
        case .none: configuration.certificateVerification = .none
        }
        self.context = try NIOSSLContext(configuration: configuration)
        self.serverName = serverName
        self.check = check
    }

    /// The TLS handler for one connection.
    public func makeHandler() throws -> NIOSSLClientHandler {
        guard case .pinned(let pin) = check else {
            return try NIOSSLClientHandler(context: context, serverHostname: serverName)
        }
        return try NIOSSLClientHandler(context: context, serverHostname: serverName) { chain, promise in
            guard let leaf = chain.first, let der = try? leaf.toDERBytes(),
                  constantTimeEquals(Array(SHA256.hash(data: der)), pin) else {
                promise.succeed(.failed)
                return
            }
            promise.succeed(.certificateVerified)
        }
    }
}

/// Says when the TLS handshake below it has finished (`completed`), or
/// why the connection ended first; then steps aside.
public final class TLSHandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = NIOAny
    private var promise: EventLoopPromise<Void>?
    /// Set once the handler is in a pipeline.
    public private(set) var completed: EventLoopFuture<Void>!

    public init() {}

    public func handlerAdded(context: ChannelHandlerContext) {
        let promise = context.eventLoop.makePromise(of: Void.self)
        self.promise = promise
        completed = promise.futureResult
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        promise?.fail(WireError.handshakeFailed("the connection closed during the TLS handshake"))
        promise = nil
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            promise?.succeed(())
            promise = nil
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise?.fail(error)
        promise = nil
        context.fireErrorCaught(error)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        promise?.fail(WireError.handshakeFailed("the server closed the connection during the TLS handshake"))
        promise = nil
        context.fireChannelInactive()
    }
}

/// Sits below TLS on the socket side and re-frames the ClientHello so a
/// middlebox reading one TLS record or one TCP segment at a time never sees
/// the server name whole: the ClientHello record becomes several records,
/// written as several TCP segments (each flushed alone, TCP_NODELAY on), of
/// sizes drawn from `sizes`. Every later write passes through untouched.
public final class ClientHelloFragmentingHandler: ChannelOutboundHandler, RemovableChannelHandler {
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private let sizes: ClosedRange<Int>
    private var done = false

    public init(sizes: ClosedRange<Int>) { self.sizes = sizes }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !done else { return context.write(data, promise: promise) }
        let bytes = Array(unwrapOutboundIn(data).readableBytesView)
        guard bytes.first == 0x16 else { return context.write(data, promise: promise) }
        done = true
        var rng = SystemRandomNumberGenerator()
        let recordSizes = (0..<8).map { _ in Int.random(in: sizes, using: &rng) }
        let reframed = ClientHelloFragmenter.splitRecords(bytes, sizes: recordSizes)
        // Only the part up to just past the server name is cut small (the
        // record headers added before it are at most 5 bytes each); the rest,
        // mostly key shares, goes whole.
        let nameEnd = ClientHelloFragmenter.serverNameRange(in: bytes)?.upperBound ?? recordSizes.reduce(5, +)
        let cutLength = min(reframed.count, nameEnd + 5 * (recordSizes.count + 2) + sizes.upperBound)
        var segments = ClientHelloFragmenter.segments(Array(reframed[..<cutLength]), sizes: sizes, using: &rng)
        if cutLength < reframed.count { segments.append(Array(reframed[cutLength...])) }
        for (index, segment) in segments.enumerated() {
            let last = index == segments.count - 1
            context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: segment)), promise: last ? promise : nil)
            // Flushing each alone makes each its own TCP segment.
            context.flush()
        }
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }
}
