import NIOCore
import Testing
@testable import RahaWire

// Known-answer vectors, built byte by byte from the RFC 1035 and RFC 6891
// layouts by a short Python script using only struct.pack (no DNS library).

/// id 0x1234, RD, "www.example.com. IN A", OPT with payload size 1232.
private let queryVector = hex("12340100000100000000000103777777076578616d706c6503636f6d000001000100002904d0000000000000")
/// id 0x1234, QR AA RD, the same question, answer owner as a pointer to offset
/// 12, "A 93.184.216.34", TTL 3600.
private let compressedAnswerVector = hex("12348500000100010000000003777777076578616d706c6503636f6d0000010001c00c0001000100000e1000045db8d822")
/// id 0xBEEF, QR AA, "t.example.org. TXT", answer TXT "hello" "world!!", TTL 60.
private let txtVector = hex("beef840000010001000000000174076578616d706c65036f72670000100001c00c001000010000003c000e0568656c6c6f07776f726c642121")
/// id 1, QR AA NXDOMAIN, "nope.example.com. A", authority SOA for example.com
/// (owner a pointer to offset 17) with uncompressed names inside.
private let nxdomainVector = hex("000184030001000000010000046e6f7065076578616d706c6503636f6d0000010001c0110006000100000384003d036e7331076578616d706c6503636f6d000a686f73746d6173746572076578616d706c6503636f6d0078a3f17500001c2000000e10001275000000012c")

private func name(_ text: String) -> DNSName { try! DNSName(text) }
private func label(_ text: String) -> [UInt8] { Array(text.utf8) }

/// A message using every field and record type.
private let everything: DNSMessage = {
    let zone = name("t.example.net")
    return DNSMessage(
        id: 0xA5A5, isResponse: true, opcode: 2, authoritative: true, truncated: true, recursionDesired: true,
        recursionAvailable: true, authenticData: true, checkingDisabled: true, rcode: .badVersion,
        questions: [DNSQuestion(name: try! zone.prepending([label("AbC"), label("dEf")]), type: .txt)],
        answers: [
            DNSRecord(name: zone, ttl: 1, data: .a([192, 0, 2, 1])),
            DNSRecord(name: zone, ttl: 2, data: .aaaa([0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1])),
            DNSRecord(name: zone, ttl: 3, data: .txt([label("one"), [], Array(repeating: 0xFF, count: 255)])),
            DNSRecord(name: name("alias.example.net"), ttl: 4, data: .cname(zone)),
        ],
        authorities: [
            DNSRecord(name: zone, ttl: 5, data: .ns(name("NS1.example.net"))),
            DNSRecord(name: name("example.net"), ttl: 6, data: .soa(DNSSOA(
                primaryServer: name("ns1.example.net"), responsibleMailbox: name("hostmaster.example.net"),
                serial: 1, refresh: 2, retry: 3, expire: 4, minimum: 5))),
        ],
        additionals: [DNSRecord(name: name("x.example.net"), class: .chaos, ttl: 0xFFFF_FFFF,
                                data: .other(DNSRecordType(rawValue: 99), [1, 2, 3]))],
        edns: EDNS(udpPayloadSize: 4096, version: 0, dnssecOK: true, otherFlags: 0x0102,
                   options: [EDNSOption(code: 10, data: Array(0..<8)), EDNSOption(code: 12, data: [])]))
}()

private func expectMalformed(_ bytes: [UInt8], _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        let message = try DNSMessage(parsing: bytes)
        Issue.record("parsed \(message) instead of failing", sourceLocation: sourceLocation)
    } catch let error as WireError {
        #expect(error.reason.contains(fragment), "\(error.reason)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("threw \(error)", sourceLocation: sourceLocation)
    }
}

/// A header with the given counts, then `body`.
private func message(qd: UInt16 = 1, an: UInt16 = 0, ns: UInt16 = 0, ar: UInt16 = 0, _ body: [UInt8]) -> [UInt8] {
    var bytes: [UInt8] = [0x00, 0x01, 0x01, 0x00]
    for count in [qd, an, ns, ar] { bytes += [UInt8(count >> 8), UInt8(count & 0xFF)] }
    return bytes + body
}

