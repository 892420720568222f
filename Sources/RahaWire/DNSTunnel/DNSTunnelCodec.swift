// The DNS tunnel's message codec (like dnstt): the client sends upstream
// bytes in the query name under a delegated zone, through a recursive
// resolver; the zone's authoritative server (the bridge) answers with
// downstream bytes in a TXT record. Pure: no I/O, no state.
//
// Upstream: the query name is `<data labels>.<zone>`. The data is a 3-byte
// random cache-buster (identical payloads never give identical names, so
// resolvers neither merge in-flight queries nor answer from cache) followed by
// the payload, spelled in the shaping's encoding (`DNSTunnelEncoding`: base32
// by default, or hex or syllables for lower entropy), cut into labels of
// `labelLength` characters (the last one shorter). Decoding ignores letter
// case, since resolvers may randomise it (0x20 encoding). The server reads
// every encoding: it tries each, and the session a decoding names decides.
//
// Downstream: one TXT record, TTL 0, owned by the question's name, whose
// character-strings (at most 255 bytes each) joined together are the payload.
//
// Name lengths in text form count the characters of the name without its
// final dot and without escapes: wire length minus 2, so 253 characters are
// the 255 wire bytes DNS allows.

/// Query shaping: what a user may trade for stealth.
public struct DNSTunnelShaping: Hashable, Sendable {
    /// Allowed data label lengths in characters.
    public static let labelLengthRange = 8...63
    /// Allowed whole-name lengths in text characters, zone included.
    public static let maxNameLengthRange = 64...253
    /// Allowed rate caps in queries per second.
    public static let queriesPerSecondRange = 1...10_000

    /// The defaults: base32 in 63-character labels, 253-character names, no rate cap.
    public static let `default` = DNSTunnelShaping(validated: .base32, 63, 253, nil)

    /// How the name spells the data: base32 (default, 5 bits a character),
    /// hex (4) or syllables (3). Lower entropy, fewer bytes per query.
    public var encoding: DNSTunnelEncoding

    /// Data label length in characters, 8...63 (default 63). Shorter labels
    /// look more like ordinary names but carry less per query.
    public var labelLength: Int
    /// The whole query name in text form, zone included, 64...253 characters
    /// (default 253).
    public var maxNameLength: Int
    /// The client's cap on queries per second; nil for none.
    public var queriesPerSecond: Int?

    public init(encoding: DNSTunnelEncoding = .base32, labelLength: Int = 63, maxNameLength: Int = 253,
                queriesPerSecond: Int? = nil) throws {
        guard Self.labelLengthRange.contains(labelLength) else {
            throw WireError.badKey("the DNS tunnel label length is \(labelLength); it must be \(Self.labelLengthRange.lowerBound) to \(Self.labelLengthRange.upperBound) characters (63 carries the most per query)")
        }
        guard Self.maxNameLengthRange.contains(maxNameLength) else {
            throw WireError.badKey("the DNS tunnel name length is \(maxNameLength); it must be \(Self.maxNameLengthRange.lowerBound) to \(Self.maxNameLengthRange.upperBound) characters, zone included (253 is the most DNS allows)")
        }
        if let queriesPerSecond, !Self.queriesPerSecondRange.contains(queriesPerSecond) {
            throw WireError.badKey("the DNS tunnel rate cap is \(queriesPerSecond) queries per second; it must be \(Self.queriesPerSecondRange.lowerBound) to \(Self.queriesPerSecondRange.upperBound), or left out for no cap")
        }
        self.encoding = encoding
        self.labelLength = labelLength
        self.maxNameLength = maxNameLength
        self.queriesPerSecond = queriesPerSecond
    }

    private init(validated encoding: DNSTunnelEncoding, _ labelLength: Int, _ maxNameLength: Int, _ queriesPerSecond: Int?) {
        self.encoding = encoding
        self.labelLength = labelLength
        self.maxNameLength = maxNameLength
        self.queriesPerSecond = queriesPerSecond
    }

    /// The label length, clamped in case the property was set out of range.
    var effectiveLabelLength: Int {
        min(max(labelLength, Self.labelLengthRange.lowerBound), Self.labelLengthRange.upperBound)
    }

    /// The name length, clamped in case the property was set out of range.
    var effectiveMaxNameLength: Int {
        min(max(maxNameLength, Self.maxNameLengthRange.lowerBound), Self.maxNameLengthRange.upperBound)
    }
}

public enum DNSTunnelCodec {
    /// Bytes of the random cache-buster in front of every upstream payload.
    public static let cacheBusterLength = 3
    /// The least payload a tunnel's queries must carry: the answer-size byte,
    /// an ARQ header and the client's whole first Noise message, since a
    /// bridge decides from one query whether a session is real.
    public static let minimumUpstreamCapacity = 1 + ARQSegment.headerLength + NoiseStream.firstMessageLength
    /// The UDP payload size the server's responses advertise.
    public static let serverUDPPayloadSize: UInt16 = EDNS.defaultUDPPayloadSize

