import NIOCore
import RahaWire

// What a bridge reads from strangers on its public ports, and what a client
// reads back from a bridge (or from a censor in the middle).

private let credentials = Fixtures.shadowsocks
private let now = Fixtures.now

extension FuzzTarget {
    /// A Shadowsocks TCP stream as the bridge reads it (the request) and as
    /// the client reads it (the response). In "sealed" inputs the fuzzer
    /// chooses the plaintext of every chunk, which are then sealed with the
    /// right key, so that what lies behind the AEAD (lengths, the address,
    /// 2022's header) is reached too.
    static let shadowsocksStream = FuzzTarget("shadowsocks-stream", "Shadowsocks AEAD and 2022 stream decoding, bridge and client side", seeds: { Seeds.shadowsocksStream }) { data in
        var input = FuzzInput(data)
        let seed = input.byte()
        let credential = credentials[Int(seed) % credentials.count]
        let method = credential.method
        var stream: [UInt8]
        if seed & 0x10 != 0 {
            let salt = input.take(method.saltLength) + [UInt8](repeating: 0, count: method.saltLength)
            var writer = SealedChunkWriter(credential: credential, salt: Array(salt.prefix(method.saltLength)))
            var out = ByteBuffer(bytes: writer.salt)
            var first = true
            while !input.isEmpty {
                var chunk = input.piece()
                // 2022's fixed header carries a timestamp no fuzzer would guess.
                if first && method.is2022 && seed & 0x20 != 0 && chunk.count >= 9 {
                    chunk.replaceSubrange(1..<9, with: (0..<8).map { UInt8(truncatingIfNeeded: now >> (56 - 8 * $0)) })
                }
                first = false
                writer.sealChunk(chunk, into: &out)
            }
            stream = Array(out.readableBytesView)
        } else {
            stream = input.rest()
        }

        _ = ShadowsocksUserMatch.identify(credentials, start: ByteBuffer(bytes: stream))

        sameInDribbles(stream, seed: seed, "a Shadowsocks request") { serverOutcome(credential, $0) }
        sameInDribbles(stream, seed: seed, "a Shadowsocks response") { clientOutcome(credential, $0) }
    }

    /// Shadowsocks UDP packets (legacy and 2022, both directions): garbage,
    /// legacy packets sealed around a body the fuzzer chose, and a datagram
    /// the fuzzer describes sealed and opened again.
    static let shadowsocksPacket = FuzzTarget("shadowsocks-packet", "Shadowsocks AEAD and 2022 UDP packets", seeds: { Seeds.shadowsocksPacket }) { data in
        var input = FuzzInput(data)
        let seed = input.byte()
        let credential = credentials[Int(seed) % credentials.count]
        let direction: ShadowsocksUDP.Direction = seed & 0x10 == 0 ? .clientToServer : .serverToClient
        var cache = ShadowsocksUDP.SubkeyCache()
        let packet = input.rest()

        _ = try? ShadowsocksUDP.open(packet, direction: direction, credential: credential, now: now, subkeyCache: &cache)

        if !credential.method.is2022 {
            let salt = [UInt8](repeating: seed, count: credential.method.saltLength)
            var writer = SealedChunkWriter(credential: credential, salt: salt)
            var sealed = ByteBuffer(bytes: salt)
            writer.sealChunk(packet, into: &sealed)
            var body = ByteBuffer(bytes: packet)
            let expected = (try? Endpoint.read(from: &body)).flatMap { $0 }
            let opened = try? ShadowsocksUDP.open(Array(sealed.readableBytesView), direction: direction, credential: credential, now: now, subkeyCache: &cache)
            check(opened?.endpoint == expected, "a legacy packet opened to \(String(describing: opened)), its body says \(String(describing: expected))")
            if let opened { check(opened.payload == Array(body.readableBytesView), "a legacy packet's payload changed") }
        }

        var body = ByteBuffer(bytes: packet)
        if let endpoint = (try? Endpoint.read(from: &body)).flatMap({ $0 }) {
            let datagram = ShadowsocksDatagram(endpoint: endpoint, payload: Array(body.readableBytesView))
            let sealed = ShadowsocksUDP.seal(datagram, direction: direction, credential: credential, sessionID: UInt64(seed), packetID: 1,
                                             clientSessionID: 3, now: now, subkeyCache: &cache)
            let opened = try? ShadowsocksUDP.open(sealed, direction: direction, credential: credential, now: now, subkeyCache: &cache)
            check(opened?.endpoint == endpoint && opened?.payload == datagram.payload, "a sealed datagram did not open to itself")
        }
    }