@Suite struct DNSMessageNameTests {
    @Test func parsesAndPrintsPresentationForm() throws {
        let www = try DNSName("www.example.com")
        #expect(www.labels == [label("www"), label("example"), label("com")])
        #expect(www.description == "www.example.com.")
        #expect(try DNSName("www.example.com.") == www)
        #expect(try DNSName(".") == .root)
        #expect(try DNSName("") == .root)
        #expect(DNSName.root.description == ".")
        #expect(DNSName.root.wireLength == 1)
        #expect(www.wireLength == 17)

        let odd = try DNSName(labels: [[UInt8(ascii: "a"), UInt8(ascii: "."), 0x00, 0x20, UInt8(ascii: "\\"), 0xFF], label("b")])
        #expect(odd.description == "a\\.\\000\\032\\\\\\255.b.")
        #expect(try DNSName(odd.description).labels == odd.labels)
        #expect(try DNSName("a\\098c").labels == [label("abc")])
    }

    @Test func comparisonIgnoresASCIICaseOnly() throws {
        let lower = try DNSName("www.example.com")
        let mixed = try DNSName("wWw.ExAMple.CoM")
        #expect(lower == mixed)
        #expect(lower.hashValue == mixed.hashValue)
        #expect(mixed.labels[1] == label("ExAMple"), "labels keep their case")
        #expect(try DNSName("www.example.org") != lower)
        #expect(try DNSName("example.com") != lower)
        // Bytes that differ by 0x20 outside A-Z are different.
        #expect(try DNSName(labels: [[0xC1]]) != DNSName(labels: [[0xE1]]))
        #expect(try DNSName("a[") != DNSName("a{"))
    }

    @Test func relativeLabelsUnderMixedCaseZone() throws {
        let zone = try DNSName("t.Example.COM")
        let query = try DNSName("AbCd.eFgH.T.eXample.com")
        #expect(query.isSubdomain(of: zone))
        #expect(query.labels(relativeTo: zone) == [label("AbCd"), label("eFgH")])
        #expect(zone.labels(relativeTo: zone) == [])
        #expect(zone.isSubdomain(of: .root))
        #expect(query.labels(relativeTo: .root) == query.labels)
        #expect(try DNSName("t.example.org").labels(relativeTo: zone) == nil)
        #expect(try DNSName("xt.example.com").isSubdomain(of: zone) == false)
        #expect(try DNSName("example.com").isSubdomain(of: zone) == false)
        #expect(try zone.prepending([label("a")]) == DNSName("a.t.example.com"))
    }

    @Test func rejectsBadNames() throws {
        let long = String(repeating: "x", count: 64)
        #expect(throws: WireError.tooLarge("a domain name label is 64 bytes long; labels may be at most 63 bytes")) {
            try DNSName("\(long).example")
        }
        _ = try DNSName(String(repeating: "x", count: 63) + ".example")
        // 253 characters of text is the longest name: 255 bytes in wire form.
        let label63 = String(repeating: "y", count: 63)
        let longest = [label63, label63, label63, String(repeating: "z", count: 61)].joined(separator: ".")
        #expect(longest.count == 253)
        #expect(try DNSName(longest).wireLength == 255)
        #expect(throws: WireError.self) { try DNSName(longest + "z") }
        #expect(throws: WireError.self) { try DNSName("a..b") }
        #expect(throws: WireError.self) { try DNSName(".a") }
        #expect(throws: WireError.self) { try DNSName("a\\") }
        #expect(throws: WireError.self) { try DNSName("a\\256") }
        #expect(throws: WireError.self) { try DNSName(labels: [[]]) }
        #expect(throws: WireError.self) { try DNSName("a").prepending([Array(repeating: 1, count: 64)]) }
    }
}

