import Testing
@testable import RahaWire


struct AccessKeyBadCase: Sendable, CustomTestStringConvertible {
    var text: String
    /// Text that must not appear in the message (the password, or its base64).
    var secrets: [String]
    /// Text the message must contain.
    var mentions: String
    var testDescription: String { mentions }
}

@Suite struct AccessKeyTests {
    static let v4 = Endpoint(host: .ipv4([192, 168, 100, 1]), port: 8888)

    // MARK: Accepted forms

    @Test func parsesSIP002Base64Example() throws {
        // shadowsocks-org SIP002, "Example1".
        let key = try ShadowsocksKey(parsing: "ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888#Example1")
        #expect(key.method == .aes128GCM)
        #expect(key.password == "test")
        #expect(key.server == Self.v4)
        #expect(key.prefix.isEmpty)
        #expect(key.tag == "Example1")
        #expect(key.decodedPSK == nil)
    }

    @Test func parsesSIP002PlainUserinfoExample() throws {
        // shadowsocks-org SIP002, "Example3": percent-encoded plain user info for a 2022 method.
        let text = "ss://2022-blake3-aes-256-gcm:YctPZ6U7xPPcU%2Bgp3u%2B0tx%2FtRizJN9K8y%2BuKlW2qjlI%3D@192.168.100.1:8888#Example3"
        let key = try ShadowsocksKey(parsing: text)
        #expect(key.method == .blake3AES256GCM)
        #expect(key.password == "YctPZ6U7xPPcU+gp3u+0tx/tRizJN9K8y+uKlW2qjlI=")
        #expect(key.server == Self.v4)
        #expect(key.tag == "Example3")
        #expect(key.decodedPSK?.count == 32)
        #expect(key.decodedPSK?.prefix(3) == [0x61, 0xCB, 0x4F])
        // The canonical form is exactly SIP002's own example.
        #expect(key.uri == text)
    }

    @Test func parsesShadowsocks2022URLExamples() throws {
        // Shadowsocks-NET's 2022 URL document.
        let a = try ShadowsocksKey(parsing: "ss://2022-blake3-aes-128-gcm:5mOQSa20Kt6ay2LXruBoHQ%3D%3D@example.com:443/#name")
        #expect(a.method == .blake3AES128GCM)
        #expect(a.password == "5mOQSa20Kt6ay2LXruBoHQ==")
        #expect(a.decodedPSK?.count == 16)
        #expect(a.server == Endpoint(host: .domain("example.com"), port: 443))
        #expect(a.tag == "name")

        let b = try ShadowsocksKey(parsing: "ss://2022-blake3-aes-256-gcm:t7XRzLCvgsH4r4r669cyqPnVNFG2c%2FHC5Tt%2BMjINJB0%3D@[2001:db8:1f74:3c86:aef9:a75:5d2a:425e]:20220/#name")
        #expect(b.method == .blake3AES256GCM)
        #expect(b.decodedPSK?.count == 32)
        #expect(b.server.hostText == "2001:db8:1f74:3c86:aef9:a75:5d2a:425e")
        #expect(b.server.port == 20220)
    }

    @Test func parsesPlainUserinfoForLegacyMethods() throws {
        let key = try ShadowsocksKey(parsing: "ss://chacha20-ietf-poly1305:p%40ss%3Aw%2Frd@example.com:8388")
        #expect(key.method == .chacha20IETFPoly1305)
        #expect(key.password == "p@ss:w/rd")
        #expect(key.tag == nil)
        // Method names are case-insensitive, like ShadowsocksMethod(name:).
        #expect(try ShadowsocksKey(parsing: "ss://AES-256-GCM:x@example.com:1").method == .aes256GCM)
    }

    @Test func parsesStandardBase64AndPadding() throws {
        // Standard alphabet ('+', '/') with padding.
        let std = try ShadowsocksKey(parsing: "ss://YWVzLTI1Ni1nY206cGFzcz4+Pj8/d29yZA==@example.com:8388")
        #expect(std.method == .aes256GCM)
        #expect(std.password == "pass>>>??word")
        // Padding present, and padding percent-encoded.
        #expect(try ShadowsocksKey(parsing: "ss://YWVzLTEyOC1nY206czNjcjN0UGE1NXdvcmQ=@1.2.3.4:1").password == "s3cr3tPa55word")
        #expect(try ShadowsocksKey(parsing: "ss://YWVzLTEyOC1nY206czNjcjN0UGE1NXdvcmQ%3D@1.2.3.4:1").password == "s3cr3tPa55word")
    }