    /// The Trojan port: the first bytes' verdict (TLS or not), the Trojan
    /// header after TLS (with the right password hash or not), and the UDP
    /// frames that follow a UDP ASSOCIATE header.
    static let trojan = FuzzTarget("trojan", "TLS port first bytes, Trojan header, Trojan UDP frames", seeds: { Seeds.trojan }) { data in
        var input = FuzzInput(data)
        let seed = input.byte()
        let rest = input.rest()

        // A verdict on the first bytes, once given, holds for every longer prefix.
        var verdict: TLSPortFirstBytes?
        for length in 0...min(rest.count, 64) {
            let current = TLSPortFirstBytes(rest.prefix(length))
            if let verdict, verdict != .needMore { check(current == verdict, "the TLS port's verdict changed from \(verdict) to \(current) at \(length) bytes") }
            verdict = current
        }

        let hash = Trojan.passwordHash("fuzz")
        let message = seed & 1 == 1 ? hash + [0x0d, 0x0a] + rest : rest
        sameInDribbles(message, seed: seed, "a Trojan header") { trojanOutcome(hash, $0) }
        sameInDribbles(rest, seed: seed, "Trojan UDP frames", trojanFrames)
    }

    /// Mux frames and both ends' session machines, and the rendezvous's
    /// datagram framing, which rides a mux stream.
    static let mux = FuzzTarget("mux", "mux frames and sessions (client and server), rendezvous datagram framing", seeds: { Seeds.mux }) { data in
        var input = FuzzInput(data)
        let seed = input.byte()
        let bytes = input.rest()

        let read = sameInDribbles(bytes, seed: seed, "mux frames") {
            parseAll($0, ByteBuffer(), feed: { $0.writeBytes($1) }, next: { try MuxFrame.read(from: &$0) })
        }.items

        for role in [MuxSession.Role.client, .server] {
            var session = MuxSession(role: role, configuration: .init(maxStreams: 4))
            for frame in read {
                var written = ByteBuffer()
                frame.write(to: &written)
                check((try? MuxFrame.read(from: &written)) == frame, "a mux frame read back differently")
                guard let (events, _) = try? session.receive(frame) else { break }
                for case .data(let stream, let payload) in events {
                    _ = session.consumed(stream: stream, bytes: payload.readableBytes)
                }
                check(session.openStreams <= 4, "a mux session holds \(session.openStreams) streams, more than the 4 allowed")
            }
        }

        var framed = ByteBuffer(bytes: bytes)
        while let (_, payload) = RendezvousDatagram.read(from: &framed) {
            check(payload.readableBytes <= bytes.count, "a rendezvous datagram is longer than its input")
        }
    }

    /// The WebSocket port: the upgrade request (bridge side), the upgrade
    /// response (client side), and frames in both directions.
    static let webSocket = FuzzTarget("websocket", "WebSocket upgrade request and response, frames", seeds: { Seeds.webSocket }) { data in
        var input = FuzzInput(data)
        let seed = input.byte()
        let rest = input.rest()

        let path = "/ws-fuzz"
        let decision = WebSocketHandshake.readRequest(from: ByteBuffer(bytes: rest), path: path)
        var growing = ByteBuffer()
        for piece in dribbled(rest, seed: seed) {
            growing.writeBytes(piece)
            let early = WebSocketHandshake.readRequest(from: growing, path: path)
            if case .needMoreData = early { continue }
            check("\(early)" == "\(decision)", "a WebSocket request judged \(early) on a prefix, \(decision) whole")
            break
        }

        let accept = WebSocketHandshake.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ==")
        var response = ByteBuffer(bytes: rest)
        _ = WebSocketHandshake.readResponse(from: &response, expectedAccept: accept)

        let masked = seed & 1 == 1
        sameInDribbles(rest, seed: seed, "WebSocket frames") { webSocketEvents(masked, $0) }
    }
}

