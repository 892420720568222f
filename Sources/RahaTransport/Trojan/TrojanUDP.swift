import NIOCore
import RahaWire

/// The client's side of a Trojan UDP connection, on the plaintext side of
/// TLS (or WebSocket).
///
/// `Trojan.UDPFrame`s written to it go out as frames, the first one right
/// after the UDP ASSOCIATE header, in the same write. The header names the
/// first datagram's destination, as v2ray's client does (servers ignore it:
/// every frame names its own). Frames from the server, each carrying the
/// source of a reply, are handed to `receive`. A datagram larger than
/// `Trojan.maxUDPPayload` is dropped (its promise fails); a malformed frame
/// from the server closes the connection.
public final class TrojanUDPClientHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundIn = Trojan.UDPFrame
    public typealias OutboundOut = ByteBuffer

    private let passwordHash: [UInt8]
    private let receive: @Sendable (Endpoint, ByteBuffer) -> Void
    private var headerSent = false
    private var cutter = Trojan.UDPFrameCutter()

    public init(password: String, receive: @escaping @Sendable (Endpoint, ByteBuffer) -> Void) {
        self.passwordHash = Trojan.passwordHash(password)
        self.receive = receive
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = unwrapOutboundIn(data)
        guard frame.payload.readableBytes <= Trojan.maxUDPPayload else {
            promise?.fail(WireError.unsupported("a datagram of \(frame.payload.readableBytes) bytes is larger than a Trojan UDP frame carries (\(Trojan.maxUDPPayload))"))
            return
        }
        var out = context.channel.allocator.buffer(capacity: Trojan.maxHeaderLength + 263 + frame.payload.readableBytes)
        if !headerSent {
            headerSent = true
            Trojan.writeHeader(passwordHash: passwordHash, request: .init(command: .udpAssociate, destination: frame.endpoint), to: &out)
        }
        frame.write(to: &out)
        context.write(wrapOutboundOut(out), promise: promise)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        cutter.append(unwrapInboundIn(data))
        do {
            while let frame = try cutter.next() {
                receive(frame.endpoint, frame.payload)
            }
        } catch {
            cutter = Trojan.UDPFrameCutter()
            context.close(promise: nil)
        }
    }
}

/// A UDP association through a Trojan server, on a Trojan connection of its
/// own (never a multiplexed one). `send` frames a datagram onto the
/// connection, or drops it when the connection is not writable (it is UDP:
/// nothing queues behind a slow link). If the server closes the connection
/// (its idle timeout), the next datagram opens a new one, and the few sent
/// while it opens wait for it. All state lives on the event loop.
final class TrojanPacketAssociation: PacketAssociation, @unchecked Sendable {
    typealias Open = @Sendable (EventLoop) -> EventLoopFuture<Channel>

    /// Datagrams held while a new connection opens; more are dropped.
    static let maxQueued = 16

    private enum State {
        case connected(Channel)
        case connecting(queued: [Trojan.UDPFrame])
        case disconnected
        case closed
    }

    private let eventLoop: EventLoop
    private let open: Open
    private var state: State

    private init(eventLoop: EventLoop, open: @escaping Open) {
        self.eventLoop = eventLoop
        self.open = open
        self.state = .disconnected
    }

    /// Opens the first connection; the association is returned once TLS (and
    /// WebSocket) are up, so a server that cannot be reached fails here.
    static func start(on eventLoop: EventLoop, open: @escaping Open) -> EventLoopFuture<PacketAssociation> {
        let association = TrojanPacketAssociation(eventLoop: eventLoop, open: open)
        return open(eventLoop).hop(to: eventLoop).map { channel in
            association.adopt(channel)
            return association
        }
    }

    func send(_ payload: ByteBuffer, to target: Endpoint) {
        guard payload.readableBytes <= Trojan.maxUDPPayload else { return }
        let frame = Trojan.UDPFrame(endpoint: target, payload: payload)
        if eventLoop.inEventLoop {
            sendOnLoop(frame)
        } else {
            eventLoop.execute { self.sendOnLoop(frame) }
        }
    }

    func close() {
        if eventLoop.inEventLoop {
            closeOnLoop()
        } else {
            eventLoop.execute { self.closeOnLoop() }
        }
    }

    private func sendOnLoop(_ frame: Trojan.UDPFrame) {
        switch state {
        case .connected(let channel):
            if channel.isWritable { channel.writeAndFlush(frame, promise: nil) }
        case .connecting(var queued):
            guard queued.count < Self.maxQueued else { return }
            queued.append(frame)
            state = .connecting(queued: queued)
        case .disconnected:
            state = .connecting(queued: [frame])
            open(eventLoop).hop(to: eventLoop).whenComplete { result in self.opened(result) }
        case .closed:
            return
        }
    }

    private func opened(_ result: Result<Channel, Error>) {
        switch (state, result) {
        case (.connecting(let queued), .success(let channel)):
            adopt(channel)
            for frame in queued { channel.write(frame, promise: nil) }
            channel.flush()
        case (.connecting, .failure):
            state = .disconnected // the datagrams are lost; the next one tries again
        case (_, .success(let channel)):
            channel.close(promise: nil)
        case (_, .failure):
            break
        }
    }

    private func adopt(_ channel: Channel) {
        guard case .closed = state else {
            state = .connected(channel)
            channel.closeFuture.hop(to: eventLoop).whenComplete { _ in
                if case .connected(let current) = self.state, current === channel { self.state = .disconnected }
            }
            return
        }
        channel.close(promise: nil)
    }

    private func closeOnLoop() {
        if case .connected(let channel) = state { channel.close(promise: nil) }
        state = .closed
    }
}