@Suite struct DNSMessageVectorTests {
    @Test func queryWithEDNS0() throws {
        let parsed = try DNSMessage(parsing: queryVector)
        let built = DNSMessage.query(id: 0x1234, name: name("www.example.com"), type: .a, udpPayloadSize: 1232)
        #expect(parsed == built)
        #expect(parsed.edns0PayloadSize == 1232)
        #expect(parsed.maxUDPResponseLength == 1232)
        #expect(parsed.recursionDesired && !parsed.isResponse)
        #expect(try built.serialize() == queryVector)
        #expect(try DNSMessage(parsing: ByteBuffer(bytes: queryVector)) == built)
    }

    @Test func responseWithCompressedAnswerName() throws {
        let parsed = try DNSMessage(parsing: compressedAnswerVector)
        #expect(parsed.answers == [DNSRecord(name: name("www.example.com"), ttl: 3600, data: .a([93, 184, 216, 34]))])
        #expect(parsed.isResponse && parsed.authoritative && parsed.recursionDesired && !parsed.recursionAvailable)
        #expect(parsed.edns == nil && parsed.edns0PayloadSize == nil && parsed.maxUDPResponseLength == 512)

        let query = DNSMessage.query(id: 0x1234, name: name("www.example.com"), type: .a)
        let response = DNSMessage.response(to: query, answers: parsed.answers)
        #expect(response == parsed)
        #expect(try response.serialize() == compressedAnswerVector)
        #expect(try response.serialize(compress: false).count == compressedAnswerVector.count + 15)
    }

    @Test func txtAnswerWithTwoStrings() throws {
        let parsed = try DNSMessage(parsing: txtVector)
        #expect(parsed.id == 0xBEEF)
        #expect(parsed.questions == [DNSQuestion(name: name("t.example.org"), type: .txt)])
        #expect(parsed.answers.map(\.data) == [.txt([label("hello"), label("world!!")])])
        #expect(parsed.answers.first?.ttl == 60)
        #expect(try parsed.serialize() == txtVector)
    }

    @Test func nxdomainWithSOA() throws {
        let parsed = try DNSMessage(parsing: nxdomainVector)
        #expect(parsed.rcode == .nameError)
        #expect(parsed.answers.isEmpty)
        let soa = DNSSOA(primaryServer: name("ns1.example.com"), responsibleMailbox: name("hostmaster.example.com"),
                         serial: 2_024_010_101, refresh: 7200, retry: 3600, expire: 1_209_600, minimum: 300)
        #expect(parsed.authorities == [DNSRecord(name: name("example.com"), ttl: 900, data: .soa(soa))])
        // Our encoder also compresses the names inside the SOA.
        let reencoded = try parsed.serialize()
        #expect(reencoded.count < nxdomainVector.count)
        #expect(try DNSMessage(parsing: reencoded) == parsed)
    }
}

/// Queries sent by DiG 9.18.49 (Debian 12) to a local UDP socket that printed them:
/// `dig +bufsize=1232 +nocookie aBc.T.Example.com TXT` and `dig www.example.com A`
/// (which adds an EDNS0 cookie). DiG sets RD and AD.
private let digTXTQuery = hex("8e4b01200001000000000001036142630154074578616d706c6503636f6d000010000100002904d0000000000000")
private let digCookieQuery = hex("a21a0120000100000000000103777777076578616d706c6503636f6d000001000100002904d000000000000c000a0008778efd7ef19d531c")

/// Responses from unbound 1.17.1 serving a static local zone t.example.com
/// (SOA ns1.t.example.com. hostmaster.t.example.com. 7 3600 600 86400 60;
/// abc TXT with the strings `"hello"` and `"world"`, quotes included):
/// the answer to `digTXTQuery`, echoing its letter case, and NXDOMAIN for
/// "zzz.t.example.com. A" with EDNS0, whose SOA names are compressed.
private let unboundTXTResponse = hex("8e4b85800001000100000001036142630154074578616d706c6503636f6d0000100001c00c001000010000003c0010072268656c6c6f220722776f726c642200002904d0000000000000")
private let unboundNXDOMAIN = hex("000285830001000000010001037a7a7a0174076578616d706c6503636f6d0000010001c010000600010000003c0027036e7331c0100a686f73746d6173746572c0100000000700000e1000000258000151800000003c00002904d0000000000000")