private func serverOutcome(_ credential: ShadowsocksCredential, _ pieces: [[UInt8]]) -> [String] {
    var session = ShadowsocksServerSession(credential: credential)
    var payload = ByteBuffer()
    var outcome: [String] = []
    do {
        for piece in pieces {
            var buffer = ByteBuffer(bytes: piece)
            if let request = try session.receive(&buffer, payload: &payload, now: now) {
                outcome.append("request \(request.target)")
            }
            check(buffer.readableBytes == 0, "a Shadowsocks session left input unread")
        }
    } catch {
        // An error ends the connection: what was decoded before it (a
        // request, payload) depends on how the bytes arrived, the error must not.
        return ["error \(error)"]
    }
    return outcome + ["payload \(Array(payload.readableBytesView))"]
}

private func clientOutcome(_ credential: ShadowsocksCredential, _ pieces: [[UInt8]]) -> [String] {
    var session = ShadowsocksClientSession(credential: credential, target: Endpoint(host: .domain("example.com"), port: 443))
    var payload = ByteBuffer()
    do {
        for piece in pieces {
            var buffer = ByteBuffer(bytes: piece)
            try session.receive(&buffer, payload: &payload, now: now)
        }
    } catch {
        // The request salt is random, so 2022 responses fail their salt check
        // differently each run: only legacy errors are compared.
        return [credential.method.is2022 ? "error" : "error \(error)"]
    }
    return ["payload \(Array(payload.readableBytesView))"]
}

private func trojanOutcome(_ hash: [UInt8], _ pieces: [[UInt8]]) -> String {
    var buffer = ByteBuffer()
    for (index, piece) in pieces.enumerated() {
        buffer.writeBytes(piece)
        let decision = Trojan.readHeader(from: &buffer, userHashes: [Array("0123".utf8), hash])
        if case .needMoreData = decision { continue }
        let unread = buffer.readableBytes + pieces[(index + 1)...].reduce(0) { $0 + $1.count }
        return "\(decision), \(unread) bytes unread"
    }
    return "needMoreData"
}

private func webSocketEvents(_ requireMasked: Bool, _ pieces: [[UInt8]]) -> [String] {
    var reader = WebSocketFrameReader(requireMasked: requireMasked)
    var events: [String] = []
    var data: [UInt8] = []
    func flushData() {
        if !data.isEmpty { events.append("data \(data)") }
        data = []
    }
    do {
        for piece in pieces {
            var buffer = ByteBuffer(bytes: piece)
            for event in try reader.read(&buffer) {
                if case .data(let bytes) = event {
                    check(bytes.readableBytes > 0, "a WebSocket data event is empty")
                    data += bytes.readableBytesView
                } else {
                    flushData()
                    events.append("\(event)")
                }
            }
        }
    } catch {
        // The frames before the bad one are delivered or not depending on
        // how the bytes arrived; the error must not.
        return ["error \(error)"]
    }
    flushData()
    return events
}

private func trojanFrames(_ pieces: [[UInt8]]) -> [String] {
    var cutter = Trojan.UDPFrameCutter()
    var out: [String] = []
    do {
        for piece in pieces {
            cutter.append(ByteBuffer(bytes: piece))
            while let frame = try cutter.next() {
                var written = ByteBuffer()
                frame.write(to: &written)
                let again = try Trojan.UDPFrame.read(from: &written)
                check(again == frame, "a Trojan UDP frame read back differently")
                out.append("\(frame.endpoint) \(Array(frame.payload.readableBytesView))")
            }
        }
    } catch {
        out.append("error \(error)")
    }
    return out
}