    // MARK: Upstream

    /// Payload bytes one query can carry for this zone and shaping (after the
    /// codec's own overhead). 0 also when the zone leaves no room for even
    /// the cache-buster; `query` then throws.
    public static func upstreamCapacity(zone: DNSName, shaping: DNSTunnelShaping) -> Int {
        max(0, shaping.encoding.decodedLength(dataCharacters(zone: zone, shaping: shaping)) - cacheBusterLength)
    }

    /// A TXT query (RD set, EDNS0 advertising `udpPayloadSize`) whose name
    /// carries `payload`. Throws when the payload does not fit in one name.
    public static func query(payload: [UInt8], zone: DNSName, shaping: DNSTunnelShaping, id: UInt16,
                             udpPayloadSize: UInt16) throws -> DNSMessage {
        try query(payload: payload, cacheBuster: SecureRandom.bytes(cacheBusterLength), zone: zone,
                  shaping: shaping, id: id, udpPayloadSize: udpPayloadSize)
    }

    /// `query(payload:zone:shaping:id:udpPayloadSize:)` with a given cache-buster (for tests).
    static func query(payload: [UInt8], cacheBuster: [UInt8], zone: DNSName, shaping: DNSTunnelShaping, id: UInt16,
                      udpPayloadSize: UInt16) throws -> DNSMessage {
        precondition(cacheBuster.count == cacheBusterLength)
        let capacity = upstreamCapacity(zone: zone, shaping: shaping)
        let characters = dataCharacters(zone: zone, shaping: shaping)
        guard shaping.encoding.decodedLength(characters) >= cacheBusterLength else {
            throw WireError.tooLarge("the DNS tunnel zone \(zone) is \(textLength(of: zone)) characters long, which leaves no room for data in a name of at most \(shaping.effectiveMaxNameLength) characters: use a shorter zone or a larger name length")
        }
        guard payload.count <= capacity else {
            throw WireError.tooLarge("a DNS tunnel query for \(zone) in \(shaping.encoding) with \(shaping.effectiveLabelLength)-character labels and names of at most \(shaping.effectiveMaxNameLength) characters carries at most \(capacity) bytes; this payload has \(payload.count): split it")
        }
        let text = shaping.encoding.encode(cacheBuster + payload)
        let labelLength = shaping.effectiveLabelLength
        let labels = stride(from: 0, to: text.count, by: labelLength).map {
            Array(text[$0..<min($0 + labelLength, text.count)])
        }
        let name = try zone.prepending(labels)
        return DNSMessage.query(id: id, name: name, type: .txt, udpPayloadSize: udpPayloadSize)
    }

    /// The payload a query carries in `encoding`, or nil when it is not a
    /// tunnel query for `zone` in that encoding: not a plain query with one
    /// question, a type other than TXT or class other than IN, a name outside
    /// the zone or without data labels, data that is not canonical in the
    /// encoding, shorter than the cache-buster, or an EDNS version other than 0.
    public static func payload(ofQuery query: DNSMessage, zone: DNSName, encoding: DNSTunnelEncoding) -> [UInt8]? {
        guard !query.isResponse, query.opcode == 0, query.questions.count == 1,
              query.edns.map({ $0.version == 0 }) ?? true else { return nil }
        let question = query.questions[0]
        guard question.type == .txt, question.questionClass == .internet,
              let labels = question.name.labels(relativeTo: zone), !labels.isEmpty,
              let data = encoding.decode(labels.joined()),
              data.count >= cacheBusterLength else { return nil }
        return Array(data.dropFirst(cacheBusterLength))
    }

    // MARK: Downstream

    /// Payload bytes that fit in a response to `query` of at most `limit`
    /// bytes serialized (the caller passes min(query's advertised UDP size or
    /// 512, transport limit); TCP: up to 65535). Exact: `response(to:payload:)`
    /// with this many bytes serializes to at most `limit` bytes, with one more
    /// it would not. 0 when not even an empty payload fits.
    public static func downstreamCapacity(for query: DNSMessage, limit: Int) -> Int {
        guard let empty = try? response(to: query, payload: []).serialize() else { return 0 }
        // The empty payload is one empty character-string: one byte of rdata.
        let rdataRoom = min(min(limit, DNSMessage.maxLength) - (empty.count - 1), Int(UInt16.max))
        guard rdataRoom > 0 else { return 0 }
        // Each character-string costs its length byte plus up to 255 bytes.
        let full = rdataRoom / (DNSTXT.maxStringLength + 1)
        let rest = rdataRoom % (DNSTXT.maxStringLength + 1)
        return full * DNSTXT.maxStringLength + max(0, rest - 1)
    }