@Suite struct DNSMessageDigTests {
    @Test func digAndUnboundMessagesParseAndReencodeExactly() throws {
        let txt = try DNSMessage(parsing: digTXTQuery)
        #expect(txt.id == 0x8E4B && txt.recursionDesired && txt.authenticData && !txt.isResponse)
        #expect(txt.questions == [DNSQuestion(name: name("abc.t.example.com"), type: .txt)])
        #expect(txt.questions[0].name.labels(relativeTo: name("t.example.com")) == [label("aBc")])
        #expect(txt.edns == EDNS(udpPayloadSize: 1232))
        #expect(try txt.serialize() == digTXTQuery)

        let cookie = try DNSMessage(parsing: digCookieQuery)
        #expect(cookie.edns?.options == [EDNSOption(code: 10, data: hex("778efd7ef19d531c"))])
        #expect(cookie.maxUDPResponseLength == 1232)
        #expect(try cookie.serialize() == digCookieQuery)

        let unbound = try DNSMessage(parsing: unboundTXTResponse)
        #expect(unbound.isResponse && unbound.authoritative && unbound.recursionDesired && unbound.recursionAvailable)
        #expect(unbound.questions[0].name.labels == txt.questions[0].name.labels, "unbound echoes the case")
        #expect(unbound.answers == [DNSRecord(name: txt.questions[0].name, ttl: 60,
                                              data: .txt([label("\"hello\""), label("\"world\"")]))])
        #expect(try unbound.serialize() == unboundTXTResponse)

        let nxdomain = try DNSMessage(parsing: unboundNXDOMAIN)
        #expect(nxdomain.rcode == .nameError && nxdomain.answers.isEmpty && nxdomain.edns0PayloadSize == 1232)
        #expect(nxdomain.authorities == [DNSRecord(name: name("t.example.com"), ttl: 60, data: .soa(DNSSOA(
            primaryServer: name("ns1.t.example.com"), responsibleMailbox: name("hostmaster.t.example.com"),
            serial: 7, refresh: 3600, retry: 600, expire: 86400, minimum: 60)))])
        #expect(try nxdomain.serialize() == unboundNXDOMAIN)

        let response = DNSMessage.response(to: txt, answers: [
            DNSRecord(name: txt.questions[0].name, ttl: 0, data: .txt(DNSTXT.split(Array(repeating: 7, count: 300)))),
        ])
        let echoed = try DNSMessage(parsing: response.serialize())
        #expect(echoed.questions[0].name.labels == txt.questions[0].name.labels, "0x20 case echoed")
        #expect(echoed.answers[0].data == .txt([Array(repeating: 7, count: 255), Array(repeating: 7, count: 45)]))
    }
}

