import Foundation
import NIOCore
import Testing
@testable import RahaWire

@Suite struct QuantityTests {
    @Test func ratesAreBitsPerSecondKeptAsBytes() throws {
        #expect(try Quantity.parseRate("2M") == 250_000)
        #expect(try Quantity.parseRate("2Mbit") == 250_000)
        #expect(try Quantity.parseRate("10 Mbps") == 1_250_000)
        #expect(try Quantity.parseRate("1.5m") == 187_500)
        #expect(try Quantity.parseRate("500k") == 62_500)
        #expect(Quantity.formatRate(250_000) == "2 Mbit/s")
        #expect(Quantity.formatRate(187_500) == "1.5 Mbit/s")
        #expect(Quantity.formatRate(62_500) == "500 kbit/s")
    }

    @Test func amountsAreBytes() throws {
        #expect(try Quantity.parseAmount("10G") == 10_000_000_000)
        #expect(try Quantity.parseAmount("500MB") == 500_000_000)
        #expect(try Quantity.parseAmount("1M") == 1_000_000)
        #expect(Quantity.formatAmount(12) == "12 B")
        #expect(Quantity.formatAmount(8_700) == "8.7 kB")
        #expect(Quantity.formatAmount(20_000_000) == "20 MB")
        #expect(Quantity.formatAmount(1_234_000_000) == "1.2 GB")
    }

    @Test(arguments: [("fast", "is not a rate"), ("-1M", "is not a rate"), ("7k", "under 8 kbit/s"), ("", "is not a rate"), ("1e30", "is not a rate")])
    func badRatesSayWhatIsWrong(text: String, message: String) {
        #expect { try Quantity.parseRate(text) } throws: { "\($0)".contains(message) }
    }

    @Test func smallAmountsAreRefused() {
        #expect { try Quantity.parseAmount("10k") } throws: { "\($0)".contains("under 1 MB") }
        #expect { try Quantity.parseAmount("lots") } throws: { "\($0)".contains("is not an amount") }
    }
}

@Suite struct RateBucketTests {
    /// Reads as fast as the bucket lets them, in virtual time, for `seconds`.
    private func drain(rate: Int64, readSize: @escaping (Int) -> Int, seconds: Double) -> Double {
        var bucket = RateBucket(bytesPerSecond: rate, now: 0)
        var now: UInt64 = 0, total = 0, reads = 0
        let end = UInt64(seconds * 1e9)
        while now < end {
            let wait = bucket.wait(now: now)
            if wait > 0 { now += wait; continue }
            let size = readSize(reads)
            bucket.take(size, now: now)
            total += size
            reads += 1
        }
        return Double(total) / seconds
    }

    @Test(arguments: [1_000, 64_000, 1_000_000, 12_500_000])
    func averageRateIsTheCapWhateverTheReadSizes(rate: Int64) {
        for sizes in [{ (_: Int) in 1500 }, { (_: Int) in 65_536 }, { (i: Int) in [1, 9000, 300, 65_536, 17][i % 5] }] {
            let measured = drain(rate: rate, readSize: sizes, seconds: 60)
            // Over a minute, the burst (a fifth of a second, at least 16 KiB) and one read of debt are all the excess.
            let allowance = (max(Double(rate) / 5, 16_384) + 65_536) / 60
            #expect(measured <= Double(rate) + allowance, "rate \(rate): measured \(measured) B/s")
            #expect(measured >= Double(rate) * 0.99, "rate \(rate): measured only \(measured) B/s")
        }
    }

    @Test func aNewRateTakesEffectAtOnce() {
        var bucket = RateBucket(bytesPerSecond: 1_000_000, now: 0)
        bucket.take(1_000_000, now: 0)
        bucket.setRate(100_000, now: 0)
        // The debt (1 MB less the burst) is now paid at the new rate: about 8 s.
        let wait = Double(bucket.wait(now: 0)) / 1e9
        #expect(wait > 7.9 && wait < 8.1, "waited \(wait) s")
    }
}

@Suite struct FairShareTests {
    @Test func lightUsersGetWhatTheyWantAndHeavyUsersShareTheRest() {
        let shares = FairShare.divide(100, among: [10, .infinity, 25, .infinity])
        #expect(shares == [10, 32.5, 25, 32.5])
    }

    @Test func nobodyGetsMoreThanTheyWantEvenWithRoomLeft() {
        #expect(FairShare.divide(100, among: [10, 20]) == [10, 20])
    }

