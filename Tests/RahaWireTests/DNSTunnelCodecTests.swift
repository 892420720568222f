import Foundation
import Testing
@testable import RahaWire

private func name(_ text: String) -> DNSName { try! DNSName(text) }

/// The message after a trip through real bytes.
private func wire(_ message: DNSMessage, sourceLocation: SourceLocation = #_sourceLocation) throws -> DNSMessage {
    try DNSMessage(parsing: message.serialize())
}

/// A zone of about `length` text characters made of labels up to 63 long.
private func zone(ofLength length: Int) -> DNSName {
    var labels: [[UInt8]] = []
    var remaining = length
    var letter = UInt8(ascii: "a")
    while remaining > 0 {
        let size = min(63, remaining - (labels.isEmpty ? 0 : 1))
        guard size > 0 else { break }
        labels.append(Array(repeating: letter, count: size))
        letter += 1
        remaining -= size + (labels.count > 1 ? 1 : 0)
    }
    return try! DNSName(labels: labels)
}

private func textLength(_ name: DNSName) -> Int {
    name.labels.isEmpty ? 0 : name.labels.reduce(-1) { $0 + $1.count + 1 }
}

/// Flips the case of about half the letters, as a resolver doing 0x20 would.
private func flippingCase(_ name: DNSName, using generator: inout SeededGenerator) -> DNSName {
    try! DNSName(labels: name.labels.map { label in
        label.map { byte in
            let isLetter = (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
            return isLetter && Bool.random(using: &generator) ? byte ^ 0x20 : byte
        }
    })
}

/// Checks that `body` throws a WireError whose sentence contains `fragment`.
func expectWireError(_ fragment: String, code: WireError.Code? = nil, sourceLocation: SourceLocation = #_sourceLocation,
                     _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("no error; expected one saying \"\(fragment)\"", sourceLocation: sourceLocation)
    } catch let error as WireError {
        #expect(error.reason.contains(fragment), "\(error.reason)", sourceLocation: sourceLocation)
        if let code { #expect(error.code == code, "\(error.reason)", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("threw \(error)", sourceLocation: sourceLocation)
    }
}

private let zones = [name("t.example.com"), name("x"), name("Tun.Example.Org"), zone(ofLength: 100), zone(ofLength: 180)]

@Suite struct DNSTunnelCodecTests {
    // MARK: Encodings

    @Test func base32MatchesRFC4648() {
        let base32 = DNSTunnelEncoding.base32
        let vectors = ["": "", "f": "my", "fo": "mzxq", "foo": "mzxw6", "foob": "mzxw6yq", "fooba": "mzxw6ytb", "foobar": "mzxw6ytboi"]
        for (plain, encoded) in vectors {
            #expect(base32.encode(Array(plain.utf8)) == Array(encoded.utf8))
            #expect(base32.decode(Array(encoded.utf8)) == Array(plain.utf8))
            #expect(base32.decode(Array(encoded.uppercased().utf8)) == Array(plain.utf8))
        }
        #expect(base32.decode(Array("mzx".utf8)) == nil, "3 characters encode no byte count")
        #expect(base32.decode(Array("mz".utf8)) == nil, "non-zero bits after the last byte")
        #expect(base32.decode(Array("my1".utf8)) == nil, "1 is not in the alphabet")
        #expect(base32.decode(Array("my======".utf8)) == nil, "no padding")
    }

    @Test func hexAndSyllablesSpellKnownValues() {
        let hex = DNSTunnelEncoding.hex, syllables = DNSTunnelEncoding.syllables
        #expect(hex.encode(Array("foobar".utf8)) == Array("666f6f626172".utf8))
        #expect(hex.decode(Array("666F6F626172".utf8)) == Array("foobar".utf8), "either case")
        #expect(hex.decode(Array("666".utf8)) == nil, "half a byte")
        #expect(hex.decode(Array("6g".utf8)) == nil, "g is not a hex digit")
        // Two bytes are consonant-vowel-consonant-vowel-consonant, as in a proquint: 127.0 is "lusab".
        #expect(syllables.encode([0x7F, 0x00]) == Array("lusab".utf8))
        #expect(syllables.decode(Array("LuSaB".utf8)) == [0x7F, 0x00], "either case")
        // One byte takes three characters (10 bits), the last two bits zero.
        #expect(syllables.encode([0x00]) == Array("bab".utf8) && syllables.encode([0xFF]) == Array("zus".utf8))
        #expect(syllables.decode(Array("bad".utf8)) == nil, "non-zero bits after the last byte")
        #expect(syllables.decode(Array("aab".utf8)) == nil, "a vowel where a consonant belongs")
        #expect(syllables.decode(Array("bbb".utf8)) == nil, "a consonant where a vowel belongs")
        #expect(syllables.decode(Array("ba".utf8)) == nil, "6 bits encode no byte")
    }

    @Test func everyEncodingRoundTripsAtEveryLength() {
        var generator = SeededGenerator(seed: 1)
        for encoding in DNSTunnelEncoding.allCases {
            for count in 0..<100 {
                let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
                let text = encoding.encode(bytes)
                #expect(text.count == encoding.encodedLength(count), "\(encoding) \(count)")
                #expect(encoding.decodedLength(text.count) == count, "\(encoding) \(count)")
                #expect(encoding.decode(text) == bytes, "\(encoding) \(count)")
                #expect(text.allSatisfy(encoding.characters.contains), "\(encoding) writes only its own characters")
                // Another length of the same text is either another byte count's canonical form or nothing.
                if count > 0, let shorter = encoding.decode(text.dropLast()) { #expect(shorter.count < count) }
            }
        }
    }

    /// The point of the lower-entropy encodings, measured: the character
    /// entropy of the data labels a detector would score (Shannon, over all
    /// characters of 2,000 queries carrying random data).
    @Test func lowerEntropyEncodingsLowerTheNamesEntropy() throws {
        var generator = SeededGenerator(seed: 5)
        let zone = name("t.example.com")
        var entropy: [DNSTunnelEncoding: Double] = [:]
        for encoding in DNSTunnelEncoding.allCases {
            let shaping = try DNSTunnelShaping(encoding: encoding, labelLength: 12)
            let capacity = DNSTunnelCodec.upstreamCapacity(zone: zone, shaping: shaping)
            var counts = [Int](repeating: 0, count: 256)
            for _ in 0..<2_000 {
                let payload = (0..<capacity).map { _ in UInt8.random(in: 0...255, using: &generator) }
                let query = try DNSTunnelCodec.query(payload: payload, zone: zone, shaping: shaping, id: 1, udpPayloadSize: 1232)
                for label in try #require(query.questions[0].name.labels(relativeTo: zone)) {
                    for byte in label { counts[Int(byte)] += 1 }
                }
            }
            let total = Double(counts.reduce(0, +))
            entropy[encoding] = counts.filter { $0 > 0 }.reduce(0.0) { sum, count in
                let p = Double(count) / total
                return sum - p * Foundation.log2(p)
            }
        }
        let base32 = try #require(entropy[.base32]), hex = try #require(entropy[.hex]), syllables = try #require(entropy[.syllables])
        #expect(base32 > 4.99 && base32 <= 5, "base32: \(base32) bits a character")
        #expect(hex > 3.99 && hex <= 4, "hex: \(hex) bits a character")
        // 16 consonants at 1/32 each and 4 vowels at 1/8 each: 4 bits, about English text's letter entropy.
        #expect(syllables > 3.98 && syllables < 4.02, "syllables: \(syllables) bits a character")
    }

    // MARK: Shaping

    @Test func shapingValidatesItsRanges() throws {
        #expect(try DNSTunnelShaping() == DNSTunnelShaping.default)
        #expect(DNSTunnelShaping.default.labelLength == 63 && DNSTunnelShaping.default.maxNameLength == 253)
        #expect(DNSTunnelShaping.default.queriesPerSecond == nil)
        _ = try DNSTunnelShaping(labelLength: 8, maxNameLength: 64, queriesPerSecond: 1)
        for (make, mentions) in [
            ({ try DNSTunnelShaping(labelLength: 7) }, "label length is 7; it must be 8 to 63"),
            ({ try DNSTunnelShaping(labelLength: 64) }, "label length is 64; it must be 8 to 63"),
            ({ try DNSTunnelShaping(maxNameLength: 63) }, "name length is 63; it must be 64 to 253"),
            ({ try DNSTunnelShaping(maxNameLength: 254) }, "name length is 254; it must be 64 to 253"),
            ({ try DNSTunnelShaping(queriesPerSecond: 0) }, "rate cap is 0 queries per second"),
        ] as [(() throws -> DNSTunnelShaping, String)] {
            expectWireError(mentions, code: .badKey) { _ = try make() }
        }
    }

    // MARK: Upstream

    @Test func capacityIsExactForEveryShape() throws {
        // Independently of the codec: bits carried by c characters of each encoding.
        let bitsIn: [DNSTunnelEncoding: (Int) -> Int] = [.base32: { 5 * $0 }, .hex: { 4 * $0 }, .syllables: { 3 * $0 + $0 % 2 }]
        for encoding in DNSTunnelEncoding.allCases {
            for zone in zones + [name("a.b"), zone(ofLength: 240)] {
                for labelLength in [8, 9, 13, 31, 32, 62, 63] {
                    for maxNameLength in [64, 65, 100, 127, 200, 252, 253] {
                        let shaping = try DNSTunnelShaping(encoding: encoding, labelLength: labelLength, maxNameLength: maxNameLength)
                        let capacity = DNSTunnelCodec.upstreamCapacity(zone: zone, shaping: shaping)
                        // The text length of a name carrying n payload bytes.
                        func length(_ n: Int) -> Int {
                            let characters = (0...).first { bitsIn[encoding]!($0) >= (n + 3) * 8 }!
                            let labels = (characters + labelLength - 1) / labelLength
                            return characters + labels - 1 + (zone.labels.isEmpty ? 0 : 1 + textLength(zone))
                        }
                        if length(0) > maxNameLength {
                            #expect(capacity == 0)
                            expectWireError("leaves no room for data", code: .tooLarge) {
                                _ = try DNSTunnelCodec.query(payload: [], zone: zone, shaping: shaping, id: 1, udpPayloadSize: 1232)
                            }
                            continue
                        }
                        #expect(length(capacity) <= maxNameLength, "\(encoding) zone \(zone) label \(labelLength) name \(maxNameLength)")
                        #expect(length(capacity + 1) > maxNameLength, "\(encoding) zone \(zone) label \(labelLength) name \(maxNameLength)")

                        let largest = try DNSTunnelCodec.query(payload: Array(repeating: 0xA5, count: capacity), zone: zone,
                                                               shaping: shaping, id: 7, udpPayloadSize: 1232)
                        let qname = largest.questions[0].name
                        #expect(textLength(qname) <= maxNameLength)
                        #expect(qname.wireLength <= DNSName.maxWireLength)
                        #expect(DNSTunnelCodec.payload(ofQuery: try wire(largest), zone: zone, encoding: encoding) == Array(repeating: 0xA5, count: capacity))
                        expectWireError("carries at most \(capacity) bytes; this payload has \(capacity + 1)", code: .tooLarge) {
                            _ = try DNSTunnelCodec.query(payload: Array(repeating: 0, count: capacity + 1), zone: zone,
                                                         shaping: shaping, id: 7, udpPayloadSize: 1232)
                        }
                    }
                }
            }
        }
        // The defaults under a short zone: 253 characters.
        let short = name("t.example.com")
        #expect(DNSTunnelCodec.upstreamCapacity(zone: short, shaping: .default) == 144)
        #expect(DNSTunnelCodec.upstreamCapacity(zone: short, shaping: try DNSTunnelShaping(encoding: .hex)) == 115)
        #expect(DNSTunnelCodec.upstreamCapacity(zone: short, shaping: try DNSTunnelShaping(encoding: .syllables)) == 85)
    }

    @Test func roundTripsEveryPayloadSize() throws {
        var generator = SeededGenerator(seed: 2)
        for encoding in DNSTunnelEncoding.allCases {
            for zone in zones {
                for labelLength in [8, 15, 40, 63] {
                    for maxNameLength in [64, 253] {
                        let shaping = try DNSTunnelShaping(encoding: encoding, labelLength: labelLength, maxNameLength: maxNameLength)
                        let capacity = DNSTunnelCodec.upstreamCapacity(zone: zone, shaping: shaping)
                        guard encoding.decodedLength(DNSTunnelCodec.dataCharacters(zone: zone, shaping: shaping)) >= DNSTunnelCodec.cacheBusterLength else { continue }
                        for size in 0...capacity {
                            let payload = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
                            let id = UInt16.random(in: 0...UInt16.max, using: &generator)
                            let query = try DNSTunnelCodec.query(payload: payload, zone: zone, shaping: shaping, id: id, udpPayloadSize: 1232)
                            #expect(query.id == id && query.recursionDesired && !query.isResponse)
                            #expect(query.questions.count == 1)
                            #expect(query.questions[0].type == .txt && query.questions[0].questionClass == .internet)
                            #expect(query.edns?.udpPayloadSize == 1232)

                            let qname = query.questions[0].name
                            let data = try #require(qname.labels(relativeTo: zone))
                            #expect(data.dropLast().allSatisfy { $0.count == labelLength })
                            #expect(data.last!.count <= labelLength)
                            #expect(data.joined().allSatisfy(encoding.characters.contains), "lowercase \(encoding)")
                            #expect(Array(qname.labels.suffix(zone.labels.count)) == zone.labels, "the zone as given")

                            let parsed = try wire(query)
                            #expect(parsed == query)
                            #expect(DNSTunnelCodec.payload(ofQuery: parsed, zone: zone, encoding: encoding) == payload)

                            var flipped = parsed
                            flipped.questions[0].name = flippingCase(qname, using: &generator)
                            #expect(DNSTunnelCodec.payload(ofQuery: try wire(flipped), zone: zone, encoding: encoding) == payload, "0x20 case randomisation")
                        }
                    }
                }
            }
        }
    }

    @Test func equalPayloadsGiveDifferentNames() throws {
        let zone = name("t.example.com")
        var names = Set<[UInt8]>()
        for _ in 0..<32 {
            let query = try DNSTunnelCodec.query(payload: [1, 2, 3], zone: zone, shaping: .default, id: 1, udpPayloadSize: 1232)
            #expect(DNSTunnelCodec.payload(ofQuery: query, zone: zone, encoding: .base32) == [1, 2, 3])
            names.insert(query.questions[0].name.labels[0])
        }
        #expect(names.count == 32, "a random cache-buster in front of every payload")
        let a = try DNSTunnelCodec.query(payload: [], cacheBuster: [0, 0, 0], zone: zone, shaping: .default, id: 1, udpPayloadSize: 1232)
        let b = try DNSTunnelCodec.query(payload: [], cacheBuster: [0, 0, 1], zone: zone, shaping: .default, id: 1, udpPayloadSize: 1232)
        #expect(a.questions[0].name.description == "aaaaa.t.example.com.")
        #expect(b.questions[0].name.description == "aaaac.t.example.com.")
    }

    @Test func rejectsWhatIsNotATunnelQuery() throws {
        let zone = name("t.example.com")
        let good = try wire(DNSTunnelCodec.query(payload: [9, 8, 7], zone: zone, shaping: .default, id: 3, udpPayloadSize: 1232))
        #expect(DNSTunnelCodec.payload(ofQuery: good, zone: zone, encoding: .base32) == [9, 8, 7])
        #expect(DNSTunnelCodec.payload(ofQuery: good, zone: name("T.EXAMPLE.COM"), encoding: .base32) == [9, 8, 7], "zones compare without case")

        #expect(DNSTunnelCodec.payload(ofQuery: good, zone: name("u.example.com"), encoding: .base32) == nil, "wrong zone")
        #expect(DNSTunnelCodec.payload(ofQuery: good, zone: name("x.t.example.com"), encoding: .base32) == nil, "wrong zone")
        func changed(_ change: (inout DNSMessage) -> Void) throws -> DNSMessage {
            var message = good
            change(&message)
            return try wire(message)
        }
        #expect(DNSTunnelCodec.payload(ofQuery: try changed { $0.questions[0].type = .a }, zone: zone, encoding: .base32) == nil, "wrong type")
        #expect(DNSTunnelCodec.payload(ofQuery: try changed { $0.questions[0].type = .any }, zone: zone, encoding: .base32) == nil, "wrong type")
        #expect(DNSTunnelCodec.payload(ofQuery: try changed { $0.questions[0].questionClass = .chaos }, zone: zone, encoding: .base32) == nil, "wrong class")
        #expect(DNSTunnelCodec.payload(ofQuery: try changed { $0.isResponse = true }, zone: zone, encoding: .base32) == nil, "a response")
        #expect(DNSTunnelCodec.payload(ofQuery: try changed { $0.opcode = 2 }, zone: zone, encoding: .base32) == nil, "another opcode")
        #expect(DNSTunnelCodec.payload(ofQuery: try changed { $0.questions.append($0.questions[0]) }, zone: zone, encoding: .base32) == nil, "two questions")
        #expect(DNSTunnelCodec.payload(ofQuery: try changed { $0.questions = [] }, zone: zone, encoding: .base32) == nil, "no question")
        #expect(DNSTunnelCodec.payload(ofQuery: try changed { $0.edns?.version = 1 }, zone: zone, encoding: .base32) == nil, "EDNS version 1")
        #expect(DNSTunnelCodec.payload(ofQuery: try changed { $0.edns = nil }, zone: zone, encoding: .base32) == [9, 8, 7], "EDNS is optional")

        for bad in ["t.example.com", "aa.t.example.com", "aaaa.t.example.com", "abc.t.example.com", "aaaa1.t.example.com",
                    "aaaa-.t.example.com", "aaaab.t.example.com", "x.aaaaa.example.com"] {
            let query = try wire(DNSMessage.query(id: 1, name: name(bad), type: .txt, udpPayloadSize: 1232))
            #expect(DNSTunnelCodec.payload(ofQuery: query, zone: zone, encoding: .base32) == nil, "\(bad)")
        }
        // Data may be split at any label boundary; the decoder only joins.
        let split = try wire(DNSMessage.query(id: 1, name: name("a.aaa.a.t.example.com"), type: .txt))
        #expect(DNSTunnelCodec.payload(ofQuery: split, zone: zone, encoding: .base32) == [])
    }

    // MARK: Downstream

    /// Queries of many shapes: name lengths from the root to 253 characters,
    /// with and without EDNS0, mixed case.
    private static func queryShapes() throws -> [DNSMessage] {
        var queries: [DNSMessage] = []
        var generator = SeededGenerator(seed: 3)
        let names = [DNSName.root, name("x"), name("t.example.com"), name("AbC.T.Example.Com"), zone(ofLength: 120), zone(ofLength: 253)]
        for qname in names {
            for udp: UInt16? in [nil, 512, 1232, 4096] {
                var query = DNSMessage.query(id: .random(in: 0...UInt16.max, using: &generator), name: qname, type: .txt, udpPayloadSize: udp)
                queries.append(query)
                query.checkingDisabled = true
                query.edns?.options = [EDNSOption(code: 10, data: Array(repeating: 1, count: 8))]
                queries.append(query)
            }
        }
        for size in [0, 1, 50, 140] {
            queries.append(try DNSTunnelCodec.query(payload: Array(repeating: 0, count: size), zone: name("t.example.com"),
                                                    shaping: .default, id: 5, udpPayloadSize: 1232))
        }
        return queries
    }

    @Test func downstreamCapacityIsExact() throws {
        var limits = [0, 12, 40, 60, 100, 255, 256, 300, 511, 512, 513, 1000, 1232, 1400, 4096, 65_535, 70_000]
        limits += (0..<40).map { 300 + $0 * 7 }
        for query in try Self.queryShapes() {
            let query = try wire(query)
            let emptySize = try DNSTunnelCodec.response(to: query, payload: []).serialize().count
            for limit in limits {
                let capacity = DNSTunnelCodec.downstreamCapacity(for: query, limit: limit)
                let payload = (0..<capacity).map { UInt8(truncatingIfNeeded: $0) }
                let bytes = try DNSTunnelCodec.response(to: query, payload: payload).serialize()
                if emptySize > limit {
                    #expect(capacity == 0)
                    continue
                }
                #expect(bytes.count <= limit, "limit \(limit), capacity \(capacity)")
                let more = try? DNSTunnelCodec.response(to: query, payload: payload + [0]).serialize()
                #expect((more?.count ?? Int.max) > min(limit, DNSMessage.maxLength), "limit \(limit), capacity \(capacity)")
                if limit <= 4096 {
                    let parsed = try DNSMessage(parsing: bytes)
                    #expect(DNSTunnelCodec.payload(ofResponse: parsed) == payload)
                }
            }
        }
    }

    @Test func responsesCarryThePayloadInTXTStringsOf255Bytes() throws {
        let query = try wire(DNSMessage.query(id: 0x4242, name: name("AbCdE.t.ExAmPlE.com"), type: .txt, udpPayloadSize: 4096))
        var generator = SeededGenerator(seed: 4)
        for (size, lengths) in [(0, [0]), (1, [1]), (254, [254]), (255, [255]), (256, [255, 1]), (510, [255, 255]),
                                (511, [255, 255, 1]), (1000, [255, 255, 255, 235])] {
            let payload = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let response = try wire(DNSTunnelCodec.response(to: query, payload: payload))
            #expect(response.isResponse && response.authoritative && response.rcode == .noError && !response.truncated)
            #expect(response.id == 0x4242 && response.recursionDesired)
            #expect(response.questions == query.questions)
            #expect(response.questions[0].name.description == "AbCdE.t.ExAmPlE.com.", "the question as received")
            #expect(response.answers.count == 1 && response.authorities.isEmpty && response.additionals.isEmpty)
            let answer = response.answers[0]
            #expect(answer.ttl == 0 && answer.recordClass == .internet)
            #expect(answer.name.labels == query.questions[0].name.labels)
            guard case .txt(let strings) = answer.data else {
                Issue.record("not TXT: \(answer.data)")
                continue
            }
            #expect(strings.map(\.count) == lengths)
            #expect(DNSTunnelCodec.payload(ofResponse: response) == payload)
            #expect(response.edns == EDNS(udpPayloadSize: 1232))
        }
        // The answer's owner is a pointer to the question's name at offset 12.
        let bytes = try DNSTunnelCodec.response(to: query, payload: [1]).serialize()
        let afterQuestion = 12 + query.questions[0].name.wireLength + 4
        #expect(Array(bytes[afterQuestion..<afterQuestion + 2]) == [0xC0, 0x0C])

        var plain = query
        plain.edns = nil
        #expect(try wire(DNSTunnelCodec.response(to: plain, payload: [1])).edns == nil, "no EDNS0 without it in the query")
    }

    @Test func rejectsWhatIsNotATunnelResponse() throws {
        let query = try wire(DNSMessage.query(id: 1, name: name("abcde.t.example.com"), type: .txt, udpPayloadSize: 1232))
        let good = try wire(DNSTunnelCodec.response(to: query, payload: [1, 2, 3]))
        #expect(DNSTunnelCodec.payload(ofResponse: good) == [1, 2, 3])
        func changed(_ change: (inout DNSMessage) -> Void) throws -> [UInt8]? {
            var message = good
            change(&message)
            return DNSTunnelCodec.payload(ofResponse: try wire(message))
        }
        #expect(try changed { $0.rcode = .nameError } == nil)
        #expect(try changed { $0.rcode = .serverFailure } == nil)
        #expect(try changed { $0.truncated = true } == nil)
        #expect(try changed { $0.isResponse = false } == nil)
        #expect(try changed { $0.answers = [] } == nil)
        #expect(try changed { $0.answers[0].data = .a([1, 2, 3, 4]) } == nil)
        #expect(try changed { $0.answers[0].name = name("other.t.example.com") } == nil)
        #expect(try changed { $0.questions = [] } == nil)
        #expect(try changed { $0.answers[0].name = name("ABCDE.T.example.com") } == [1, 2, 3], "names compare without case")
        #expect(try changed { $0.answers.append(DNSRecord(name: $0.questions[0].name, ttl: 0, data: .txt([[4]]))) } == [1, 2, 3, 4])
        #expect(try changed { $0.answers.insert(DNSRecord(name: $0.questions[0].name, ttl: 0, data: .cname(name("x"))), at: 0) } == [1, 2, 3])
    }

    // MARK: Everything else

    @Test func answersTheZoneLikeAnAuthoritativeServer() throws {
        let zone = name("t.example.com")
        let soa = DNSRecord(name: zone, ttl: 0, data: .soa(DNSSOA(
            primaryServer: name("ns.t.example.com"), responsibleMailbox: name("hostmaster.t.example.com"),
            serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum: 0)))
        func ask(_ qname: String, _ type: DNSRecordType, edns: Bool = true, class questionClass: DNSClass = .internet) throws -> DNSMessage {
            var query = DNSMessage.query(id: 0x77, name: name(qname), type: type, udpPayloadSize: edns ? 1232 : nil)
            query.questions[0].questionClass = questionClass
            let parsed = try wire(query)
            let response = try wire(DNSTunnelCodec.nonTunnelResponse(to: parsed, zone: zone))
            #expect(response.id == 0x77 && response.isResponse && response.recursionDesired)
            #expect(response.questions == parsed.questions)
            #expect(response.questions[0].name.description == name(qname).description, "the question's case kept")
            #expect(response.edns == (edns ? EDNS(udpPayloadSize: 1232) : nil))
            return response
        }

        let apexSOA = try ask("T.Example.COM", .soa)
        #expect(apexSOA.rcode == .noError && apexSOA.authoritative)
        #expect(apexSOA.answers == [soa] && apexSOA.authorities.isEmpty)

        let apexNS = try ask("t.example.com", .ns, edns: false)
        #expect(apexNS.rcode == .noError && apexNS.authoritative)
        #expect(apexNS.answers == [DNSRecord(name: zone, ttl: 0, data: .ns(name("ns.t.example.com")))])

        for (qname, type) in [("x.t.example.com", DNSRecordType.a), ("_.x.t.example.com", .a), ("X.t.Example.com", .aaaa),
                              ("t.example.com", .a), ("t.example.com", .txt), ("ns.t.example.com", .a),
                              ("abc.t.example.com", .txt), ("aaaaa.x.t.example.com", .ns)] {
            let response = try ask(qname, type)
            #expect(response.rcode == .noError && response.authoritative, "\(qname) \(type)")
            #expect(response.answers.isEmpty, "\(qname) \(type)")
            #expect(response.authorities == [soa], "\(qname) \(type): the SOA, TTL 0 and minimum 0, so nothing is cached")
        }

        for (qname, questionClass) in [("example.com", DNSClass.internet), ("com", .internet), ("t.example.org", .internet),
                                       ("xt.example.com", .internet), (".", .internet), ("version.bind", .chaos),
                                       ("t.example.com", .chaos)] {
            let response = try ask(qname, .txt, class: questionClass)
            #expect(response.rcode == .refused && !response.authoritative, "\(qname)")
            #expect(response.answers.isEmpty && response.authorities.isEmpty, "\(qname)")
        }

        var twoQuestions = DNSMessage.query(id: 1, name: zone, type: .a)
        twoQuestions.questions.append(twoQuestions.questions[0])
        #expect(try wire(DNSTunnelCodec.nonTunnelResponse(to: try wire(twoQuestions), zone: zone)).rcode == .formatError)
        var notify = DNSMessage.query(id: 1, name: zone, type: .soa)
        notify.opcode = 4
        #expect(try wire(DNSTunnelCodec.nonTunnelResponse(to: try wire(notify), zone: zone)).rcode == .notImplemented)
        var version1 = DNSMessage.query(id: 1, name: zone, type: .soa, udpPayloadSize: 1232)
        version1.edns?.version = 1
        #expect(try wire(DNSTunnelCodec.nonTunnelResponse(to: try wire(version1), zone: zone)).rcode == .badVersion)
    }

    @Test func aZoneTooLongForNSStillAnswers() throws {
        let zone = zone(ofLength: 252)
        let query = try wire(DNSMessage.query(id: 1, name: zone, type: .soa))
        let response = try wire(DNSTunnelCodec.nonTunnelResponse(to: query, zone: zone))
        guard case .soa(let soa) = response.answers.first?.data else {
            Issue.record("no SOA: \(response)")
            return
        }
        #expect(soa.primaryServer == zone && soa.responsibleMailbox == zone)
    }
}