@Suite struct DNSMessageRoundTripTests {
    @Test func everyRecordTypeAndFlagRoundTrips() throws {
        for compress in [true, false] {
            let bytes = try everything.serialize(compress: compress)
            let parsed = try DNSMessage(parsing: bytes)
            #expect(parsed == everything)
            #expect(parsed.rcode == .badVersion)
            #expect(parsed.questions[0].name.labels[0] == label("AbC"))
            #expect(parsed.authorities[0].data == .ns(name("ns1.example.net")))
            if case .ns(let server) = parsed.authorities[0].data { #expect(server.labels[0] == label("NS1")) }
            #expect(try parsed.serialize(compress: compress) == bytes)
        }
        #expect(try everything.serialize().count < everything.serialize(compress: false).count)
    }

    @Test func compressionKeepsExactCase() throws {
        var message = DNSMessage.query(id: 7, name: name("AbC.example.com"), type: .txt)
        message = .response(to: message, answers: [
            DNSRecord(name: name("abc.example.com"), ttl: 0, data: .txt([label("x")])),
            DNSRecord(name: name("AbC.example.com"), ttl: 0, data: .txt([label("y")])),
        ])
        let bytes = try message.serialize()
        let parsed = try DNSMessage(parsing: bytes)
        #expect(parsed.questions[0].name.labels[0] == label("AbC"))
        #expect(parsed.answers[0].name.labels[0] == label("abc"))
        #expect(parsed.answers[1].name.labels[0] == label("AbC"))
        // The second answer is a bare pointer to the question name at offset 12;
        // the first shares only "example.com" with it.
        let question = 12
        let firstAnswer = question + 17 + 4
        #expect(Array(bytes[firstAnswer..<firstAnswer + 6]) == [3] + label("abc") + [0xC0, 0x10])
        #expect(bytes.count == 12 + 21 + (6 + 10 + 2) + (2 + 10 + 2))
    }

    @Test func responseCopiesQuery() throws {
        var query = DNSMessage.query(id: 0x4242, name: name("q.T.example"), type: .txt, udpPayloadSize: 4096)
        query.checkingDisabled = true
        let answer = DNSRecord(name: query.questions[0].name, ttl: 0, data: .txt(DNSTXT.split([1, 2, 3])))
        let response = DNSMessage.response(to: query, rcode: .noError, answers: [answer], udpPayloadSize: 1400)
        #expect(response.id == 0x4242 && response.isResponse && response.authoritative)
        #expect(response.recursionDesired && response.checkingDisabled && !response.recursionAvailable)
        #expect(response.questions[0].name.labels[1] == label("T"))
        #expect(response.edns0PayloadSize == 1400)
        #expect(DNSMessage.response(to: DNSMessage.query(id: 1, name: .root, type: .ns), rcode: .refused).edns == nil)
        #expect(DNSMessage.query(id: 1, name: .root, type: .ns, udpPayloadSize: 100).maxUDPResponseLength == 512)
    }

    @Test func serializeRejectsFieldsThatDoNotFit() throws {
        var message = DNSMessage.query(id: 1, name: name("a"), type: .a)
        message.rcode = .badVersion
        #expect(throws: WireError.self) { try message.serialize() }
        message.edns = EDNS()
        _ = try message.serialize()
        message.rcode = DNSResponseCode(rawValue: 0x1000)
        #expect(throws: WireError.self) { try message.serialize() }
        message.rcode = .noError
        message.opcode = 16
        #expect(throws: WireError.self) { try message.serialize() }
        message.opcode = 0
        for data: DNSRecordData in [.a([1, 2, 3]), .aaaa([1]), .txt([Array(repeating: 0, count: 256)]),
                                    .other(.opt, []), .other(DNSRecordType(rawValue: 99), Array(repeating: 0, count: 65536))] {
            var bad = message
            bad.answers = [DNSRecord(name: .root, ttl: 0, data: data)]
            #expect(throws: WireError.self) { try bad.serialize() }
        }
    }

    @Test func txtSplitAndJoin() {
        #expect(DNSTXT.split([]) == [[]])
        for count in [1, 254, 255, 256, 510, 511, 1000] {
            let data = (0..<count).map { UInt8(truncatingIfNeeded: $0 * 7) }
            let strings = DNSTXT.split(data)
            #expect(strings.count == (count + 254) / 255)
            #expect(strings.allSatisfy { $0.count <= 255 })
            #expect(strings.dropLast().allSatisfy { $0.count == 255 })
            #expect(DNSTXT.join(strings) == data)
        }
    }
}

@Suite struct DNSMessageMalformedTests {
    @Test func everyProperPrefixOfAVectorThrows() {
        for vector in [queryVector, compressedAnswerVector, txtVector, nxdomainVector] {
            for cut in 0..<vector.count {
                #expect(throws: WireError.self) { try DNSMessage(parsing: Array(vector[..<cut])) }
            }
        }
        expectMalformed(Array(queryVector[..<5]), "12-byte header")
        expectMalformed(Array(queryVector[..<20]), "which need at least")
        expectMalformed(Array(compressedAnswerVector[..<28]), "runs past the end")
        expectMalformed(Array(compressedAnswerVector.dropLast(2)), "declares 4 bytes of rdata")
    }

