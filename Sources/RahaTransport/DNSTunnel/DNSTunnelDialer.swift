import NIOCore
import NIOPosix
import RahaWire

/// Opens streams through a DNS tunnel: a multiplexed connection per event
/// loop, each a tunnel session that reaches the bridge only through a
/// recursive resolver (`dns://` keys).
public final class DNSTunnelDialer: StreamDialer {
    public let key: DNSTunnelKey
    private let pool: MuxPool

    /// `handshakeTimeout`: how long the bridge may take to answer the first
    /// message through the resolver before the dial fails.
    public init(key: DNSTunnelKey, handshakeTimeout: TimeAmount = .seconds(20)) {
        self.key = key
        // No padding: every byte costs queries here.
        let configuration = MuxHandler.Configuration(padding: .off)
        pool = MuxPool(configuration: configuration) { eventLoop in
            DNSTunnelClient.open(key: key, on: eventLoop, handshakeTimeout: handshakeTimeout).map { channel in
                // A bridge that tells its clients apart reads who this is before anything else.
                if let id = key.clientID { channel.writeAndFlush(ByteBuffer(bytes: id), promise: nil) }
                return channel
            }
        }
    }

    public var label: String { "DNS tunnel via \(key.zone.displayText)" }

    public func dial(_ target: Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<Channel> {
        pool.openStream(to: target, on: eventLoop)
    }

    public func associate(on eventLoop: EventLoop, receive: @escaping @Sendable (Endpoint, ByteBuffer) -> Void) -> EventLoopFuture<PacketAssociation> {
        eventLoop.makeFailedFuture(WireError.unsupported("UDP does not go through the DNS tunnel: use a TCP application, or another key for UDP"))
    }
}

/// The client end of one tunnel session: sends the session's segments in
/// queries to the resolver and feeds the answers back. Lives until the
/// session is over; used only on its event loop.
final class DNSTunnelClient {
    private let key: DNSTunnelKey
    private let eventLoop: EventLoop
    private let session: TunnelSession
    private var transport: ResolverTransport?
    private struct Query {
        var labels: [[UInt8]]
        var sentAt: Duration
        /// Sent once the session was established (or carrying the handshake):
        /// an empty answer to it means the bridge does not know the session.
        var counts: Bool
    }
    private var outstanding: [UInt16: Query] = [:]
    private var timer: Scheduled<Void>?
    private var established: EventLoopPromise<Channel>?
    /// The largest answer asked for: lowered when answers come back truncated.
    private var downstreamLimit = Int(EDNS.defaultUDPPayloadSize)
    private let upstreamBudget: Int
    private var finished = false

    /// How long an unanswered query is remembered (answers after that are dropped).
    static let queryLifetime: Duration = .seconds(30)
    /// Queries waiting for an answer at most (the server holds polls until it
    /// has data); one sent longer ago than `inFlightLifetime` counts as lost.
    static let maximumInFlight = 32
    static let inFlightLifetime: Duration = .seconds(2)

    private init(key: DNSTunnelKey, eventLoop: EventLoop) throws {
        self.key = key
        self.eventLoop = eventLoop
        var configuration = ARQConnection.Configuration()
        configuration.rateLimit = key.shaping.queriesPerSecond
        // Poll again soon after anything arrives (the bridge holds a poll until it has data,
        // so an answer comes as soon as there is one); idle polls still back off to 2 s.
        configuration.polling.minimumInterval = .milliseconds(5)
        let arq = ARQConnection(session: UInt64.random(in: 1...UInt64.max), role: .client, configuration: configuration)
        let noise = try NoiseStream(role: .initiator(responderStatic: key.publicKey), prologue: TunnelSession.prologue(zone: key.zone))
        session = TunnelSession(channel: TunnelChannel(eventLoop: eventLoop), arq: arq, noise: noise)
        // The first byte of each query's payload asks for an answer size; DNSTunnelKey
        // checked that the rest holds the ARQ header and the whole first handshake.
        upstreamBudget = DNSTunnelCodec.upstreamCapacity(zone: key.zone, shaping: key.shaping) - 1
    }