    @Test func parsesLegacyForm() throws {
        // shadowsocks.org's legacy example, with a supported method: the password
        // "test/!@#:" holds '@', ':', '#' and '/' inside the base64.
        let key = try ShadowsocksKey(parsing: "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTp0ZXN0LyFAIzpAMTkyLjE2OC4xMDAuMTo4ODg4#example-server")
        #expect(key.method == .chacha20IETFPoly1305)
        #expect(key.password == "test/!@#:")
        #expect(key.server == Self.v4)
        #expect(key.tag == "example-server")

        // IPv6 inside the legacy base64.
        let v6 = try ShadowsocksKey(parsing: "ss://YWVzLTI1Ni1nY206czNjcjN0UGE1NXdvcmRAWzIwMDE6ZGI4OjoxXTo4Mzg4")
        #expect(v6.server == Endpoint(host: .ipv6([0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1]), port: 8388))
    }

    @Test func parsesLegacyFormWithQueryInsideTheBase64() throws {
        // Outline SDK's test: base64url("aes-256-gcm:1234567@example.com:1234?prefix=HTTP%2F1.1%20").
        let key = try ShadowsocksKey(parsing: "ss://YWVzLTI1Ni1nY206MTIzNDU2N0BleGFtcGxlLmNvbToxMjM0P3ByZWZpeD1IVFRQJTJGMS4xJTIw#outline-123")
        #expect(key.password == "1234567")
        #expect(key.server == Endpoint(host: .domain("example.com"), port: 1234))
        #expect(key.prefix == Array("HTTP/1.1 ".utf8))
        #expect(key.tag == "outline-123")
    }

    @Test func trimsWhitespaceAndAcceptsUppercaseScheme() throws {
        let key = try ShadowsocksKey(parsing: "  \n\tSS://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888/ \r\n")
        #expect(key.password == "test")
        #expect(key.server == Self.v4)
    }

    @Test func parsesIPv6InBrackets() throws {
        let key = try ShadowsocksKey(parsing: "ss://YWVzLTEyOC1nY206dGVzdA@[2001:db8::1]:8388/?outline=1#v6")
        #expect(key.server == Endpoint(host: .ipv6([0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1]), port: 8388))
        #expect(key.uri == "ss://YWVzLTEyOC1nY206dGVzdA@[2001:db8::1]:8388/?outline=1#v6")
    }

    // MARK: Outline's prefix

    @Test(arguments: [
        // Outline's "Connection prefix disguises" table (URL-encoded column).
        ("POST%20", Array("POST ".utf8)),
        ("HTTP%2F1.1%20", Array("HTTP/1.1 ".utf8)),
        ("%05%C3%9C_%C3%A0%01%20", [0x05, 0xDC, 0x5F, 0xE0, 0x01, 0x20]),
        ("%16%03%01%00%C2%A8%01%01", [0x16, 0x03, 0x01, 0x00, 0xA8, 0x01, 0x01]),
        ("%13%03%03%3F", [0x13, 0x03, 0x03, 0x3F]),
        ("%16%03%03%40%00%02", [0x16, 0x03, 0x03, 0x40, 0x00, 0x02]),
        ("SSH-2.0%0D%0A", Array("SSH-2.0\r\n".utf8)),
    ] as [(String, [UInt8])])
    func decodesOutlinePrefixes(encoded: String, bytes: [UInt8]) throws {
        let key = try ShadowsocksKey(parsing: "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpleGFtcGxl@127.0.0.1:33142/?outline=1&prefix=\(encoded)#tag")
        #expect(key.method == .chacha20IETFPoly1305)
        #expect(key.password == "example")
        #expect(key.prefix == bytes)
        #expect(try ShadowsocksKey(parsing: key.uri) == key)
    }