    @Test func labelsTooLongOrNameTooLong() {
        // A length byte of 64 has the 0x40 bit set: an extended label type.
        let label64 = [UInt8(64)] + Array(repeating: UInt8(ascii: "a"), count: 64) + [0]
        #expect(throws: WireError.unsupported("a domain name at offset 12 uses label type 0x40, which is not supported (only plain labels and compression pointers are)")) {
            try DNSMessage(parsing: message(label64 + [0, 1, 0, 1]))
        }
        let label63 = [UInt8(63)] + Array(repeating: UInt8(ascii: "a"), count: 63)
        let tooLong = label63 + label63 + label63 + label63 + [0]
        expectMalformed(message(tooLong + [0, 1, 0, 1]), "longer than 255 bytes")
        // The same length built from pointers is caught too.
        let viaPointer = label63 + label63 + [0, 0, 1, 0, 1] + label63 + label63 + [0xC0, 12, 0, 1, 0, 1]
        expectMalformed(message(qd: 2, viaPointer), "longer than 255 bytes")
    }

    @Test func pointerLoopsAndPointersPastTheEnd() {
        expectMalformed(message([0xC0, 12, 0, 1, 0, 1]), "not before the name it continues")
        // Two pointers to each other: 12 -> 14 -> 12.
        expectMalformed(message([0xC0, 14, 0xC0, 12, 0, 1]), "not before the name it continues")
        // A name at 18 reaching 12, whose pointer leads back to 18.
        expectMalformed(message(qd: 2, [0x01, 0x61, 0xC0, 18, 0, 1, 0x01, 0x62, 0xC0, 12, 0, 1, 0, 1]), "pointer")
        expectMalformed(message([0xC0, 0xFF, 0, 1, 0, 1]), "past the end of the 18-byte message")
        expectMalformed(message([0xFF, 0xFF, 0, 1, 0, 1]), "past the end")
        expectMalformed(message([0x05, 0x61, 0, 1, 0]), "runs past the end of the 17-byte message")
    }

    @Test func countsLargerThanTheData() {
        var bytes = compressedAnswerVector
        bytes[6] = 0xFF
        bytes[7] = 0xFF
        expectMalformed(bytes, "which need at least")
        bytes = compressedAnswerVector
        bytes[7] = 2
        expectMalformed(bytes, "a domain name at offset 49 runs past the end of the 49-byte message")
        expectMalformed(compressedAnswerVector + [0], "1 bytes follow the last record")
    }

    @Test func rdataThatDoesNotFitItsLength() {
        var bytes = txtVector
        bytes[bytes.count - 8] = 8  // the second string claims 8 bytes, 7 remain
        expectMalformed(bytes, "runs past the end of its rdata")
        bytes = compressedAnswerVector
        bytes[bytes.count - 5] = 3  // A rdata of 3 bytes
        expectMalformed(Array(bytes.dropLast()), "it must be 4")
        // A CNAME whose name runs beyond its two declared rdata bytes.
        let cname = message(an: 1, [0, 0, 1, 0, 1] + [0, 0, 5, 0, 1, 0, 0, 0, 0, 0, 2] + [1, 0x61, 0])
        expectMalformed(cname, "runs 1 bytes past")
        // An SOA too short for its numbers.
        let soa = message(an: 1, [0, 0, 1, 0, 1] + [0, 0, 6, 0, 1, 0, 0, 0, 0, 0, 6] + [0, 0, 0, 0, 0, 0])
        expectMalformed(soa, "too short")
    }

    @Test func badOPTRecords() throws {
        let opt: [UInt8] = [0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]
        _ = try DNSMessage(parsing: message(ar: 1, [0, 0, 1, 0, 1] + opt))
        expectMalformed(message(ar: 2, [0, 0, 1, 0, 1] + opt + opt), "second OPT")
        expectMalformed(message(an: 1, [0, 0, 1, 0, 1] + opt), "belongs in the additional section")
        expectMalformed(message(ar: 1, [0, 0, 1, 0, 1] + [1, 0x61] + opt), "instead of the root")
        expectMalformed(message(ar: 1, [0, 0, 1, 0, 1] + opt.dropLast(2) + [0, 3, 0, 1, 0]), "option header")
        expectMalformed(message(ar: 1, [0, 0, 1, 0, 1] + opt.dropLast(2) + [0, 5, 0, 1, 0, 2, 9]), "EDNS0 option 1")
        // The high bits of the rcode come from the OPT record's TTL.
        var extended = opt
        extended[5] = 1
        let parsed = try DNSMessage(parsing: message(ar: 1, [0, 0, 1, 0, 1] + extended))
        #expect(parsed.rcode == .badVersion)
    }
}

