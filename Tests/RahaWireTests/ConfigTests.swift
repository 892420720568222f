import NIOCore
import Testing
@testable import RahaWire

@Suite struct DeflateTests {
    @Test func roundTripsEmptySmallRandomAndRepetitive() throws {
        var rng = SeededGenerator(seed: 7)
        let random = (0..<5000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for input in [[], Array("ss://a".utf8), random, [UInt8](repeating: 0x61, count: 60_000)] {
            let compressed = Deflate.deflate(input)
            #expect(try Deflate.inflate(compressed, maxSize: 64 * 1024) == input)
        }
        // A known raw DEFLATE stream (fixed Huffman, "hello"), as Python's zlib makes it with wbits=-15.
        #expect(try Deflate.inflate(hex("cb48cdc9c90700"), maxSize: 10) == Array("hello".utf8))
    }

    @Test func capsTheOutputAndRefusesCorruptTruncatedAndTrailingData() throws {
        let bomb = Deflate.deflate([UInt8](repeating: 0, count: 1_000_000))
        #expect(bomb.count < 2000)
        #expect(throws: WireError.tooLarge("the compressed data expands to more than 65536 bytes, the most allowed")) {
            try Deflate.inflate(bomb, maxSize: 65536)
        }
        let exact = Deflate.deflate([UInt8](repeating: 1, count: 100))
        #expect(try Deflate.inflate(exact, maxSize: 100).count == 100, "exactly the cap is allowed")
        let good = Deflate.deflate(Array("ss://method:password@host:1\ntrojan://p@h:2".utf8))
        for cut in 0..<good.count {
            #expect(throws: WireError.self) { try Deflate.inflate(Array(good[..<cut]), maxSize: 1000) }
        }
        #expect(throws: WireError.malformed("the compressed data has 1 bytes after its end")) {
            try Deflate.inflate(good + [0], maxSize: 1000)
        }
        #expect(throws: WireError.malformed("the compressed data is corrupt (not raw DEFLATE)")) {
            try Deflate.inflate([0xFF, 0xFF, 0xFF, 0xFF], maxSize: 1000)
        }
    }
}

@Suite struct AccessBundleTests {
    let ss = "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpzZWNyZXQ@203.0.113.7:8388/?outline=1"
    let trojan = "trojan://hunter2@bridge.example.org:443?type=ws&path=%2Fx&mux=1#Home"

    @Test func roundTrips() throws {
        let bundle = try AccessBundle(members: [ss, " \(trojan)\n"])
        #expect(bundle.members == [ss, trojan], "members are trimmed")
        let uri = bundle.uri
        #expect(uri.hasPrefix("raha:1."))
        #expect(!uri.contains("=") && !uri.contains("+") && !uri.contains("/"))
        #expect(try AccessBundle(parsing: uri) == bundle)
        #expect(try AccessBundle(parsing: "  RAHA://" + uri.dropFirst(5) + "\n") == bundle, "case, slashes and whitespace")
        #expect(AccessBundle.isBundle(uri) && !AccessBundle.isBundle(ss))
        // CRLF between members is tolerated.
        let crlf = "raha:1." + Base64.encode(Deflate.deflate(Array("\(ss)\r\n\(trojan)".utf8)), urlSafe: true, padded: false)
        #expect(try AccessBundle(parsing: crlf).members == [ss, trojan])
    }

    private func payload(_ text: String) -> String {
        "raha:1." + Base64.encode(Deflate.deflate(Array(text.utf8)), urlSafe: true, padded: false)
    }

