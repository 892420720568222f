import Testing
import RahaWire
@testable import RahaProxy

@Suite struct RoutingRulesTests {
    private func route(_ rules: RoutingRules, _ host: String) throws -> RoutingRules.Decision {
        rules.route(try Endpoint(parsing: host, defaultPort: 80).host)
    }

    @Test func domainSuffixesMatchWholeLabels() throws {
        let rules = try RoutingRules(parsing: """
            # comment
            direct .ir
            block ads.example   # trailing comment
            proxy Example.COM.
            """)
        #expect(rules.count == 3)
        for name in ["a.ir", "www.digikala.ir", "IR", "ir", "a.b.ir."] {
            #expect(try route(rules, name) == .init(action: .direct, line: 2), "\(name)")
        }
        for name in ["myir", "ir.com", "a.irx", "iran.com"] {
            #expect(try route(rules, name) == .init(action: .proxy, line: nil), "\(name)")
        }
        #expect(try route(rules, "ads.example").action == .block)
        #expect(try route(rules, "x.ads.example") == .init(action: .block, line: 3))
        #expect(try route(rules, "badads.example").line == nil)
        #expect(try route(rules, "www.example.com") == .init(action: .proxy, line: 4))
        #expect(try route(rules, "10.1.2.3").line == nil, "domain rules never match addresses")
        #expect(try RoutingRules(parsing: "direct ir").route(.domain("x.ir")).action == .direct, "ir and .ir are the same")
        #expect(try RoutingRules(parsing: "proxy a\r\nblock .ir\r\n").route(.domain("x.ir")) == .init(action: .block, line: 2), "CRLF line ends")
    }

    @Test func firstMatchWins() throws {
        let rules = try RoutingRules(parsing: "block x.example.ir\ndirect .ir\nblock .ir\nproxy 10.1.0.0/16\ndirect 10.0.0.0/8\nblock 10.1.2.3")
        #expect(try route(rules, "x.example.ir") == .init(action: .block, line: 1))
        #expect(try route(rules, "y.example.ir") == .init(action: .direct, line: 2))
        #expect(try route(rules, "10.1.2.3") == .init(action: .proxy, line: 4), "the earlier, broader rule wins over a later exact one")
        #expect(try route(rules, "10.2.0.1") == .init(action: .direct, line: 5))
        let reversed = try RoutingRules(parsing: "direct .ir\nblock x.example.ir")
        #expect(try route(reversed, "x.example.ir") == .init(action: .direct, line: 1))
    }

    @Test func cidrEdgesV4AndV6() throws {
        let rules = try RoutingRules(parsing: """
            direct 192.168.0.0/16
            block 2001:db8::/32
            direct 203.0.113.7
            proxy ::/0
            block 0.0.0.0/0
            """)
        #expect(try route(rules, "192.168.0.0").line == 1)
        #expect(try route(rules, "192.168.255.255").line == 1)
        #expect(try route(rules, "192.169.0.0").line == 5, "just past the range: only /0 matches")
        #expect(try route(rules, "192.167.255.255").line == 5)
        #expect(try route(rules, "203.0.113.7").line == 3)
        #expect(try route(rules, "203.0.113.8").line == 5)
        #expect(try route(rules, "[2001:db8::]").line == 2)
        #expect(try route(rules, "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]").line == 2)
        #expect(try route(rules, "[2001:db9::]") == .init(action: .proxy, line: 4))
        #expect(try route(rules, "example.com").line == nil, "CIDR rules never match names")
        #expect(rules.route(.domain("192.168.1.1")).line == 1, "a literal sent as a name is an address")
    }

    @Test func parseErrorsSayLineAndWhat() {
        let cases: [(String, RoutingRules.ParseError)] = [
            ("direct .ir\nsend .ir", .init(line: 2, reason: "“send” is not an action: use direct, proxy or block")),
            ("\n\ndirect", .init(line: 3, reason: "“direct” needs a pattern: expected ACTION PATTERN, e.g. direct .ir")),
            ("direct a b", .init(line: 1, reason: "too many words: expected ACTION PATTERN, e.g. direct .ir")),
            ("block 10.0.0.0/33", .init(line: 1, reason: "the prefix length after / must be a number from 0 to 32")),
            ("block 2001:db8::/129", .init(line: 1, reason: "the prefix length after / must be a number from 0 to 128")),
            ("block 10.0.0.1/8", .init(line: 1, reason: "10.0.0.1/8 has bits set beyond its /8 prefix: did you mean 10.0.0.0/8?")),
            ("block 300.1.1.1/8", .init(line: 1, reason: "“300.1.1.1” is not an IPv4 or IPv6 address: expected e.g. 10.0.0.0/8 or 2001:db8::/32")),
            ("direct exa*mple.com", .init(line: 1, reason: "“exa*mple.com” is neither a domain (example.com, .ir) nor an address range (10.0.0.0/8)")),
            ("direct .", .init(line: 1, reason: "“.” is neither a domain (example.com, .ir) nor an address range (10.0.0.0/8)")),
        ]
        for (text, error) in cases {
            #expect(throws: error) { try RoutingRules(parsing: text) }
        }
    }

    @Test func builtInIranRules() throws {
        let rules = try RoutingRules(parsing: RoutingRules.iran)
        #expect(try route(rules, "www.aparat.ir").action == .direct)
        #expect(try route(rules, "xn--mgba3a4f16a").action == .direct)
        #expect(try route(rules, "localhost").action == .direct)
        #expect(try route(rules, "127.0.0.1").action == .direct)
        #expect(try route(rules, "192.168.1.1").action == .direct)
        #expect(try route(rules, "[::1]").action == .direct)
        #expect(try route(rules, "example.org").action == .proxy)
        #expect(try route(rules, "8.8.8.8").action == .proxy)
    }

    @Test func thousandsOfRules() throws {
        var text = ""
        for i in 0..<5000 { text += "direct site\(i).example\n" }
        for i in 0..<256 { text += "block 10.\(i).0.0/16\n" }
        let rules = try RoutingRules(parsing: text)
        #expect(rules.count == 5256)
        #expect(try route(rules, "a.site4999.example").line == 5000)
        #expect(try route(rules, "10.255.1.1").line == 5256)
        #expect(try route(rules, "site5000.example").line == nil)
    }
}