@Suite struct DNSMessageTCPTests {
    @Test func lengthPrefix() throws {
        let tcp = try DNSMessage(parsing: queryVector).serializeForTCP()
        #expect(tcp == [0, UInt8(queryVector.count)] + queryVector)
    }

    @Test func framerAtEverySplit() throws {
        let first = try DNSMessage(parsing: txtVector)
        let second = try DNSMessage(parsing: nxdomainVector)
        let stream = try first.serializeForTCP() + second.serializeForTCP()
        for cut in 0...stream.count {
            var framer = DNSTCPFramer()
            var received: [DNSMessage] = []
            framer.append(stream[..<cut])
            while let message = try framer.nextMessage() { received.append(message) }
            framer.append(ByteBuffer(bytes: stream[cut...]))
            while let message = try framer.nextMessage() { received.append(message) }
            #expect(received == [first, second], "split at \(cut)")
            #expect(framer.bufferedByteCount == 0)
        }
    }

    @Test func framerByteByByteAndBadMessages() throws {
        var framer = DNSTCPFramer()
        let good = try DNSMessage(parsing: queryVector).serializeForTCP()
        var received = 0
        for byte in good + [0, 3, 1, 2, 3] + good {
            framer.append([byte])
            do {
                if try framer.nextMessage() != nil { received += 1 }
            } catch {
                #expect(error is WireError)
            }
        }
        #expect(received == 2)
        framer.append([0, 0])
        #expect(framer.nextMessageBytes() == [])
        #expect(framer.nextMessageBytes() == nil)
    }
}

@Suite struct DNSMessageFuzzTests {
    /// Parses `bytes`; whatever parses must serialize and parse back equal.
    private func check(_ bytes: [UInt8]) -> Bool {
        guard let parsed = try? DNSMessage(parsing: bytes) else { return false }
        for compress in [true, false] {
            do {
                let again = try DNSMessage(parsing: parsed.serialize(compress: compress))
                #expect(again == parsed)
            } catch {
                Issue.record("\(error) re-encoding \(bytes)")
            }
        }
        return true
    }

    @Test func randomBytesNeverTrap() {
        var rng = SeededGenerator(seed: 0xD45)
        var parsed = 0
        for round in 0..<20_000 {
            let count = Int.random(in: 0...120, using: &rng)
            var bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Half the time, keep the counts small so parsing gets past the header.
            if round.isMultiple(of: 2), bytes.count >= 12 {
                for i in stride(from: 4, to: 12, by: 2) {
                    bytes[i] = 0
                    bytes[i + 1] = UInt8.random(in: 0...2, using: &rng)
                }
            }
            if check(bytes) { parsed += 1 }
        }
        #expect(parsed > 0)
    }

    @Test func mutatedMessagesNeverTrap() throws {
        var rng = SeededGenerator(seed: 0x5EED)
        let seeds = try [queryVector, compressedAnswerVector, txtVector, nxdomainVector, digCookieQuery,
                         unboundTXTResponse, unboundNXDOMAIN, everything.serialize()]
        var parsed = 0
        for round in 0..<5_000 {
            var bytes = seeds[round % seeds.count]
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let index = Int.random(in: 0..<bytes.count, using: &rng)
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: bytes[index] = UInt8.random(in: 0...255, using: &rng)
                case 1: bytes[index] ^= 1 << UInt8.random(in: 0...7, using: &rng)
                case 2: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: index)
                default: if bytes.count > 1 { bytes.remove(at: index) }
                }
            }
            if check(bytes) { parsed += 1 }
        }
        #expect(parsed > 100)
    }
}
