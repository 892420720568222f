import NIOCore
import RahaWire

// The DNS tunnel's layers, outside in: DNS messages (from any resolver, or a
// censor's forgeries), the tunnel's use of names and TXT records, the Noise
// handshake and records, and the ARQ that makes a stream of it all.

private let zone = Fixtures.zone
private let bridgeKey = Fixtures.bridgeKey

extension FuzzTarget {
    /// DNS messages over UDP and TCP: what parses serializes again (with and
    /// without name compression) and parses back the same.
    static let dnsMessage = FuzzTarget("dns-message", "DNS messages (UDP and TCP framing), parsed and serialized again", seeds: { Seeds.dnsMessage }) { data in
        var input = FuzzInput(data)
        let seed = input.byte()
        let bytes = input.rest()
        if let message = try? DNSMessage(parsing: bytes) {
            for compress in [true, false] {
                guard let written = try? message.serialize(compress: compress) else { continue }
                let again = try? DNSMessage(parsing: written)
                check(again == message, "a DNS message serialized (compress: \(compress)) did not parse back the same")
            }
        }
        sameInDribbles(bytes, seed: seed, "DNS over TCP", dnsTCPMessages)
    }

    /// The tunnel's framing: a query as the bridge's authoritative server
    /// reads it, a response as the client reads it, the name encodings, the
    /// Noise handshake and records, for garbage and for well-formed
    /// messages carrying what the fuzzer chose.
    static let dnsTunnel = FuzzTarget("dns-tunnel", "DNS tunnel queries and responses, name encodings, Noise NK handshake and records", seeds: { Seeds.dnsTunnel }) { data in
        var input = FuzzInput(data)
        let seed = input.byte()
        let bytes = input.rest()
        let encoding = DNSTunnelEncoding.allCases[Int(seed) % DNSTunnelEncoding.allCases.count]

        // Garbage as a query and as a response.
        if let message = try? DNSMessage(parsing: bytes) {
            if let payload = DNSTunnelCodec.payload(ofQuery: message, zone: zone, encoding: encoding), !payload.isEmpty {
                _ = try? ARQSegment(decoding: Array(payload.dropFirst()))
            }
            if let payload = DNSTunnelCodec.payload(ofResponse: message) {
                _ = try? ARQSegment(decoding: payload)
            }
            _ = DNSTunnelCodec.nonTunnelResponse(to: message, zone: zone)
        }

        // Name encodings: what decodes encodes and decodes back the same.
        if let decoded = encoding.decode(bytes) {
            check(encoding.decode(encoding.encode(decoded)) == decoded, "\(encoding) did not decode its own encoding")
        }

        // The fuzzer's bytes carried in a query and answered in a response.
        let shaping = DNSTunnelShaping.default
        let payload = Array(bytes.prefix(DNSTunnelCodec.upstreamCapacity(zone: zone, shaping: shaping)))
        if let query = try? DNSTunnelCodec.query(payload: payload, zone: zone, shaping: shaping, id: 7, udpPayloadSize: 1232),
           let wire = try? query.serialize(), let parsed = try? DNSMessage(parsing: wire) {
            check(DNSTunnelCodec.payload(ofQuery: parsed, zone: zone, encoding: shaping.encoding) == payload, "a tunnel query did not carry its payload")
            let room = DNSTunnelCodec.downstreamCapacity(for: parsed, limit: 1232)
            let down = Array(bytes.prefix(room))
            let response = DNSTunnelCodec.response(to: parsed, payload: down)
            if let answer = try? response.serialize() {
                check(answer.count <= 1232, "a tunnel response of \(answer.count) bytes exceeds the 1232 it was sized for")
                check((try? DNSMessage(parsing: answer)).flatMap(DNSTunnelCodec.payload(ofResponse:)) == down, "a tunnel response did not carry its payload")
            }
        }

        // Noise: garbage at a responder; then after a real handshake, records
        // of the fuzzer's plaintext, delivered in dribbles, come out whole.
        var responder = try! NoiseStream(role: .responder(bridgeKey))
        _ = try? responder.receive(bytes)
        var client = try! NoiseStream(role: .initiator(responderStatic: bridgeKey.publicKey))
        var bridge = try! NoiseStream(role: .responder(bridgeKey))
        _ = try! bridge.receive(client.takeOutbound())
        _ = try! client.receive(bridge.takeOutbound())
        check(client.isEstablished && bridge.isEstablished, "a Noise handshake did not complete")
        var records = FuzzInput(bytes)
        var sent: [UInt8] = []
        var wire: [UInt8] = []
        while !records.isEmpty {
            let plaintext = records.piece()
            sent += plaintext
            client.write(plaintext)
            wire += client.takeOutbound()
        }
        var received: [UInt8] = []
        for piece in dribbled(wire, seed: seed) { received += try! bridge.receive(piece) }
        check(received == sent, "Noise records did not come out as they went in")
    }