    @Test func writesThePrefixTheOutlineWay() throws {
        let tls = try ShadowsocksKey(method: .chacha20IETFPoly1305, password: "example",
                                     server: Endpoint(host: .ipv4([127, 0, 0, 1]), port: 33142),
                                     prefix: [0x16, 0x03, 0x01, 0x00, 0xA8, 0x01, 0x01])
        #expect(tls.uri == "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpleGFtcGxl@127.0.0.1:33142/?outline=1&prefix=%16%03%01%00%C2%A8%01%01")
        let post = try ShadowsocksKey(method: .chacha20IETFPoly1305, password: "example",
                                      server: Endpoint(host: .ipv4([127, 0, 0, 1]), port: 80), prefix: Array("POST ".utf8))
        #expect(post.uri.hasSuffix("/?outline=1&prefix=POST%20"))
        // Every byte value survives the trip, including the URI's own delimiters.
        let all = try ShadowsocksKey(method: .aes256GCM, password: "x", server: Self.v4,
                                     prefix: [0x00, 0x25, 0x26, 0x23, 0x3D, 0x2B, 0x20, 0x7F, 0x80, 0xBF, 0xC0, 0xFF, 0x3F, 0x2F, 0x40, 0x0A])
        #expect(try ShadowsocksKey(parsing: all.uri).prefix == all.prefix)
        // A literal '+' in a query means a space, as in Outline's Go parser.
        #expect(try ShadowsocksKey(parsing: "ss://YWVzLTEyOC1nY206dGVzdA@1.2.3.4:80/?prefix=POST+").prefix == Array("POST ".utf8))
    }

    @Test func ignoresOutlineAndUnknownParameters() throws {
        let key = try ShadowsocksKey(parsing: "ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888/?outline=1&unsupported-arguments=should-be-ignored&plugin=#Dummy+profile+name")
        #expect(key.password == "test")
        #expect(key.prefix.isEmpty)
        // SIP002 tags are percent-encoded; a '+' in the fragment stays a '+'.
        #expect(key.tag == "Dummy+profile+name")
    }

    // MARK: Round trips

    @Test(arguments: ShadowsocksMethod.allCases)
    func roundTripsEveryMethod(method: ShadowsocksMethod) throws {
        let servers = [
            Self.v4,
            Endpoint(host: .ipv6([0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1]), port: 443),
            Endpoint(host: .domain("bridge.example.org"), port: 65535),
        ]
        for server in servers {
            for tag in [nil, "Raha", "shadowsocks server 1", "پل رها ✓ #1 / 100% & more"] as [String?] {
                let generated = ShadowsocksKey.generate(method: method, server: server, tag: tag)
                let parsed = try ShadowsocksKey(parsing: generated.uri)
                #expect(parsed == generated)
                #expect(parsed.uri == generated.uri)
                #expect(!generated.uri.contains(" "))
                #expect(generated.uri.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }, "the URI is plain ASCII")
            }
            // A legacy password with characters that need care.
            if !method.is2022 {
                let odd = try ShadowsocksKey(method: method, password: "p@ss:w/rd?#&= é", server: server, prefix: [0x16, 0x03, 0x01], tag: "t")
                #expect(try ShadowsocksKey(parsing: odd.uri) == odd)
            }
        }
    }

    @Test func writesLegacyKeysInOutlineShape() throws {
        let key = try ShadowsocksKey(parsing: "ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888#Example1")
        #expect(key.uri == "ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888/?outline=1#Example1")
        var renamed = key
        renamed.tag = "shadowsocks server 1"
        #expect(renamed.uri.hasSuffix("#shadowsocks%20server%201"))
        #expect(try ShadowsocksKey(parsing: renamed.uri).tag == "shadowsocks server 1")
    }

    // MARK: Errors

