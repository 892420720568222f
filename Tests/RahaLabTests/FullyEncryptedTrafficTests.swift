import NIOCore
import Testing
import RahaWire
@testable import RahaLab


private func randomBytes(_ count: Int, using rng: inout LabRandom) -> [UInt8] {
    (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
}

private typealias Rule = FullyEncryptedTrafficRule

@Suite struct FullyEncryptedTrafficTests {
    /// Non-printable bytes with exactly four bits set: popcount 4.0, nothing printable.
    /// (0x0F, 0x8E, 0x9C, 0xF0, 0xE1, 0xC3 each have four set bits and are outside 0x20–0x7e.)
    static let filler: [UInt8] = [0x0F, 0x8E, 0x9C, 0xF0, 0xE1, 0xC3]

    static func nonExempt(_ count: Int) -> [UInt8] {
        (0..<count).map { filler[$0 % filler.count] }
    }

    @Test func fillerMeetsNoExemption() {
        let packet = Self.nonExempt(100)
        #expect(Rule.popcountPerByte(packet) == 4.0)
        #expect(Rule.exemptions(forFirstPacket: packet).isEmpty)
        #expect(Rule.isBlocked(firstPacket: packet))
    }

    // MARK: Each exemption on its own

    @Test func ex1PopcountBoundaries() {
        // 0x00 and 0xFF repeated: 0 and 8 bits per byte.
        #expect(Rule.exemptions(forFirstPacket: Array(repeating: 0x00, count: 50)) == [.popcount])
        #expect(Rule.exemptions(forFirstPacket: Array(repeating: 0xFF, count: 50)) == [.popcount])
        // The paper's boundary, exactly: 3.4 and 4.6 bits per byte are exempt.
        let low: [UInt8] = [0x8E, 0x9C, 0xF0, 0xE1, 0x80]   // 4+4+4+4+1 = 17
        #expect(Rule.popcountPerByte(low) == 3.4)
        #expect(Rule.exemptions(forFirstPacket: low) == [.popcount])
        let high: [UInt8] = [0x8E, 0x9C, 0xF0, 0xE1, 0xFE]  // 4+4+4+4+7 = 23
        #expect(Rule.exemptions(forFirstPacket: high) == [.popcount])
        // Just inside the band: 3.5 and 4.5 bits per byte are not exempt.
        let atLow: [UInt8] = [0x8E, 0x9C, 0xF0, 0xE1, 0x8E, 0x9C, 0xF0, 0xE1, 0x80, 0x80]     // 34 bits -> 3.4
        #expect(Rule.exemptions(forFirstPacket: atLow) == [.popcount])
        let justInside: [UInt8] = [0x8E, 0x9C, 0xF0, 0xE1, 0x8E, 0x9C, 0xF0, 0xE1, 0x80, 0x81] // 35 bits -> 3.5
        #expect(Rule.popcountPerByte(justInside) == 3.5)
        #expect(Rule.exemption(forFirstPacket: justInside) == nil)
        let justBelowHigh: [UInt8] = [0x8E, 0x9C, 0xF0, 0xE1, 0x8E, 0x9C, 0xF0, 0xE1, 0xFE, 0xF8] // 32+7+5 = 44 -> 4.4
        #expect(Rule.exemption(forFirstPacket: justBelowHigh) == nil)
    }

    @Test func ex2FirstSixPrintable() {
        // Six printable bytes, then enough non-printable ones that fewer than half are
        // printable, no long run, and popcount stays inside the band.
        let six = Array("USER a".utf8)
        let packet = six + Self.nonExempt(60)
        #expect(Rule.exemptions(forFirstPacket: packet) == [.firstSixPrintable])
        // Five are not enough.
        let five = Array("USER ".utf8) + Self.nonExempt(61)
        #expect(Rule.exemptions(forFirstPacket: five).isEmpty)
        // The first six must be printable, not any six.
        let late = [UInt8(0x8E)] + six + Self.nonExempt(60)
        #expect(!Rule.exemptions(forFirstPacket: late).contains(.firstSixPrintable))
    }

    @Test func ex3MoreThanHalfPrintable() {
        // Alternate printable and non-printable bytes so that no run is long and the
        // packet does not start with six printable bytes.
        func interleaved(printable: Int, other: Int) -> [UInt8] {
            var out: [UInt8] = [0x8E]
            var p = printable, o = other - 1
            while p > 0 || o > 0 {
                if p > 0 { out.append(UInt8(ascii: "x")); p -= 1 } // 'x' = 0x78, four bits set
                if o > 0 { out.append(Self.filler[o % Self.filler.count]); o -= 1 }
            }
            return out
        }
        let majority = interleaved(printable: 51, other: 49)
        #expect(Rule.popcountPerByte(majority) == 4.0)
        #expect(Rule.exemptions(forFirstPacket: majority) == [.halfPrintable])
        // Exactly half is not more than half.
        let half = interleaved(printable: 50, other: 50)
        #expect(Rule.exemptions(forFirstPacket: half).isEmpty)
    }

    @Test func ex4MoreThanTwentyContiguousPrintable() {
        // 'x' has four set bits, so popcount stays at 4.0.
        let run21 = Self.nonExempt(40) + Array(repeating: UInt8(ascii: "x"), count: 21) + Self.nonExempt(40)
        #expect(Rule.exemptions(forFirstPacket: run21) == [.printableRun])
        let run20 = Self.nonExempt(40) + Array(repeating: UInt8(ascii: "x"), count: 20) + Self.nonExempt(40)
        #expect(Rule.exemptions(forFirstPacket: run20).isEmpty)
    }

    @Test func ex5ProtocolFingerprints() {
        for first: UInt8 in [0x16, 0x17] {
            for version: UInt8 in 0x00...0x09 {
                let packet = [first, 0x03, version] + Self.nonExempt(60)
                #expect(Rule.exemptions(forFirstPacket: packet) == [.protocolFingerprint], "\(first) 03 \(version)")
            }
        }
        // Outside the fingerprint: other content types, other major versions, minor > 9.
        for header: [UInt8] in [[0x15, 0x03, 0x01], [0x18, 0x03, 0x01], [0x16, 0x02, 0x01], [0x16, 0x03, 0x0A], [0x17, 0x03, 0xFF]] {
            #expect(Rule.exemption(forFirstPacket: header + Self.nonExempt(60)) == nil, "\(header)")
        }
        for method in ["GET ", "PUT ", "POST ", "HEAD "] {
            let packet = Array(method.utf8) + Self.nonExempt(60)
            #expect(Rule.exemptions(forFirstPacket: packet) == [.protocolFingerprint], "\(method)")
        }
        // The space is part of the fingerprint, and a misspelt method is not exempt.
        for near in ["GET", "GETX", "POTS ", "DEL "] {
            #expect(Rule.exemption(forFirstPacket: Array(near.utf8) + Self.nonExempt(60)) == nil, "\(near)")
        }
    }

    @Test func reportsExemptionsInThePapersOrder() {
        let packet = Array("GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n".utf8)
        let all = Rule.exemptions(forFirstPacket: packet)
        #expect(all.isSuperset(of: [.firstSixPrintable, .halfPrintable, .printableRun, .protocolFingerprint]))
        #expect(Rule.exemption(forFirstPacket: packet) == Rule.Exemption.allCases.first { all.contains($0) })
        #expect(Rule.exemption(forFirstPacket: [0x16, 0x03, 0x01] + Self.nonExempt(60)) == .protocolFingerprint)
        #expect(!Rule.isBlocked(firstPacket: packet))
        #expect(!Rule.isBlocked(firstPacket: []))
    }

    // MARK: Random data

    @Test func randomPayloadsAreAlmostAlwaysSubjectToBlocking() {
        // The rule flags nearly all random payloads of realistic size; the paper's
        // "about a quarter" is the censor's per-connection blocking probability applied
        // afterwards (blockProbability), not a property of the rule.
        var rng = LabRandom(seed: 2023)
        var blocked = 0
        let samples = 4000
        for _ in 0..<samples {
            let packet = randomBytes(Int.random(in: 50...1000, using: &rng), using: &rng)
            if Rule.isBlocked(firstPacket: packet) { blocked += 1 }
        }
        let fraction = Double(blocked) / Double(samples)
        #expect(fraction > 0.97 && fraction < 1.0, "\(fraction)")

        // Short random packets are often exempt: the popcount average varies more and a
        // few printable bytes are a large share.
        var shortBlocked = 0
        for _ in 0..<samples {
            if Rule.isBlocked(firstPacket: randomBytes(Int.random(in: 1...10, using: &rng), using: &rng)) { shortBlocked += 1 }
        }
        let shortFraction = Double(shortBlocked) / Double(samples)
        #expect(shortFraction > 0.35 && shortFraction < 0.65, "\(shortFraction)")
        #expect(Rule.blockProbability > 0.25 && Rule.blockProbability < 0.27)
    }

    @Test func aDefaultPrefixIsNeverBlocked() {
        var rng = LabRandom(seed: 0xF00D)
        for method in ShadowsocksMethod.allCases where !method.is2022 {
            for _ in 0..<2000 {
                let prefix = ShadowsocksKey.defaultPrefix(for: method, using: &rng)
                // The prefix replaces the start of the salt; the rest of the packet is random-looking.
                let length = Int.random(in: 50...1000, using: &rng)
                let packet = prefix + randomBytes(length - prefix.count, using: &rng)
                #expect(!Rule.isBlocked(firstPacket: packet), "\(String(decoding: prefix, as: UTF8.self))")
                #expect(Rule.exemptions(forFirstPacket: packet).isSuperset(of: [.firstSixPrintable, .protocolFingerprint]))
            }
        }
    }

    @Test func outlinesTablePrefixesAgainstTheRule() {
        var rng = LabRandom(seed: 7)
        // Outline's "POST " matches the HTTP fingerprint, its HTTP response and SSH prefixes
        // start with six printable bytes, and its ClientHello and ServerHello prefixes match
        // the TLS record fingerprint. Its "TLS Application Data" prefix starts with 0x13,
        // which is not 0x16 or 0x17, so nothing in this rule exempts it.
        let exempt: [[UInt8]] = [Array("POST ".utf8), Array("HTTP/1.1 ".utf8), Array("SSH-2.0\r\n".utf8),
                                 [0x16, 0x03, 0x01, 0x00, 0xA8, 0x01, 0x01], [0x16, 0x03, 0x03, 0x40, 0x00, 0x02]]
        for prefix in exempt {
            for _ in 0..<200 {
                let packet = prefix + randomBytes(Int.random(in: 50...1000, using: &rng), using: &rng)
                #expect(!Rule.isBlocked(firstPacket: packet), "\(prefix)")
            }
        }
        let applicationData: [UInt8] = [0x13, 0x03, 0x03, 0x3F]
        var blocked = 0
        for _ in 0..<200 {
            let packet = applicationData + randomBytes(Int.random(in: 50...1000, using: &rng), using: &rng)
            #expect(!Rule.exemptions(forFirstPacket: packet).contains(.protocolFingerprint))
            if Rule.isBlocked(firstPacket: packet) { blocked += 1 }
        }
        #expect(blocked > 150, "0x13 is not a TLS content type the GFW exempts")
    }
}

/// The real first packet of real client sessions, made from keys that
/// `raha key new` would print, against the GFW rule.
@Suite struct GeneratedKeysFirstPacketTests {
    @Test(arguments: [ShadowsocksMethod.chacha20IETFPoly1305, .aes256GCM, .aes128GCM])
    func firstPacketsOfGeneratedKeysAreExempt(method: ShadowsocksMethod) throws {
        let target = Endpoint(host: .domain("example.org"), port: 443)
        var blocked = 0
        for i in 0..<300 {
            let key = ShadowsocksKey.generate(method: method, server: Endpoint(host: .ipv4([192, 0, 2, 1]), port: 8388))
            #expect(!key.prefix.isEmpty, "generated legacy keys carry a prefix")
            let credential = try ShadowsocksCredential(method: method, password: key.password)
            var session = ShadowsocksClientSession(credential: credential, target: target, prefix: key.prefix)
            var packet = ByteBuffer()
            // A TLS ClientHello-sized first write, or nothing (header alone) every tenth time.
            let payload = ByteBuffer(bytes: [UInt8](repeating: 0x16, count: i % 10 == 0 ? 0 : 517))
            session.seal(payload.readableBytesView, into: &packet, now: 1_800_000_000)
            if FullyEncryptedTrafficRule.isBlocked(firstPacket: Array(packet.readableBytesView)) { blocked += 1 }
        }
        #expect(blocked == 0)
    }
}
