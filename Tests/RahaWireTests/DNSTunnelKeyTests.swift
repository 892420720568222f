import Testing
@testable import RahaWire

@Suite struct DNSTunnelKeyTests {
    static let publicKey = (0..<32).map { UInt8($0 * 9 & 0xFF) }
    static let keyText = Base64.encode(publicKey, urlSafe: true, padded: false)
    static let hexKey = publicKey.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()

    @Test func parsesTheSmallestKey() throws {
        #expect(Self.keyText.count == 43)
        let key = try DNSTunnelKey(parsing: "dns://t.example.com?key=\(Self.keyText)")
        #expect(key.zone == (try DNSName("t.example.com")))
        #expect(key.publicKey == Self.publicKey)
        #expect(key.resolver == .system)
        #expect(key.shaping == .default)
        #expect(key.tag == nil)
        #expect(key.text == "dns://t.example.com?key=\(Self.keyText)")
    }

    @Test func parsesEveryPart() throws {
        let key = try DNSTunnelKey(parsing: "  DNS://T.Example.com./?KEY=\(Self.hexKey.uppercased())&resolver=dot://[2001:db8::53]:8853&sni=dns.example.net&encoding=Syllables&label=40&name=240&qps=25&future=1#Home%20%E2%98%80  ")
        #expect(key.zone.description == "T.Example.com.", "the zone's case kept")
        #expect(key.publicKey == Self.publicKey, "hex accepted, either case")
        #expect(key.resolver == .dot(Endpoint(host: .ipv6([0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 10) + [0, 0x53]), port: 8853),
                                     serverName: "dns.example.net"))
        #expect(key.shaping == (try DNSTunnelShaping(encoding: .syllables, labelLength: 40, maxNameLength: 240, queriesPerSecond: 25)))
        #expect(key.tag == "Home ☀")
        #expect(key.text == "dns://T.Example.com?key=\(Self.keyText)&resolver=dot%3A%2F%2F%5B2001%3Adb8%3A%3A53%5D%3A8853&sni=dns.example.net&encoding=syllables&label=40&name=240&qps=25#Home%20%E2%98%80")
    }

    @Test func resolversEncodedOrRaw() throws {
        let base = "dns://t.example.com?key=\(Self.keyText)&resolver="
        let cases: [(String, DNSTunnelKey.Resolver)] = [
            ("udp://1.1.1.1:53", .udp(Endpoint(host: .ipv4([1, 1, 1, 1]), port: 53))),
            ("udp://9.9.9.9", .udp(Endpoint(host: .ipv4([9, 9, 9, 9]), port: 53))),
            ("udp%3A%2F%2F9.9.9.9%3A5353", .udp(Endpoint(host: .ipv4([9, 9, 9, 9]), port: 5353))),
            ("tcp://8.8.8.8", .tcp(Endpoint(host: .ipv4([8, 8, 8, 8]), port: 53))),
            ("TCP://[::1]:5300/", .tcp(Endpoint(host: .ipv6(Array(repeating: 0, count: 15) + [1]), port: 5300))),
            ("dot://1.1.1.1", .dot(Endpoint(host: .ipv4([1, 1, 1, 1]), port: 853), serverName: nil)),
            ("doh://dns.google/dns-query", .doh(url: "https://dns.google/dns-query")),
            ("doh://dns.google", .doh(url: "https://dns.google/dns-query")),
            ("doh%3A%2F%2F1.1.1.1%3A8443%2Fq", .doh(url: "https://1.1.1.1:8443/q")),
            ("https://cloudflare-dns.com/dns-query", .doh(url: "https://cloudflare-dns.com/dns-query")),
            ("system", .system),
            ("", .system),
        ]
        for (resolver, expected) in cases {
            let key = try DNSTunnelKey(parsing: base + resolver)
            #expect(key.resolver == expected, "\(resolver)")
            #expect(try DNSTunnelKey(parsing: key.text) == key, "\(key.text)")
        }
        #expect(try DNSTunnelKey(parsing: base + "doh://dns.google/dns-query").text
            == "dns://t.example.com?key=\(Self.keyText)&resolver=doh%3A%2F%2Fdns.google%2Fdns-query")
    }

    @Test func roundTripsEveryResolverKind() throws {
        let zone = try DNSName("t.example.com")
        let resolvers: [DNSTunnelKey.Resolver] = [
            .system,
            .udp(Endpoint(host: .ipv4([192, 0, 2, 53]), port: 53)),
            .udp(Endpoint(host: .ipv6([0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1]), port: 5353)),
            .tcp(Endpoint(host: .ipv4([192, 0, 2, 53]), port: 53)),
            .dot(Endpoint(host: .ipv4([1, 1, 1, 1]), port: 853), serverName: "one.one.one.one"),
            .dot(Endpoint(host: .ipv4([1, 1, 1, 1]), port: 853), serverName: nil),
            .doh(url: "https://dns.example.net/dns-query"),
            .doh(url: "https://[2001:db8::1]:8443/resolve/x"),
        ]
        let shapings = [DNSTunnelShaping.default, try DNSTunnelShaping(labelLength: 8, maxNameLength: 150, queriesPerSecond: 1),
                        try DNSTunnelShaping(encoding: .hex, queriesPerSecond: 10_000),
                        try DNSTunnelShaping(encoding: .syllables, labelLength: 10, maxNameLength: 253)]
        for resolver in resolvers {
            for shaping in shapings {
                for tag in [nil, "a b#c&d=é"] {
                    let key = try DNSTunnelKey(zone: zone, publicKey: Self.publicKey, resolver: resolver, shaping: shaping, tag: tag)
                    #expect(try DNSTunnelKey(parsing: key.text) == key, "\(key.text)")
                    #expect(key.text.hasPrefix("dns://t.example.com?key=\(Self.keyText)"))
                }
            }
        }
        let doh = try DNSTunnelKey(zone: zone, publicKey: Self.publicKey, resolver: .doh(url: "https://dns.example.net"))
        #expect(doh.resolver == .doh(url: "https://dns.example.net/dns-query"), "the default path filled in")
        #expect(doh.text.contains("resolver=doh%3A%2F%2Fdns.example.net%2Fdns-query"), "doh:// means https")
    }

    @Test func aClientIDRoundTripsAndMustBe16Bytes() throws {
        let id = Array(0..<16).map { UInt8($0 * 7) }
        let key = try DNSTunnelKey(parsing: "dns://t.example.com?key=\(Self.keyText)&id=\(Base64.encode(id, urlSafe: true, padded: false))")
        #expect(key.clientID == id)
        #expect(try DNSTunnelKey(parsing: key.text) == key)
        #expect(try DNSTunnelKey(parsing: "dns://t.example.com?key=\(Self.keyText)").clientID == nil)
        #expect { try DNSTunnelKey(parsing: "dns://t.example.com?key=\(Self.keyText)&id=AAAA") } throws: { "\($0)".contains("id= must be 16 bytes") }
        #expect { try DNSTunnelKey(parsing: "dns://t.example.com?key=\(Self.keyText)&id=%%%") } throws: { "\($0)".contains("id= must be 16 bytes") }
    }

    @Test func everyErrorSaysWhatIsWrong() {
        let k = Self.keyText
        let cases: [(String, String)] = [
            ("ss://t.example.com?key=\(k)", "starts with dns://"),
            ("dns://?key=\(k)", "the zone is missing"),
            ("dns://a..b?key=\(k)", "is not a valid DNS name"),
            ("dns://a%20b.example?key=\(k)", "is not a valid DNS name"),
            ("dns://\(String(repeating: "a", count: 64)).example?key=\(k)", "is not a valid DNS name"),
            ("dns://\(Array(repeating: String(repeating: "a", count: 62), count: 3).joined(separator: ".")).\(String(repeating: "b", count: 60))?key=\(k)", "carries 0 bytes; the tunnel needs 71 (its handshake goes in one query)"),
            ("dns://t.example.com", "key= is missing"),
            ("dns://t.example.com?key=", "key= is missing"),
            ("dns://t.example.com?key=AAAAAAAAAAAA", "key= must be the bridge's 32-byte X25519 public key in base64url (43 characters) or hex (64); got 12 characters"),
            ("dns://t.example.com?key=\(String(repeating: "g", count: 64))", "got 64 characters that are not valid base64url or hex"),
            ("dns://t.example.com?key=\(k)&resolver=quic://1.1.1.1", "resolver scheme quic:// is not supported; accepted are udp://IP:PORT, tcp://IP:PORT, dot://IP:PORT"),
            ("dns://t.example.com?key=\(k)&resolver=1.1.1.1", "has no scheme; accepted are udp://"),
            ("dns://t.example.com?key=\(k)&resolver=udp://dns.google", "must be an IP address, not the name \"dns.google\": names cannot be looked up before the tunnel exists"),
            ("dns://t.example.com?key=\(k)&resolver=tcp://dns.google:53", "must be an IP address"),
            ("dns://t.example.com?key=\(k)&resolver=dot://dns.google&sni=dns.google", "must be an IP address"),
            ("dns://t.example.com?key=\(k)&resolver=udp://1.1.1.1:0", "is not a port"),
            ("dns://t.example.com?key=\(k)&resolver=udp://1.1.1.1:99999", "is not a port"),
            ("dns://t.example.com?key=\(k)&resolver=udp://1.1.1.1&sni=x.example", "sni= names the certificate of a dot:// resolver"),
            ("dns://t.example.com?key=\(k)&sni=x.example", "sni= names the certificate of a dot:// resolver"),
            ("dns://t.example.com?key=\(k)&resolver=dot://1.1.1.1&sni=a%20b", "is not a host name"),
            ("dns://t.example.com?key=\(k)&resolver=doh://", "the DoH resolver's host"),
            ("dns://t.example.com?key=\(k)&label=7", "label= is the data label length in characters and must be a number from 8 to 63; got \"7\""),
            ("dns://t.example.com?key=\(k)&label=64", "from 8 to 63"),
            ("dns://t.example.com?key=\(k)&label=x", "label= is the data label length"),
            ("dns://t.example.com?key=\(k)&name=300", "name= is the longest query name in characters (zone included) and must be a number from 64 to 253"),
            ("dns://t.example.com?key=\(k)&qps=0", "qps= is the cap on queries per second and must be a number from 1 to 10000"),
            ("dns://\(String(repeating: "a", count: 60)).example.com?key=\(k)&name=64", "names of at most 64 characters carries 0 bytes"),
            ("dns://t.example.com?key=\(k)&name=100", "in base32 with 63-character labels and names of at most 100 characters carries 50 bytes; the tunnel needs 71"),
            ("dns://t.example.com?key=\(k)&encoding=syllables&label=12&name=200", "in syllables with 12-character labels and names of at most 200 characters carries 61 bytes; the tunnel needs 71 (its handshake goes in one query): allow longer names (name=, up to 253) or labels (label=), choose a denser encoding="),
            ("dns://t.example.com?key=\(k)&encoding=base64", "encoding= is how query names spell the data and must be base32, hex, syllables; got \"base64\""),
        ]
        for (text, mention) in cases {
            expectWireError(mention, code: .badKey) { _ = try DNSTunnelKey(parsing: text) }
        }
        let zone = try! DNSName("t.example.com")
        expectWireError("must be 32 bytes; this one has 31", code: .badKey) {
            _ = try DNSTunnelKey(zone: zone, publicKey: Array(repeating: 1, count: 31))
        }
        expectWireError("the zone is the root", code: .badKey) {
            _ = try DNSTunnelKey(zone: .root, publicKey: Self.publicKey)
        }
        expectWireError("is not an https:// URL", code: .badKey) {
            _ = try DNSTunnelKey(zone: zone, publicKey: Self.publicKey, resolver: .doh(url: "http://x.example/q"))
        }
    }
}
