import Logging
import NIOCore
import NIOPosix
import RahaTransport
import RahaWire

/// A DNS tunnel listener: the authoritative server for `zone` on UDP and
/// TCP at one address (`dns://ZONE@ADDR:PORT` on the command line).
public struct DNSTunnelListener: Sendable {
    public var zone: DNSName
    public var address: SocketAddress
    public var keyPair: NoiseKeyPair
    /// How long a query that only polls may wait for data before it is answered
    /// empty. Kept under the resolver's shortest retry timeout (unbound's is
    /// 50 ms): a resolver that times out retries, backs off the server and in
    /// the end answers SERVFAIL, which stalls the tunnel.
    public var hold: TimeAmount

    public init(zone: DNSName, address: SocketAddress, keyPair: NoiseKeyPair, hold: TimeAmount = .milliseconds(30)) {
        self.zone = zone
        self.address = address
        self.keyPair = keyPair
        self.hold = hold
    }
}

/// The bridge end of DNS tunnels. Every query is answered as an
/// authoritative server would: tunnel queries with TXT records carrying the
/// session's segments, everything else (probes, qname-minimisation steps,
/// SOA and NS questions, queries with bad data) with an empty NOERROR and
/// the zone's SOA. Unparseable datagrams are dropped, as by most servers.
///
/// All sessions live on one event loop. A query that only polls is held
/// for up to `hold` waiting for data, so downstream data goes out as soon as
/// it exists rather than at the client's next poll.
final class DNSTunnelServer {
    private let listener: DNSTunnelListener
    private let eventLoop: EventLoop
    private let exit: Exit
    /// A share node's circle: each session first names its invitee.
    private let share: ShareLedger?
    private let logger: Logger
    private var sessions: [UInt64: Entry] = [:]
    private var sweeper: RepeatedTask?
    private(set) var channels: [Channel] = []

    /// Most sessions at once; more new ones are answered like strangers.
    static let maximumSessions = 1024
    /// A session that sent no query for this long is dropped.
    static let idleLimit: Duration = .seconds(180)
    /// Queries held per session at most (clients keep fewer outstanding); older ones are answered first.
    static let maximumHeld = 64

    private struct Held {
        var query: DNSMessage
        var limit: Int
        var deadline: Duration
        var reply: ([UInt8]) -> Void
    }

    private final class Entry {
        let session: TunnelSession
        var held: [Held] = []
        var lastSeen: Duration
        var timer: Scheduled<Void>?
        init(session: TunnelSession, lastSeen: Duration) {
            self.session = session
            self.lastSeen = lastSeen
        }
    }

    init(listener: DNSTunnelListener, eventLoop: EventLoop, exit: Exit, share: ShareLedger? = nil, logger: Logger) {
        self.share = share
        self.listener = listener
        self.eventLoop = eventLoop
        self.exit = exit
        self.logger = logger
    }