    static let badKeys: [AccessKeyBadCase] = [
        AccessKeyBadCase(text: "https://example.com/s3cr3tPa55word", secrets: ["s3cr3tPa55word"], mentions: "ss://"),
        AccessKeyBadCase(text: "ssconf://example.com/s3cr3tPa55word", secrets: ["s3cr3tPa55word"], mentions: "ssconf://"),
        AccessKeyBadCase(text: "ss://", secrets: [], mentions: "empty"),
        AccessKeyBadCase(text: "ss://aes-128-gcm:s3cr3tPa55word@example.com", secrets: ["s3cr3tPa55word"], mentions: "no port"),
        AccessKeyBadCase(text: "ss://YWVzLTEyOC1nY206czNjcjN0UGE1NXdvcmQ@example.com#x", secrets: ["s3cr3tPa55word", "YWVzLTEyOC1nY206czNjcjN0UGE1NXdvcmQ"], mentions: "no port"),
        AccessKeyBadCase(text: "ss://aes-128-gcm:s3cr3tPa55word@[::1]", secrets: ["s3cr3tPa55word"], mentions: "no port"),
        AccessKeyBadCase(text: "ss://aes-128-gcm:s3cr3tPa55word@2001:db8::1:8388", secrets: ["s3cr3tPa55word"], mentions: "brackets"),
        AccessKeyBadCase(text: "ss://aes-128-gcm:s3cr3tPa55word@example.com:99999", secrets: ["s3cr3tPa55word"], mentions: "not a port"),
        AccessKeyBadCase(text: "ss://aes-128-gcm:s3cr3tPa55word@example.com:0", secrets: ["s3cr3tPa55word"], mentions: "not a port"),
        AccessKeyBadCase(text: "ss://aes-128-gcm:s3cr3tPa55word@exa%20mple.com:80", secrets: ["s3cr3tPa55word"], mentions: "host name"),
        AccessKeyBadCase(text: "ss://aes-128-gcm:s3cr3tPa55word@example.com:443/ws-path", secrets: ["s3cr3tPa55word"], mentions: "path"),
        AccessKeyBadCase(text: "ss://rc4-md5:s3cr3tPa55word@example.com:8388", secrets: ["s3cr3tPa55word"], mentions: "use one of"),
        // SIP002 "Example2": a stream cipher and a plugin.
        AccessKeyBadCase(text: "ss://cmM0LW1kNTpwYXNzd2Q@192.168.100.1:8888/?plugin=obfs-local%3Bobfs%3Dhttp#Example2", secrets: ["passwd", "cmM0LW1kNTpwYXNzd2Q"], mentions: "unknown Shadowsocks method"),
        AccessKeyBadCase(text: "ss://YWVzLTEyOC1nY206czNjcjN0UGE1NXdvcmQ@192.168.100.1:8888/?plugin=obfs-local%3Bobfs%3Dhttp", secrets: ["s3cr3tPa55word", "YWVzLTEyOC1nY206czNjcjN0UGE1NXdvcmQ"], mentions: "plugins are not supported"),
        AccessKeyBadCase(text: "ss://2022-blake3-aes-256-gcm:YctPZ6U7xPPcU%2Bgp3u%2B0tx%2FtRizJN9K8y%2BuKlW2qjlI%3D@192.168.100.1:8888/?plugin=v2ray-plugin%3Bserver#Example3", secrets: ["YctPZ6U7xPPcU"], mentions: "plugins are not supported"),
        AccessKeyBadCase(text: "ss://2022-blake3-aes-256-gcm:AAECAwQFBgcICQoLDA0ODw%3D%3D@example.com:443", secrets: ["AAECAwQFBgcICQoLDA0ODw"], mentions: "exactly 32 bytes, this decodes to 16"),
        AccessKeyBadCase(text: "ss://2022-blake3-aes-128-gcm:s3cr3t*Pa55word@example.com:443", secrets: ["s3cr3t*Pa55word"], mentions: "not base64"),
        AccessKeyBadCase(text: "ss://2022-blake3-aes-128-gcm:5mOQSa20Kt6ay2LXruBoHQ%3D%3D:AAECAwQFBgcICQoLDA0ODw%3D%3D@example.com:443", secrets: ["5mOQSa20Kt6ay2LXruBoHQ", "AAECAwQFBgcICQoLDA0ODw"], mentions: "multi-user"),
        AccessKeyBadCase(text: "ss://aes-128-gcm:s3cr3tPa55word@example.com:443/?prefix=GET%20%2F0123456789abcdef", secrets: ["s3cr3tPa55word"], mentions: "salt is only 16"),
        AccessKeyBadCase(text: "ss://aes-128-gcm:s3cr3tPa55word@example.com:443/?prefix=%C4%80", secrets: ["s3cr3tPa55word"], mentions: "U+0100"),
        AccessKeyBadCase(text: "ss://aes-128-gcm:s3cr3tPa55word@example.com:443/?prefix=%A8", secrets: ["s3cr3tPa55word"], mentions: "%C2%A8"),
        AccessKeyBadCase(text: "ss://aes-128-gcm:@example.com:443", secrets: [], mentions: "empty password"),
        AccessKeyBadCase(text: "ss://YWVzLTEyOC1nY206@example.com:443", secrets: [], mentions: "empty password"),
        AccessKeyBadCase(text: "ss://YWVzLTEyOC1nY21zM2NyM3RQYTU1d29yZA@example.com:443", secrets: ["s3cr3tPa55word", "YWVzLTEyOC1nY21zM2NyM3RQYTU1d29yZA"], mentions: "no “:”"),
        AccessKeyBadCase(text: "ss://!!s3cr3tPa55word!!@example.com:443", secrets: ["s3cr3tPa55word"], mentions: "neither base64"),
        AccessKeyBadCase(text: "ss://YWVzLTEyOC1nY206czNjcjN0UGE1NXdvcmQ#legacy", secrets: ["s3cr3tPa55word", "YWVzLTEyOC1nY206czNjcjN0UGE1NXdvcmQ"], mentions: "no server"),
        AccessKeyBadCase(text: "ss://s3cr3tPa55word!", secrets: ["s3cr3tPa55word"], mentions: "not base64"),
    ]