    /// A tunnel session whose Noise handshake completed, as the channel that carries it.
    static func open(key: DNSTunnelKey, on eventLoop: EventLoop, handshakeTimeout: TimeAmount) -> EventLoopFuture<Channel> {
        eventLoop.flatSubmit {
            let client: DNSTunnelClient
            do {
                client = try DNSTunnelClient(key: key, eventLoop: eventLoop)
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
            return client.start(handshakeTimeout: handshakeTimeout)
        }
    }

    private func start(handshakeTimeout: TimeAmount) -> EventLoopFuture<Channel> {
        let promise = eventLoop.makePromise(of: Channel.self)
        established = promise
        let opened: EventLoopFuture<ResolverTransport>
        let receive: ([UInt8]) -> Void = { [self] bytes in received(bytes) }
        do {
            switch key.resolver {
            case .system:
                opened = UDPResolverTransport.open(to: try systemResolverAddress(), on: eventLoop, receive: receive)
            case .udp(let endpoint):
                opened = UDPResolverTransport.open(to: try endpoint.socketAddress(), on: eventLoop, receive: receive)
            case .tcp(let endpoint):
                opened = eventLoop.makeSucceededFuture(TCPResolverTransport(resolver: try endpoint.socketAddress(), on: eventLoop, receive: receive))
            case .dot(let endpoint, let serverName):
                let tls = try TLSClient(serverName: serverName, check: .system, alpn: [])
                opened = eventLoop.makeSucceededFuture(TCPResolverTransport(resolver: try endpoint.socketAddress(), tls: tls, on: eventLoop, receive: receive))
            case .doh(let url):
                opened = eventLoop.makeSucceededFuture(try DoHResolverTransport(url: url, on: eventLoop, receive: receive))
            }
        } catch {
            established = nil
            promise.fail(error)
            return promise.futureResult
        }
        opened.whenComplete { [self] result in
            switch result {
            case .success(let transport):
                self.transport = transport
                session.wake = { [weak self] in self?.drive() }
                session.start()
                session.channel.closeFuture.whenComplete { [self] _ in drive() }
                drive()
            case .failure(let error):
                fail(error)
            }
        }
        eventLoop.scheduleTask(in: handshakeTimeout) { [self] in
            guard established != nil else { return }
            fail(DNSTunnelError("the bridge did not answer through the resolver in \(handshakeTimeout.nanoseconds / 1_000_000_000) s: the resolver may block the zone, or the key's zone or public key is wrong"))
        }.futureResult.whenComplete { _ in }
        return promise.futureResult
    }

    private func fail(_ error: Error) {
        if let established {
            self.established = nil
            established.fail(error)
        }
        session.abort(error)
        finish()
    }

    /// Sends whatever the session has due, then sleeps until its next deadline.
    private func drive() {
        guard !finished, let transport else { return }
        let now = TunnelSession.now()
        if let promise = established, session.isEstablished {
            established = nil
            promise.succeed(session.channel)
        }
        outstanding = outstanding.filter { now - $0.value.sentAt < Self.queryLifetime }
        let limit = min(downstreamLimit, transport.responseLimit)
        var inFlight = outstanding.values.filter { now - $0.sentAt < Self.inFlightLifetime }.map(\.sentAt).sorted()
        var sentData = false
        while inFlight.count < Self.maximumInFlight, let segment = session.nextSegment(now: now, budget: upstreamBudget) {
            // Until the bridge acknowledged the handshake it knows no session: polls would only get empty answers.
            guard bridgeKnowsSession || !segment.isAckOnly else { continue }
            send(segment, responseLimit: limit, via: transport)
            inFlight.append(now)
            sentData = sentData || segment.carriesData
        }
        // Data went up (a request, say): a poll goes with it, so the bridge holds a
        // query to carry the reply as soon as there is one.
        if sentData, bridgeKnowsSession, inFlight.count < Self.maximumInFlight,
           let poll = session.poll(now: now, budget: upstreamBudget) {
            send(poll, responseLimit: limit, via: transport)
            inFlight.append(now)
        }
        if session.isFinished {
            if let established {
                self.established = nil
                established.fail(DNSTunnelError.sessionReset)
            }
            finish()
            return
        }
        timer?.cancel()
        timer = nil
        if var deadline = session.arq.nextDeadline() {
            // With every slot taken, the next send waits for an answer (which drives) or the oldest query's expiry.
            if inFlight.count >= Self.maximumInFlight { deadline = max(deadline, inFlight[0] + Self.inFlightLifetime) }
            let wait = max(.zero, deadline - now)
            timer = eventLoop.scheduleTask(in: .nanoseconds(wait.nanosecondsClamped + 1)) { [self] in drive() }
        }
    }

    /// The bridge has the session: the handshake completed, or everything sent so far (the first message) was acknowledged.
    private var bridgeKnowsSession: Bool { session.isEstablished || session.arq.bufferedBytes == 0 }

    private func send(_ segment: ARQSegment, responseLimit: Int, via transport: ResolverTransport) {
        // First byte: the largest answer this end takes, in units of 16 bytes.
        let payload = [UInt8(min(responseLimit / 16, 255))] + segment.encoded()
        var id = UInt16.random(in: 0...UInt16.max)
        while outstanding[id] != nil { id = UInt16.random(in: 0...UInt16.max) }
        guard let query = try? DNSTunnelCodec.query(payload: payload, zone: key.zone, shaping: key.shaping, id: id,
                                                     udpPayloadSize: UInt16(min(responseLimit, Int(UInt16.max)))),
              let bytes = try? query.serialize() else { return }
        outstanding[id] = Query(labels: query.questions[0].name.labels, sentAt: TunnelSession.now(),
                                counts: session.isEstablished || segment.carriesData)
        transport.send(bytes)
    }

    private func received(_ bytes: [UInt8]) {
        guard !finished, let message = try? DNSMessage(parsing: bytes), message.isResponse,
              let entry = outstanding[message.id], message.questions.first?.name.labels == entry.labels else { return }
        outstanding[message.id] = nil
        if message.truncated {
            downstreamLimit = max(256, downstreamLimit * 3 / 4)
            return
        }
        guard let payload = DNSTunnelCodec.payload(ofResponse: message),
              let segment = try? ARQSegment(decoding: payload) else {
            if message.rcode == .noError && message.answers.isEmpty && entry.counts {
                // The zone's server answered as for any name: it does not know this
                // session (wrong key or zone, or the bridge restarted and forgot it).
                fail(established != nil ? DNSTunnelError.refused : DNSTunnelError.sessionReset)
            }
            return
        }
        session.receive(segment, now: TunnelSession.now())
        drive()
    }

    private func finish() {
        guard !finished else { return }
        finished = true
        timer?.cancel()
        timer = nil
        transport?.close()
        transport = nil
        session.wake = {}
    }
}

extension Duration {
    /// Whole nanoseconds, clamped to Int64.
    public var nanosecondsClamped: Int64 {
        let (seconds, attoseconds) = components
        if seconds > Int64.max / 1_000_000_000 - 1 { return Int64.max }
        if seconds < 0 { return 0 }
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

extension Endpoint {
    /// The address of an IP literal endpoint (names are refused: nothing
    /// resolves them before the tunnel exists).
    func socketAddress() throws -> SocketAddress {
        if case .domain(let name) = host {
            throw WireError.badKey("resolver “\(name)” is a name: give the resolver's IP address")
        }
        return try SocketAddress(ipAddress: hostText, port: Int(port))
    }
}