    /// The answer: authoritative, NOERROR, the question echoed exactly as
    /// received (case kept), one TXT record owned by the question's name, TTL
    /// 0, carrying `payload` in character-strings of at most 255 bytes; EDNS0
    /// included iff the query had it (advertising 1232).
    public static func response(to query: DNSMessage, payload: [UInt8]) -> DNSMessage {
        let answers = query.questions.prefix(1).map {
            DNSRecord(name: $0.name, ttl: 0, data: .txt(DNSTXT.split(payload)))
        }
        return DNSMessage.response(to: query, answers: answers, udpPayloadSize: serverUDPPayloadSize)
    }

    /// The payload a response carries (the joined TXT strings of the answer
    /// records for the question), or nil if it is not a tunnel response: not
    /// a response, not exactly one question, truncated, rcode not NOERROR, or
    /// no TXT answer for the question's name.
    public static func payload(ofResponse response: DNSMessage) -> [UInt8]? {
        guard response.isResponse, !response.truncated, response.rcode == .noError,
              response.questions.count == 1 else { return nil }
        let name = response.questions[0].name
        var payload: [UInt8] = []
        var found = false
        for record in response.answers where record.name == name {
            guard case .txt(let strings) = record.data else { continue }
            payload += DNSTXT.join(strings)
            found = true
        }
        return found ? payload : nil
    }

    // MARK: Everything else

    /// What the authoritative server says to anything that is not a tunnel
    /// query. For names under the zone (e.g. qname-minimisation probes like
    /// `abc.zone A`, apex SOA/NS): NOERROR, AA, no answers (apex SOA query:
    /// the SOA; apex NS query: NS `ns.<zone>`), SOA in authority with TTL 0 and
    /// minimum 0. Outside the zone or in another class: REFUSED. A query
    /// without exactly one question: FORMERR; another opcode: NOTIMP; an EDNS
    /// version other than 0: BADVERS. Garbage that doesn't parse is handled by
    /// the caller (FORMERR or drop).
    public static func nonTunnelResponse(to query: DNSMessage, zone: DNSName) -> DNSMessage {
        if let edns = query.edns, edns.version != 0 {
            return DNSMessage.response(to: query, rcode: .badVersion, udpPayloadSize: serverUDPPayloadSize)
        }
        guard query.opcode == 0 else {
            return DNSMessage.response(to: query, rcode: .notImplemented, udpPayloadSize: serverUDPPayloadSize)
        }
        guard query.questions.count == 1 else {
            return DNSMessage.response(to: query, rcode: .formatError, udpPayloadSize: serverUDPPayloadSize)
        }
        let question = query.questions[0]
        guard question.questionClass == .internet || question.questionClass == .any,
              let relative = question.name.labels(relativeTo: zone) else {
            var refused = DNSMessage.response(to: query, rcode: .refused, udpPayloadSize: serverUDPPayloadSize)
            refused.authoritative = false
            return refused
        }
        let soa = soaRecord(zone: zone)
        if relative.isEmpty && (question.type == .soa || question.type == .any) {
            return DNSMessage.response(to: query, answers: [soa], udpPayloadSize: serverUDPPayloadSize)
        }
        if relative.isEmpty && question.type == .ns {
            let ns = DNSRecord(name: zone, ttl: 0, data: .ns(nameServer(zone: zone)))
            return DNSMessage.response(to: query, answers: [ns], udpPayloadSize: serverUDPPayloadSize)
        }
        return DNSMessage.response(to: query, authorities: [soa], udpPayloadSize: serverUDPPayloadSize)
    }

    /// The zone's SOA record: TTL 0 and minimum 0, so resolvers keep no
    /// negative answers.
    static func soaRecord(zone: DNSName) -> DNSRecord {
        let mailbox = (try? zone.prepending([Array("hostmaster".utf8)])) ?? zone
        return DNSRecord(name: zone, ttl: 0, data: .soa(DNSSOA(
            primaryServer: nameServer(zone: zone), responsibleMailbox: mailbox,
            serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum: 0)))
    }

    /// `ns.<zone>`, or the zone itself when that would be too long.
    static func nameServer(zone: DNSName) -> DNSName {
        (try? zone.prepending([Array("ns".utf8)])) ?? zone
    }

    // MARK: Helpers

    /// Characters of a name in text form, without its final dot or escapes.
    static func textLength(of name: DNSName) -> Int {
        max(0, name.wireLength - 2)
    }

    /// The most data characters the labels can hold: with k labels
    /// and D characters the name is D + k - 1 characters, plus a dot and the
    /// zone unless the zone is the root.
    static func dataCharacters(zone: DNSName, shaping: DNSTunnelShaping) -> Int {
        let labelLength = shaping.effectiveLabelLength
        let zoneCost = zone.labels.isEmpty ? 0 : textLength(of: zone) + 1
        // D + k <= budget, where each full label costs labelLength + 1.
        let budget = shaping.effectiveMaxNameLength + 1 - zoneCost
        guard budget > 1 else { return 0 }
        let full = budget / (labelLength + 1)
        let rest = budget % (labelLength + 1)
        return full * labelLength + max(0, rest - 1)
    }
}