    @Test func refusesBadHeadsAndData() {
        #expect(throws: WireError(.unsupported, "this is a version 2 bundle, but this Raha reads only version 1: update Raha, or ask for the keys one by one")) {
            try AccessBundle(parsing: "raha:2.AAAA")
        }
        #expect(throws: WireError.badKey("the bundle has no version: expected raha:1.DATA")) { try AccessBundle(parsing: "raha:abc") }
        #expect(throws: WireError.badKey("the bundle version “x” is not a number: expected raha:1.DATA")) { try AccessBundle(parsing: "raha:x.abc") }
        #expect(throws: WireError.badKey("a bundle starts with raha: — expected raha:1.DATA")) { try AccessBundle(parsing: ss) }
        for bad in ["raha:1.", "raha:1.ab=", "raha:1.a+b/", "raha:1.!!!!"] {
            #expect(throws: WireError.badKey("the bundle's data is not unpadded base64url: it may have been cut off or changed while copying")) {
                try AccessBundle(parsing: bad)
            }
        }
        let uri = (try? AccessBundle(members: [ss, trojan]).uri) ?? ""
        #expect(throws: WireError.self) { try AccessBundle(parsing: String(uri.dropLast(4))) }
        let bomb = "raha:1." + Base64.encode(Deflate.deflate([UInt8](repeating: 0x61, count: 100_000)), urlSafe: true, padded: false)
        #expect(throws: WireError.tooLarge("the bundle expands to more than 65536 bytes, more than any bundle may hold")) {
            try AccessBundle(parsing: bomb)
        }
        #expect(throws: WireError.badKey("the bundle's keys are not UTF-8 text")) {
            try AccessBundle(parsing: "raha:1." + Base64.encode(Deflate.deflate([0xFF, 0xFE]), urlSafe: true, padded: false))
        }
    }

    @Test func namesTheBadMemberByPositionAndSchemeNeverItsText() {
        #expect(throws: WireError.badKey("bundle member 2 is empty: a bundle holds one access key per line")) {
            try AccessBundle(parsing: payload("\(ss)\n\n\(trojan)"))
        }
        #expect(throws: WireError.badKey("bundle member 1 is not an access key URI: expected ss://…, trojan://… or dns://…")) {
            try AccessBundle(parsing: payload("hunter2 is my password"))
        }
        #expect(throws: WireError.badKey("bundle member 2 is itself a bundle: give its keys instead")) {
            try AccessBundle(members: [ss, "raha:1.abc"])
        }
        #expect(throws: WireError.badKey("bundle member 1 spans several lines: give each access key separately")) {
            try AccessBundle(members: ["\(ss)\n\(trojan)x"])
        }
        #expect(throws: WireError.badKey("a bundle needs at least one access key")) { try AccessBundle(members: []) }
        do {
            _ = try AccessBundle(parsing: payload("\(ss)\ntrojan://hunter2@host:1?security=none")) { text in
                if text.hasPrefix("trojan") { _ = try TrojanKey(parsing: text) }
            }
            Issue.record("an unusable member was accepted")
        } catch {
            let message = "\(error)"
            #expect(message.hasPrefix("bundle member 2 (trojan://): "), "\(message)")
            #expect(!message.contains("hunter2"))
        }
    }

    @Test func schemeOfKeys() {
        #expect(AccessBundle.scheme(of: " SS://abc") == "ss")
        #expect(AccessBundle.scheme(of: "trojan://x") == "trojan")
        #expect(AccessBundle.scheme(of: "no scheme here") == nil)
        #expect(AccessBundle.scheme(of: "pass word:x") == nil)
    }
}

@Suite struct SIP008Tests {
    @Test func decodesServersIgnoringUnknownFields() throws {
        let json = """
            {"version": 1, "bytes_used": 10, "servers": [
              {"id": "27b8a625-4f4b-4428-9f0f-8a2317db7c79", "remarks": "Server 1", "server": "example.com",
               "server_port": 8388, "password": "example", "method": "chacha20-ietf-poly1305", "extra": [1, 2]},
              {"id": "7842c068-c667-41f2-8f7d-04feece3cb67", "remarks": "Server 2", "server": "2001:db8::1",
               "server_port": 8389, "password": "other", "method": "aes-256-gcm", "plugin": ""}]}
            """
        let keys = try SIP008.decode(Array(json.utf8))
        #expect(keys.count == 2)
        #expect(keys[0].server == Endpoint(host: .domain("example.com"), port: 8388))
        #expect(keys[0].method == .chacha20IETFPoly1305 && keys[0].password == "example" && keys[0].tag == "Server 1")
        #expect(keys[1].server == Endpoint(host: .ipv6(Endpoint.parseIPv6("2001:db8::1")!), port: 8389))
        #expect(try ShadowsocksKey(parsing: keys[1].uri) == keys[1])
        #expect(SIP008.looksLikeJSON(Array("\n  {".utf8)) && !SIP008.looksLikeJSON(Array("ss://".utf8)))
    }