    @Test func tenHeavyUsersGetATenthEach() {
        let shares = FairShare.divide(1_000, among: Array(repeating: .infinity, count: 10))
        #expect(shares.allSatisfy { $0 == 100 })
        #expect(FairShare.divide(1_000, among: []) == [])
    }
}

@Suite struct CircleTests {
    static let service = ShareService(host: "203.0.113.7", shadowsocksPort: 31000, trojanPort: 32000, sni: "203.0.113.7", pin: Array(repeating: 0xAB, count: 32))
    static let now = Date(timeIntervalSince1970: 1_795_000_000) // November 2026

    @Test func invitesHaveTheirOwnKeysForEveryTransport() throws {
        var circle = Circle(service: Self.service)
        let maryam = try circle.invite("Maryam", limits: ShareLimits(rate: 250_000), now: Self.now)
        let reza = try circle.invite("Reza", limits: ShareLimits(), now: Self.now)
        #expect(maryam.shadowsocksPassword != reza.shadowsocksPassword && maryam.trojanPassword != reza.trojanPassword)
        #expect(maryam.shadowsocksPassword != maryam.trojanPassword)

        let invite = try circle.invite(for: maryam)
        #expect(invite.shadowsocks.method == .chacha20IETFPoly1305 && invite.shadowsocks.server.port == 31000)
        #expect(invite.shadowsocks.prefix.count > 0, "Outline keys carry a prefix against fully-encrypted-traffic rules")
        #expect(invite.trojan.pinnedCertificateSHA256 == Self.service.pin && invite.trojan.mux && !invite.trojan.allowInsecure)
        #expect(invite.trojan.sni == nil, "an address is sent as a server name")
        #expect(invite.trojanForApps.allowInsecure && invite.trojanForApps.pinnedCertificateSHA256 == nil && !invite.trojanForApps.mux)
        // The bundle round-trips to the same keys, Trojan first.
        let parsed = try AccessBundle(parsing: invite.bundle.uri)
        #expect(parsed.members == [invite.trojan.uri, invite.shadowsocks.uri])
        #expect(try ShadowsocksKey(parsing: invite.shadowsocks.uri).password == maryam.shadowsocksPassword)
    }

    @Test func aNodeServingTheDNSTunnelPutsEachInviteesOwnKeyLastInTheBundle() throws {
        var service = Self.service
        service.dnsZone = "t.example.org"
        service.dnsPublicKey = Array(repeating: 7, count: 32)
        service.lanHost = "192.168.1.20"
        var circle = Circle(service: service)
        let maryam = try circle.invite("Maryam", limits: ShareLimits(), now: Self.now)
        let reza = try circle.invite("Reza", limits: ShareLimits(), now: Self.now)
        let members = try AccessBundle(parsing: try circle.invite(for: maryam).bundle.uri).members
        #expect(members.count == 5 && members[2].contains("192.168.1.20") && members[4].hasPrefix("dns://t.example.org?"))
        let dns = try DNSTunnelKey(parsing: members[4])
        #expect(dns.clientID == Base64.decode(maryam.dnsID!) && dns.clientID != Base64.decode(reza.dnsID!))
    }

    @Test func aRealCertificateNeedsNoInsecureAppKey() throws {
        var service = Self.service
        service.pin = nil
        service.sni = "share.example.org"
        var circle = Circle(service: service)
        let invite = try circle.invite(for: try circle.invite("Sara", limits: ShareLimits(), now: Self.now))
        #expect(!invite.trojanForApps.allowInsecure && invite.trojan.sni == "share.example.org")
    }

    @Test func revokingAndInvitingAgainMakesNewKeysAndKeepsUsage() throws {
        var circle = Circle(service: Self.service)
        let first = try circle.invite("Ali", limits: ShareLimits(), now: Self.now)
        circle.record("Ali", up: 10, down: 2_000, seen: Self.now)
        #expect { try circle.invite("Ali", limits: ShareLimits(), now: Self.now) } throws: { "\($0)".contains("already invited") }
        try circle.revoke("Ali", now: Self.now)
        #expect(circle.invitee(named: "Ali")?.isActive == false)
        #expect { try circle.revoke("Ali", now: Self.now) } throws: { "\($0)".contains("was revoked") }
        #expect { try circle.changeLimits(of: "Ali", ShareLimitsChange(rate: .set(1000))) } throws: { "\($0)".contains("was revoked") }
        let again = try circle.invite("Ali", limits: ShareLimits(), now: Self.now)
        #expect(again.isActive && again.shadowsocksPassword != first.shadowsocksPassword && again.usage.down == 2_000)
        #expect(circle.invitees.count == 1)
    }

