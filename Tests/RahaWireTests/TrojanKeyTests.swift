import Testing
@testable import RahaWire

@Suite struct TrojanKeyTests {
    @Test func parsesTheShareLinkFormOfPhoneApps() throws {
        let key = try TrojanKey(parsing: "trojan://p%40ss%3Aw0rd@203.0.113.7:443?security=tls&sni=cdn.example.com&type=ws&path=%2Fsecret%2Fws&host=front.example.com&allowInsecure=1#My%20bridge")
        #expect(key.password == "p@ss:w0rd")
        #expect(key.server == Endpoint(host: .ipv4([203, 0, 113, 7]), port: 443))
        #expect(key.sni == "cdn.example.com")
        #expect(key.serverName == "cdn.example.com")
        #expect(key.transport == .webSocket(path: "/secret/ws", host: "front.example.com"))
        #expect(key.allowInsecure)
        #expect(key.tag == "My bridge")
    }

    @Test func defaultsAndAliases() throws {
        let plain = try TrojanKey(parsing: "trojan://secret@bridge.example.org:8443")
        #expect(plain.transport == .tls)
        #expect(plain.serverName == "bridge.example.org", "without sni the host name is sent")
        #expect(!plain.allowInsecure && plain.pinnedCertificateSHA256 == nil && plain.fragment == nil)
        let byIP = try TrojanKey(parsing: "trojan://secret@[2001:db8::1]:443?peer=name.example&insecure=1&type=ws")
        #expect(byIP.sni == "name.example", "peer= is the older name of sni=")
        #expect(byIP.allowInsecure)
        #expect(byIP.transport == .webSocket(path: "/", host: nil))
        #expect(try TrojanKey(parsing: "trojan://secret@192.0.2.1:443").serverName == nil, "no SNI for an IP literal")
    }

    @Test func rahaParametersPinAndFragment() throws {
        let pin = (0..<32).map { UInt8($0 * 7 & 0xff) }
        let colons = pin.map { String($0, radix: 16, uppercase: true).count == 1 ? "0" + String($0, radix: 16, uppercase: true) : String($0, radix: 16, uppercase: true) }.joined(separator: ":")
        let key = try TrojanKey(parsing: "trojan://secret@192.0.2.1:443?pin=\(colons)&fragment=10-40&alpn=h2,http/1.1")
        #expect(key.pinnedCertificateSHA256 == pin)
        #expect(key.fragment == 10...40)
        #expect(key.alpn == ["h2", "http/1.1"])
    }

    @Test func roundTrips() throws {
        let keys = [
            try TrojanKey(password: "p@ss w/rd#?&", server: Endpoint(host: .domain("b.example"), port: 443), tag: "Raha ☀"),
            try TrojanKey(password: "x", server: Endpoint(host: .ipv6(Array(repeating: 0, count: 15) + [1]), port: 8443),
                          transport: .webSocket(path: "/a/b", host: "h.example"), sni: "s.example", allowInsecure: true,
                          pinnedCertificateSHA256: Array(repeating: 0xab, count: 32), alpn: ["http/1.1"], fragment: 5...5, mux: true),
            try TrojanKey(password: "behind-nginx", server: Endpoint(host: .ipv4([127, 0, 0, 1]), port: 8081),
                          transport: .webSocket(path: "/s", host: nil), tls: false),
            TrojanKey.generate(server: Endpoint(host: .ipv4([192, 0, 2, 1]), port: 443), sni: "www.example.com", webSocket: true),
        ]
        for key in keys {
            #expect(try TrojanKey(parsing: key.uri) == key, "\(key.uri)")
        }
    }

    @Test func securityNoneIsForAWebSocketHopBehindATLSFront() throws {
        let key = try TrojanKey(parsing: "trojan://pw@127.0.0.1:8081?security=none&type=ws&path=/s")
        #expect(!key.tls && key.transport == .webSocket(path: "/s", host: nil))
        #expect(try TrojanKey(parsing: "trojan://pw@127.0.0.1:443").tls, "TLS is the default")
        #expect(throws: WireError.self) { try TrojanKey(parsing: "trojan://pw@127.0.0.1:443?security=none") }
    }

    @Test func generatedKeysAreFreshAndUsable() throws {
        let a = TrojanKey.generate(server: Endpoint(host: .ipv4([192, 0, 2, 1]), port: 443), webSocket: true)
        let b = TrojanKey.generate(server: Endpoint(host: .ipv4([192, 0, 2, 1]), port: 443), webSocket: true)
        #expect(a.password != b.password && a.transport != b.transport)
        #expect(a.password.utf8.count >= 22, "at least 128 bits")
    }

    @Test(arguments: [
        ("ss://secret@host:1", "starts with trojan://"),
        ("trojan://host:443", "no @"),
        ("trojan://@host:443", "empty"),
        ("trojan://secretpw@host", "no port"),
        ("trojan://secretpw@host:443?security=reality", "security=reality"),
        ("trojan://secretpw@host:443?type=grpc", "type=grpc"),
        ("trojan://secretpw@host:443?pin=abcd", "pin="),
        ("trojan://secretpw@host:443?fragment=40-10", "fragment="),
        ("trojan://secretpw@host:443?type=ws&path=nopath", "must start with /"),
    ])
    func badKeysSayWhatIsWrongWithoutThePassword(text: String, mention: String) {
        do {
            _ = try TrojanKey(parsing: text)
            Issue.record("\(text) was accepted")
        } catch let error as WireError {
            #expect(error.code == .badKey)
            #expect(error.reason.contains(mention), "\(error.reason)")
            #expect(!error.reason.contains("secretpw"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}
