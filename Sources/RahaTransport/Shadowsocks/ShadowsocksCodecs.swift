import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RahaWire

/// Seconds since the Unix epoch, as the 2022 headers carry it.
@inline(__always) public func unixNow() -> UInt64 { UInt64(Date().timeIntervalSince1970) }

/// Told to the next handler once the client's request header has been decoded.
public struct ProxyRequestEvent: Sendable {
    public let target: Endpoint
}

/// The bridge's Shadowsocks codec: ciphertext from the client in, plaintext
/// out to the next handler (after a `ClientAuthenticatedEvent` and a
/// `ProxyRequestEvent`); plaintext written by the exit is sealed back to the
/// client.
///
/// Several clients may share the listener (a share node's circle): the one
/// whose key opens the stream's first chunk is the one who connected.
///
/// Probe policy: whatever goes wrong before a valid, fresh request (wrong
/// key, garbage, truncation, replay, stale clock), the connection behaves
/// exactly like a healthy one waiting for more data: it keeps reading and
/// discarding, never writes, and is closed by the listener's handshake
/// deadline (`HandshakeGuard`) or idle timeout, or when the peer closes. A
/// prober learns nothing from lengths or timing.
public final class ShadowsocksServerCodec: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    /// The roster's clients when the connection opened, until one is identified.
    private var candidates: [ClientRoster.Client]
    private var session: ShadowsocksServerSession?
    /// The stream's first bytes, while the client is not yet identified.
    private var start = ByteBuffer()
    private let replayFilter: SharedReplayFilter
    private var logger: Logger
    private var draining = false
    private var established = false

    public init(roster: ClientRoster, replayFilter: SharedReplayFilter, logger: Logger) {
        self.candidates = roster.shadowsocks
        if candidates.count == 1 { session = ShadowsocksServerSession(credential: candidates[0].shadowsocks!) }
        self.replayFilter = replayFilter
        self.logger = logger
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !draining else { return }
        var input = unwrapInboundIn(data)
        var plain = context.channel.allocator.buffer(capacity: input.readableBytes)
        do {
            if session == nil {
                start.writeBuffer(&input)
                switch ShadowsocksUserMatch.identify(candidates.map { $0.shadowsocks! }, start: start) {
                case .needMoreData: return
                case .nobody: throw WireError(.authentication, "no client's key opens the stream")
                case .user(let index):
                    session = ShadowsocksServerSession(credential: candidates[index].shadowsocks!)
                    candidates = [candidates[index]]
                    input = start
                    start = ByteBuffer()
                }
            }
            if let request = try session!.receive(&input, payload: &plain, now: unixNow()) {
                guard replayFilter.insert(request.salt) else {
                    throw WireError(.replay, "a replayed request salt")
                }
                established = true
                context.fireUserInboundEventTriggered(ClientAuthenticatedEvent(clientID: candidates[0].id))
                context.fireUserInboundEventTriggered(ProxyRequestEvent(target: request.target))
            }
        } catch {
            // Never answer; keep reading until the handshake deadline or the peer closes.
            logger.debug("rejected a connection that is not a valid, fresh request", metadata: ["code": "\((error as? WireError)?.code.rawValue ?? "io")"])
            draining = true
            start = ByteBuffer()
            if established { context.close(promise: nil) }
            return
        }
        if plain.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(plain)) }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        if established && !draining { context.fireChannelReadComplete() }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event, !established {
            // The peer closed before a valid request: close as for any idle failure.
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let plain = unwrapOutboundIn(data)
        var out = context.channel.allocator.buffer(capacity: plain.readableBytes + plain.readableBytes / 512 + 128)
        // The exit writes only after the request, so the client is known.
        session!.seal(plain.readableBytesView, into: &out, now: unixNow())
        context.write(wrapOutboundOut(out), promise: promise)
    }
}

/// The client's Shadowsocks codec on a connection to a bridge: plaintext
/// written to it is sealed (the first write carries salt and target header);
/// ciphertext read from the bridge is opened and passed on as plaintext.
/// A `FirstWriteDeadline` after it makes the header go out alone when the
/// application is slow to speak.
public final class ShadowsocksClientCodec: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private var session: ShadowsocksClientSession
    private let replayFilter: SharedReplayFilter?
    private var failed = false
    private var responseSaltChecked = false

    /// - Parameter replayFilter: for 2022 methods, the dialer's filter of
    ///   response salts (SIP022 asks clients to refuse replayed responses too).
    public init(credential: ShadowsocksCredential, target: Endpoint, prefix: [UInt8], replayFilter: SharedReplayFilter? = nil) {
        self.session = ShadowsocksClientSession(credential: credential, target: target, prefix: prefix)
        self.replayFilter = replayFilter
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        var input = unwrapInboundIn(data)
        var plain = context.channel.allocator.buffer(capacity: input.readableBytes)
        do {
            try session.receive(&input, payload: &plain, now: unixNow())
            if !responseSaltChecked, let filter = replayFilter, let salt = session.responseSalt {
                responseSaltChecked = true
                guard filter.insert(salt) else { throw WireError(.replay, "the bridge's response was a replay") }
            }
        } catch {
            failed = true
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        if plain.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(plain)) }
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let plain = unwrapOutboundIn(data)
        var out = context.channel.allocator.buffer(capacity: plain.readableBytes + plain.readableBytes / 512 + 1100)
        session.seal(plain.readableBytesView, into: &out, now: unixNow())
        context.write(wrapOutboundOut(out), promise: promise)
    }
}