    /// Binds UDP and TCP on the listener's address (TCP on the port UDP got
    /// when the port is 0); returns the UDP address bound.
    func start(group: EventLoopGroup) async throws -> SocketAddress {
        let udp = try await DatagramBootstrap(group: eventLoop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(UDPQueries(server: self))
                }
            }
            .bind(to: listener.address).get()
        channels.append(udp)
        let bound = udp.localAddress!
        let tcp = try await ServerBootstrap.rahaListener(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        IdleStateHandler(allTimeout: .seconds(30)), IdleCloser(), TCPQueries(server: self),
                    ])
                }
            }
            .bind(to: bound).get()
        channels.append(tcp)
        sweeper = eventLoop.scheduleRepeatedTask(initialDelay: .seconds(10), delay: .seconds(10)) { _ in self.sweep() }
        return bound
    }

    func close() async {
        sweeper?.cancel()
        for channel in channels { try? await channel.close() }
        try? await eventLoop.submit {
            for entry in self.sessions.values { entry.session.abort(DNSTunnelError.sessionReset) }
            self.sessions = [:]
        }.get()
    }

    // MARK: Queries

    /// Handles one query (any loop); `reply` gets the response bytes, or is
    /// never called for garbage. Answers over TCP may take up to 65535 bytes,
    /// over UDP what the query advertised; both at most what the client asked for.
    func handle(_ bytes: [UInt8], tcp: Bool, reply: @escaping ([UInt8]) -> Void) {
        guard eventLoop.inEventLoop else {
            eventLoop.execute { self.handle(bytes, tcp: tcp, reply: reply) }
            return
        }
        guard let query = try? DNSMessage(parsing: bytes), !query.isResponse, query.opcode == 0, query.questions.count == 1 else { return }
        let zone = listener.zone
        // The name decoded in every encoding it spells something in (clients
        // choose theirs); the session a decoding names says which was meant.
        let candidates = DNSTunnelEncoding.allCases.compactMap { encoding -> (payload: [UInt8], segment: ARQSegment)? in
            guard let payload = DNSTunnelCodec.payload(ofQuery: query, zone: zone, encoding: encoding),
                  payload.count > ARQSegment.headerLength,
                  let segment = try? ARQSegment(decoding: Array(payload.dropFirst())) else { return nil }
            return (payload, segment)
        }
        let now = TunnelSession.now()
        var found: (entry: Entry, payload: [UInt8], segment: ARQSegment)?
        if let known = candidates.first(where: { sessions[$0.segment.session] != nil }), let entry = sessions[known.segment.session] {
            entry.session.receive(known.segment, now: now)
            found = (entry, known.payload, known.segment)
        } else {
            for candidate in candidates {
                guard let entry = newSession(for: candidate.segment, now: now) else { continue }
                entry.session.receive(candidate.segment, now: now)
                if entry.session.isEstablished {
                    found = (entry, candidate.payload, candidate.segment)
                    break
                }
                // The first segment carries the whole first handshake message, so a
                // session is either established now or was never one: a stranger
                // (a prober, a wrong key) gets what any other name gets.
                forget(candidate.segment.session)
            }
        }
        guard let (entry, payload, segment) = found else {
            send(DNSTunnelCodec.nonTunnelResponse(to: query, zone: zone), reply: reply)
            return
        }
        entry.lastSeen = now
        let wanted = payload[0] == 0 ? Int.max : Int(payload[0]) * 16
        let limit = min(tcp ? Int(UInt16.max) : query.maxUDPResponseLength, wanted)
        let held = Held(query: query, limit: limit, deadline: now + .nanoseconds(listener.hold.nanoseconds), reply: reply)
        if segment.carriesData || segment.flags.contains(.fin) || segment.flags.contains(.reset) {
            // Data from the client: the ack goes back at once.
            answer(held, entry: entry, now: now)
        } else {
            entry.held.append(held)
        }
        service(entry, now: now)
    }

    private func newSession(for segment: ARQSegment, now: Duration) -> Entry? {
        // Only a session's first segment opens it; late ones of a forgotten session do not.
        guard sessions.count < Self.maximumSessions, !segment.flags.contains(.reset),
              segment.payload.count >= NoiseStream.firstMessageLength,
              segment.sequence == UInt32(truncatingIfNeeded: segment.session) else { return nil }
        let noise: NoiseStream
        do {
            noise = try NoiseStream(role: .responder(listener.keyPair), prologue: TunnelSession.prologue(zone: listener.zone))
        } catch { return nil }
        let channel = TunnelChannel(eventLoop: eventLoop)
        let exit = self.exit, logger = self.logger
        let slot: ShareSlot?
        do { slot = try share.map { try ShareSlot.installed(for: $0, in: channel.pipeline.syncOperations) } } catch { return nil }
        let mux = MuxHandler(role: .server, configuration: MuxHandler.Configuration(padding: .off)) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(BridgeExitHandler(exit: exit, logger: logger, share: slot))
            }
        }
        do {
            if let slot { try channel.pipeline.syncOperations.addHandler(TunnelClientIdentity(slot: slot)) }
            try channel.pipeline.syncOperations.addHandler(mux)
        } catch { return nil }
        let session = TunnelSession(channel: channel, arq: ARQConnection(session: segment.session, role: .server), noise: noise)
        let entry = Entry(session: session, lastSeen: now)
        session.wake = { [weak self, weak entry] in
            guard let self, let entry else { return }
            self.service(entry, now: TunnelSession.now())
        }
        session.start()
        sessions[segment.session] = entry
        logger.debug("DNS tunnel session opened", metadata: ["sessions": "\(sessions.count)"])
        return entry
    }

    /// Answers held queries that have data to carry or waited long enough, and sets the timer for the rest.
    private func service(_ entry: Entry, now: Duration) {
        while !entry.held.isEmpty, entry.session.arq.hasSegmentToSend(now: now) || entry.held.count > Self.maximumHeld || entry.held[0].deadline <= now {
            answer(entry.held.removeFirst(), entry: entry, now: now)
        }
        entry.timer?.cancel()
        entry.timer = nil
        guard let first = entry.held.first else { return }
        var wake = first.deadline
        if let deadline = entry.session.arq.nextDeadline() { wake = min(wake, deadline) }
        let delay = max(.zero, wake - now)
        entry.timer = eventLoop.scheduleTask(in: .nanoseconds(delay.nanosecondsClamped + 1)) { [weak self, weak entry] in
            guard let self, let entry else { return }
            self.service(entry, now: TunnelSession.now())
        }
    }

    private func answer(_ held: Held, entry: Entry, now: Duration) {
        let budget = DNSTunnelCodec.downstreamCapacity(for: held.query, limit: held.limit)
        guard budget >= ARQSegment.headerLength else {
            send(DNSTunnelCodec.nonTunnelResponse(to: held.query, zone: listener.zone), reply: held.reply)
            return
        }
        let segment = entry.session.answer(now: now, budget: budget)
        send(DNSTunnelCodec.response(to: held.query, payload: segment.encoded()), reply: held.reply)
    }

    private func send(_ response: DNSMessage, reply: ([UInt8]) -> Void) {
        guard let bytes = try? response.serialize() else { return }
        reply(bytes)
    }

    private func sweep() {
        let now = TunnelSession.now()
        for (id, entry) in sessions where now - entry.lastSeen > Self.idleLimit || (entry.session.isFinished && entry.held.isEmpty) {
            forget(id)
        }
    }

    private func forget(_ id: UInt64) {
        guard let entry = sessions.removeValue(forKey: id) else { return }
        entry.timer?.cancel()
        if !entry.session.isFinished { entry.session.abort(DNSTunnelError.sessionReset) }
        for held in entry.held { send(DNSTunnelCodec.nonTunnelResponse(to: held.query, zone: listener.zone), reply: held.reply) }
        entry.held = []
    }

    // MARK: Transports

    private final class UDPQueries: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        typealias OutboundOut = AddressedEnvelope<ByteBuffer>
        let server: DNSTunnelServer
        init(server: DNSTunnelServer) { self.server = server }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            let channel = context.channel, source = envelope.remoteAddress
            server.handle(Array(envelope.data.readableBytesView), tcp: false) { bytes in
                channel.writeAndFlush(AddressedEnvelope(remoteAddress: source, data: channel.allocator.buffer(bytes: bytes)), promise: nil)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            // A datagram socket error (ICMP from a client gone away) is no reason to stop serving.
        }
    }

    private final class TCPQueries: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let server: DNSTunnelServer
        var framer = DNSTCPFramer()
        init(server: DNSTunnelServer) { self.server = server }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            framer.append(unwrapInboundIn(data))
            let channel = context.channel
            while let message = framer.nextMessageBytes() {
                server.handle(message, tcp: true) { bytes in
                    var buffer = channel.allocator.buffer(capacity: bytes.count + 2)
                    buffer.writeInteger(UInt16(bytes.count))
                    buffer.writeBytes(bytes)
                    channel.writeAndFlush(buffer, promise: nil)
                }
            }
            if framer.bufferedByteCount > 2 + Int(UInt16.max) { context.close(promise: nil) }
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            context.close(promise: nil)
        }
    }
}