    /// The ARQ layer under the DNS tunnel: garbage segments at a bridge's
    /// connection, and a client and bridge talking through a channel the
    /// fuzzer drives (losing, repeating and reordering segments, moving the
    /// clock), where the bridge must read exactly a prefix of what the
    /// client sent, and every segment must fit the room it was given.
    static let arq = FuzzTarget("arq", "ARQ segments and connections over a lossy, reordering channel", seeds: { Seeds.arq }) { data in
        var input = FuzzInput(data)
        let mode = input.byte()
        if mode & 1 == 0 {
            var bridge = ARQConnection(session: 0x0102_0304_0506_0708, role: .server)
            var clock = Duration.zero
            while !input.isEmpty {
                guard var segment = try? ARQSegment(decoding: input.piece()) else { continue }
                check((try? ARQSegment(decoding: segment.encoded())) == segment, "an ARQ segment read back differently")
                if mode & 2 != 0 { segment.session = bridge.session }
                clock += .milliseconds(Int(input.byte()))
                bridge.receive(segment, now: clock)
                _ = bridge.readable()
                if let reply = bridge.nextSegment(now: clock, budget: 200) {
                    check(reply.encodedLength <= 200, "an ARQ segment of \(reply.encodedLength) bytes was given 200")
                }
            }
            return
        }

        let session: UInt64 = 0x1111_2222_3333_4444
        var client = ARQConnection(session: session, role: .client)
        var bridge = ARQConnection(session: session, role: .server)
        let message = (0..<4000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        var queued = 0
        var received: [UInt8] = []
        var toBridge: [ARQSegment] = []
        var toClient: [ARQSegment] = []
        var clock = Duration.zero
        for _ in 0..<400 {
            guard !input.isEmpty else { break }
            let step = input.byte()
            let budget = 20 + Int(input.byte())
            switch step % 8 {
            case 0:
                queued += client.send(Array(message[queued..<min(message.count, queued + 700)]))
            case 1, 2:
                if let segment = client.nextSegment(now: clock, budget: budget) ?? client.poll(now: clock, budget: budget) {
                    check(segment.encodedLength <= budget, "a client segment of \(segment.encodedLength) bytes was given \(budget)")
                    toBridge.append(segment)
                }
            case 3:
                let segment = bridge.answer(now: clock, budget: budget)
                check(segment.encodedLength <= max(budget, ARQSegment.headerLength), "a bridge segment of \(segment.encodedLength) bytes was given \(budget)")
                toClient.append(segment)
            case 4:
                // Deliver the oldest to the bridge, or (odd) the newest: reordering.
                if !toBridge.isEmpty { bridge.receive(step & 8 == 0 ? toBridge.removeFirst() : toBridge.removeLast(), now: clock) }
            case 5:
                if !toClient.isEmpty { client.receive(step & 8 == 0 ? toClient.removeFirst() : toClient.removeLast(), now: clock) }
            case 6:
                // Lose or repeat one.
                if step & 8 == 0 { _ = toBridge.popLast(); _ = toClient.popLast() } else if let last = toBridge.last { toBridge.append(last) }
            default:
                clock += .milliseconds(Int(step) * 10)
            }
            received += bridge.readable()
            check(received.count <= queued && received[...] == message[..<received.count], "the bridge read bytes the client did not send, or out of order")
        }
    }
}

private func dnsTCPMessages(_ pieces: [[UInt8]]) -> [String] {
    var framer = DNSTCPFramer()
    var out: [String] = []
    for piece in pieces {
        framer.append(piece)
        while true {
            do {
                guard let message = try framer.nextMessage() else { break }
                out.append("\(message.id) \(message.questions)")
            } catch {
                out.append("error \(error)")
            }
        }
    }
    return out + ["buffered \(framer.bufferedByteCount)"]
}