    @Test func refusesPluginsBadMethodsAndMissingFields() {
        let plugin = #"{"version":1,"servers":[{"remarks":"ok","server":"h","server_port":1,"password":"p","method":"aes-128-gcm"},{"remarks":"Fast","server":"h","server_port":1,"password":"secretpw","method":"aes-128-gcm","plugin":"obfs-local","plugin_opts":"obfs=http"}]}"#
        #expect(throws: WireError.badKey("SIP008 server 2 (“Fast”): it needs the plugin “obfs-local”, and Raha has no SIP003 plugins: ask for a server without one")) {
            try SIP008.decode(Array(plugin.utf8))
        }
        let method = #"{"servers":[{"server":"h","server_port":1,"password":"secretpw","method":"rc4-md5"}]}"#
        do {
            _ = try SIP008.decode(Array(method.utf8))
            Issue.record("rc4-md5 was accepted")
        } catch {
            #expect("\(error)".hasPrefix("SIP008 server 1: unknown Shadowsocks method “rc4-md5”"), "\(error)")
            #expect(!"\(error)".contains("secretpw"))
        }
        #expect(throws: WireError.badKey("not SIP008 JSON: servers[0] has no “password”")) {
            try SIP008.decode(Array(#"{"version":1,"servers":[{"server":"h","server_port":1,"method":"aes-128-gcm"}]}"#.utf8))
        }
        #expect(throws: WireError.badKey("not SIP008 JSON: the document has no “servers”")) { try SIP008.decode(Array(#"{"version":1}"#.utf8)) }
        #expect(throws: WireError.badKey("not SIP008 JSON: servers[0].server_port has the wrong type")) {
            try SIP008.decode(Array(#"{"servers":[{"server":"h","server_port":"x","password":"p","method":"aes-128-gcm"}]}"#.utf8))
        }
        #expect(throws: WireError.badKey("not SIP008 JSON: it does not parse as JSON")) { try SIP008.decode(Array("{nope".utf8)) }
        #expect(throws: WireError.badKey("the SIP008 document lists no servers")) { try SIP008.decode(Array(#"{"servers":[]}"#.utf8)) }
        #expect(throws: WireError(.unsupported, "this is a version 2 SIP008 document, but Raha reads version 1")) {
            try SIP008.decode(Array(#"{"version":2,"servers":[]}"#.utf8))
        }
    }
}

@Suite struct WebFetchTests {
    @Test func parsesAndRedactsAddresses() throws {
        let url = try WebURL(parsing: "ssconf://user@example.org/keys/SECRET?token=t#frag")
        #expect(url.secure && url.server == Endpoint(host: .domain("example.org"), port: 443) && url.target == "/keys/SECRET?token=t")
        #expect(url.redacted == "https://example.org/…")
        #expect(try WebURL(parsing: "http://127.0.0.1:8080").redacted == "http://127.0.0.1:8080/")
        #expect(try WebURL(parsing: "http://[::1]:81?x").target == "/?x")
        #expect(try url.following(location: "/other").target == "/other")
        #expect(try url.following(location: "http://b.example/x").secure == false)
        #expect(throws: WireError.self) { try url.following(location: "ftp://x/") }
        #expect(throws: WireError.self) { try WebURL(parsing: "ftp://x/") }
        let request = String(buffer: url.request)
        #expect(request.hasPrefix("GET /keys/SECRET?token=t HTTP/1.1\r\nHost: example.org\r\n"))
    }

    private func read(_ chunks: [String], max: Int = 100) throws -> WebResponseReader.Response? {
        var reader = WebResponseReader(maxBodyBytes: max)
        for chunk in chunks {
            var buffer = ByteBuffer(string: chunk)
            if let response = try reader.receive(&buffer) { return response }
        }
        return try reader.endOfInput()
    }

    @Test func readsLengthChunkedAndUntilCloseBodiesSplitAnywhere() throws {
        let lengthResponse = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
        let close = "HTTP/1.0 200 OK\r\n\r\nhello"
        for text in [lengthResponse, chunked, close] {
            for split in 0...text.utf8.count {
                let bytes = Array(text.utf8)
                let parts = [String(decoding: bytes[..<split], as: UTF8.self), String(decoding: bytes[split...], as: UTF8.self)]
                let response = try #require(try read(parts))
                #expect(response.status == 200 && response.body == Array("hello".utf8))
            }
        }
        let redirect = try #require(try read(["HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n"]))
        #expect(redirect.status == 302 && redirect.location == "/next")
        let typed = try #require(try read(["HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=windows-1256\r\nContent-Length: 0\r\n\r\n"]))
        #expect(typed.contentType == "text/html; charset=windows-1256")
    }

    @Test func capsBodiesAndRefusesTruncation() {
        #expect(throws: WireError.tooLarge("the response is larger than 0 KiB, more than an online config may be")) {
            try read(["HTTP/1.0 200 OK\r\n\r\n" + String(repeating: "x", count: 101)])
        }
        #expect(throws: WireError.self) { try read(["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]) }
        #expect(throws: WireError.self) { try read(["HTTP/1.1 200 OK\r\nContent-"]) }
    }
}