    @Test func limitsChangeFieldByField() throws {
        var circle = Circle(service: Self.service)
        try circle.invite("Cyrus", limits: ShareLimits(rate: 1000, monthlyQuota: 5_000_000, maxConnections: 4), now: Self.now)
        let changed = try circle.changeLimits(of: "Cyrus", ShareLimitsChange(rate: .remove, maxConnections: .set(8)))
        #expect(changed.limits == ShareLimits(rate: nil, monthlyQuota: 5_000_000, maxConnections: 8))
        #expect(changed.limits.summary == "5 MB a month, 8 connections")
        #expect(ShareLimits().summary == "no limits")
        #expect { try circle.changeLimits(of: "Nobody", ShareLimitsChange()) } throws: { "\($0)".contains("nobody called") }
    }

    @Test func usageStartsAgainEachMonthAndTheQuotaWithIt() throws {
        var circle = Circle(service: Self.service)
        try circle.invite("Dara", limits: ShareLimits(monthlyQuota: 1_000_000), now: Self.now)
        circle.record("Dara", up: 100_000, down: 900_000, seen: Self.now)
        #expect(circle.invitee(named: "Dara")!.overQuota(at: Self.now))
        let nextMonth = Self.now.addingTimeInterval(31 * 86_400)
        #expect(!circle.invitee(named: "Dara")!.overQuota(at: nextMonth))
        circle.record("Dara", up: 0, down: 5, seen: nextMonth)
        let dara = circle.invitee(named: "Dara")!
        #expect(dara.usage.month == ShareUsage.month(of: nextMonth) && dara.usage.total == 5 && dara.usage.lastSeen == nextMonth)
    }

    @Test(arguments: ["", " Maryam", "Maryam ", "a\u{7}b", String(repeating: "x", count: 65)])
    func badNamesAreRefused(name: String) {
        var circle = Circle(service: Self.service)
        #expect { try circle.invite(name, limits: ShareLimits(), now: Self.now) } throws: { "\($0)".contains("1 to 64 characters") }
    }

    @Test func namesMayBeInAnyScript() throws {
        var circle = Circle(service: Self.service)
        try circle.invite("مریم", limits: ShareLimits(), now: Self.now)
        try circle.invite("uncle Reza", limits: ShareLimits(), now: Self.now)
        #expect(circle.invitees.map(\.name) == ["مریم", "uncle Reza"])
    }

    @Test func theCircleSurvivesJSON() throws {
        var circle = Circle(service: Self.service, totalRate: 2_500_000)
        try circle.invite("Maryam", limits: ShareLimits(rate: 250_000, maxConnections: 16), now: Self.now)
        circle.record("Maryam", up: 1, down: 2, seen: Self.now)
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let back = try decoder.decode(Circle.self, from: try encoder.encode(circle))
        #expect(back.invitees == circle.invitees && back.service == circle.service && back.totalRate == 2_500_000)
    }
}

@Suite struct ShadowsocksUserMatchTests {
    private func stream(_ credential: ShadowsocksCredential) -> ByteBuffer {
        var client = ShadowsocksClientSession(credential: credential, target: Endpoint(host: .domain("example.org"), port: 443))
        var out = ByteBuffer()
        client.seal(ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n").readableBytesView, into: &out, now: 1_795_000_000)
        return out
    }

    @Test(arguments: [ShadowsocksMethod.chacha20IETFPoly1305, .aes256GCM, .blake3AES256GCM])
    func theUserWhoseKeyOpensTheFirstChunkIsFound(method: ShadowsocksMethod) throws {
        let credentials = try (0..<5).map { i in
            try ShadowsocksCredential(method: method, password: method.is2022 ? Base64.encode(Array(repeating: UInt8(i + 1), count: 32)) : "password \(i)")
        }
        let start = stream(credentials[3])
        #expect(ShadowsocksUserMatch.identify(credentials, start: start) == .user(3))
        #expect(ShadowsocksUserMatch.identify(Array(credentials[0..<3]), start: start) == .nobody)
        // Until the salt and the first chunk have arrived, nobody can tell.
        let needed = method.saltLength + (method.is2022 ? 11 : 2) + 16
        #expect(ShadowsocksUserMatch.identify(credentials, start: start.getSlice(at: 0, length: needed - 1)!) == .needMoreData)
        #expect(ShadowsocksUserMatch.identify(credentials, start: start.getSlice(at: 0, length: needed)!) == .user(3))
        #expect(ShadowsocksUserMatch.identify(credentials, start: ByteBuffer(bytes: SecureRandom.bytes(200))) == .nobody)
    }
}