    @Test(arguments: badKeys)
    func rejectsWithAHelpfulMessage(_ bad: AccessKeyBadCase) {
        do {
            let key = try ShadowsocksKey(parsing: bad.text)
            Issue.record("accepted \(key.method) key for \(key.server)")
        } catch let error as WireError {
            #expect(error.code == .badKey)
            #expect(error.reason.contains(bad.mentions), "\(error.reason)")
            for secret in bad.secrets {
                #expect(!error.reason.contains(secret), "the message repeats a secret: \(error.reason)")
            }
        } catch {
            Issue.record("threw \(type(of: error)), not WireError")
        }
    }

    @Test func validatesKeysBuiltFromParts() {
        #expect(throws: WireError.badKey("the access key has an empty password: expected ss://…method:password…@host:port")) {
            try ShadowsocksKey(method: .aes128GCM, password: "", server: Self.v4)
        }
        #expect(throws: WireError.self) {
            try ShadowsocksKey(method: .blake3AES128GCM, password: "AAECAwQFBgcICQoLDA0ODw", server: Self.v4, prefix: Array(repeating: 0x41, count: 17))
        }
        #expect(throws: Never.self) {
            try ShadowsocksKey(method: .blake3AES128GCM, password: "AAECAwQFBgcICQoLDA0ODw", server: Self.v4, prefix: Array(repeating: 0x41, count: 16))
        }
    }

    // MARK: Generation

    @Test(arguments: ShadowsocksMethod.allCases)
    func generatesUniqueWellFormedKeys(method: ShadowsocksMethod) throws {
        let keys = (0..<200).map { _ in ShadowsocksKey.generate(method: method, server: Self.v4) }
        #expect(Set(keys.map(\.password)).count == keys.count)
        for key in keys {
            #expect(key.method == method)
            #expect(try ShadowsocksKey(parsing: key.uri) == key)
            if method.is2022 {
                #expect(key.decodedPSK?.count == method.keyLength)
                #expect(key.password.utf8.count == (method.keyLength + 2) / 3 * 4)
                #expect(key.prefix.isEmpty)
            } else {
                #expect(key.decodedPSK == nil)
                // 24 URL-safe characters carry 144 random bits.
                #expect(key.password.utf8.count == 24)
                #expect(key.password.utf8.allSatisfy { c in
                    (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F
                })
                #expect(key.prefix.count >= 6 && key.prefix.count <= method.saltLength / 2)
            }
        }
        if !method.is2022 {
            #expect(Set(keys.map(\.prefix)).count > 20, "prefixes vary from key to key")
        }
        let explicit = ShadowsocksKey.generate(method: method, server: Self.v4, prefix: [0x16, 0x03, 0x01], tag: "mine")
        #expect(explicit.prefix == [0x16, 0x03, 0x01])
        #expect(explicit.tag == "mine")
        #expect(ShadowsocksKey.generate(method: method, server: Self.v4, prefix: []).prefix.isEmpty)
    }

    @Test(arguments: ShadowsocksMethod.allCases)
    func defaultPrefixesLookLikeTheStartOfAnHTTPRequest(method: ShadowsocksMethod) {
        var rng = SeededGenerator(seed: 0x5EED + UInt64(method.keyLength))
        var seen = Set<[UInt8]>()
        for _ in 0..<500 {
            let prefix = ShadowsocksKey.defaultPrefix(for: method, using: &rng)
            seen.insert(prefix)
            #expect(prefix.count >= 6 && prefix.count <= 12)
            #expect(prefix.count <= method.saltLength / 2)
            #expect(prefix.allSatisfy { $0 >= 0x20 && $0 <= 0x7E })
            let text = String(decoding: prefix, as: UTF8.self)
            #expect(["GET /", "POST /", "PUT /", "HEAD /"].contains { text.hasPrefix($0) }, "\(text)")
            let path = text.drop { $0 != "/" }.dropFirst()
            #expect(path.count >= 2 && path.allSatisfy { $0 >= "a" && $0 <= "z" }, "\(text)")
        }
        #expect(seen.count > 50)
        #expect(ShadowsocksKey.defaultPrefix(for: method).count >= 6)
    }
}
