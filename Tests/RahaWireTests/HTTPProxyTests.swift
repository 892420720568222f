import NIOCore
import Testing
@testable import RahaWire


private func text(_ buffer: ByteBuffer) -> String { String(decoding: buffer.readableBytesView, as: UTF8.self) }
private func bytes(_ buffer: ByteBuffer) -> [UInt8] { Array(buffer.readableBytesView) }

private func readRequest(_ s: String, max: Int = 32768) throws -> HTTPRequestHead? {
    var buffer = ByteBuffer(string: s)
    return try HTTPRequestHead.read(from: &buffer, maxHeadBytes: max)
}

private func code(_ expected: WireError.Code) -> (any Error) -> Bool {
    { ($0 as? WireError)?.code == expected }
}

private func serialized(_ head: HTTPRequestHead) -> String {
    var out = ByteBuffer()
    head.serialize(into: &out)
    return text(out)
}

@Suite struct HTTPRequestHeadTests {
    static let sample = "GET http://example.com/a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent:  curl/8.5 \r\nAccept:*/*\r\n\r\n"

    @Test func readsWholeHeadAndLeavesTheBody() throws {
        var buffer = ByteBuffer(string: Self.sample + "BODY")
        let head = try #require(try HTTPRequestHead.read(from: &buffer))
        #expect(head.method == "GET")
        #expect(head.target == "http://example.com/a/b?c=d")
        #expect(head.version == .http1_1)
        #expect(head.headers.map(\.name) == ["Host", "User-Agent", "Accept"])
        #expect(head.headers.map(\.value) == ["example.com", "curl/8.5", "*/*"])
        #expect(head.value(of: "user-agent") == "curl/8.5")
        #expect(head.value(of: "HOST") == "example.com")
        #expect(head.value(of: "Cookie") == nil)
        #expect(text(buffer) == "BODY")
        #expect(serialized(head) == "GET http://example.com/a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5\r\nAccept: */*\r\n\r\n")
    }

    @Test func everyPrefixIsIncompleteAndRestoresTheIndex() throws {
        let all = Array(Self.sample.utf8)
        for cut in 0..<all.count {
            var partial = ByteBuffer(bytes: all[..<cut])
            #expect(try HTTPRequestHead.read(from: &partial) == nil, "prefix \(cut)")
            #expect(partial.readableBytes == cut)
        }
        // Fed as it would arrive: one byte at a time into a growing buffer.
        var growing = ByteBuffer()
        var result: HTTPRequestHead?
        for byte in all {
            #expect(result == nil)
            growing.writeInteger(byte)
            result = try HTTPRequestHead.read(from: &growing)
        }
        #expect(result?.headers.count == 3)
        #expect(growing.readableBytes == 0)
    }

    @Test func listsAndLookups() throws {
        var head = try #require(try readRequest("GET http://a/ HTTP/1.1\r\nConnection: Keep-Alive, Foo\r\nconnection: ,BAR ,\r\nX: 1\r\nx: 2\r\n\r\n"))
        #expect(head.tokens(of: "Connection") == ["keep-alive", "foo", "bar"])
        #expect(head.values(of: "X") == ["1", "2"])
        #expect(head.contains("x"))
        head.set("x", to: "3")
        #expect(head.values(of: "X") == ["3"])
        head.removeAll(named: "CONNECTION")
        #expect(!head.contains("Connection"))
        head.set("New", to: "v")
        #expect(head.headers.last! == (name: "New", value: "v"))
    }

    @Test func leadingEmptyLinesAreSkipped() throws {
        let head = try #require(try readRequest("\r\n\r\nGET http://a/ HTTP/1.0\r\n\r\n"))
        #expect(head.version == .http1_0)
        #expect(head.headers.isEmpty)
    }

    @Test func rejectsMalformedHeads() {
        let malformed = [
            "GET http://a/ HTTP/1.1\nHost: a\r\n\r\n",          // bare LF ends the request line
            "GET http://a/ HTTP/1.1\r\nHost: a\n\r\n",          // bare LF ends a field
            "GET http://a/ HTTP/1.1\r\nHost: a\r\rX",            // bare CR
            "GET http://a/ HTTP/1.1\r\nHost a\r\n\r\n",          // no colon
            "GET http://a/ HTTP/1.1\r\nHost : a\r\n\r\n",        // space before colon
            "GET http://a/ HTTP/1.1\r\n: a\r\n\r\n",             // empty name
            "GET http://a/ HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n", // obs-fold
            "GET http://a/ HTTP/1.1\r\nX-A: 1\r\n\tfolded\r\n\r\n",
            "GET  http://a/ HTTP/1.1\r\n\r\n",                   // double space
            "GET http://a/\r\n\r\n",                             // HTTP/0.9 style
            "GET http://a/ http/1.1\r\n\r\n",                    // version is case-sensitive
            "GET http://a/ HTTP/1.1 \r\n\r\n",                   // trailing space
            "G(T http://a/ HTTP/1.1\r\n\r\n",                    // bad method
            "GET http://a/é HTTP/1.1\r\n\r\n",                   // raw non-ASCII target
            "GET http://a/ HTTP/1.1\r\nX: a\u{01}b\r\n\r\n",     // control byte in a value
            "GET http://a/ HTTP/1.1\r\nX: a\u{7F}b\r\n\r\n",     // DEL
            "GET http://a/ HTTP/1.1\r\nX\u{00}: a\r\n\r\n",      // NUL
        ]
        for input in malformed {
            #expect(throws: WireError.self, "\(input.debugDescription)") { try readRequest(input) }
            #expect(performing: { try readRequest(input) }, throws: code(.malformed))
        }
        for version in ["HTTP/2.0", "HTTP/1.2", "HTTP/3.0", "HTTP/0.9"] {
            #expect(performing: { try readRequest("GET http://a/ \(version)\r\n\r\n") }, throws: code(.unsupported))
        }
    }

    @Test func rejectsGarbageAsSoonAsItArrives() {
        // A TLS ClientHello sent to the HTTP port fails on its first byte.
        var tls = ByteBuffer(bytes: [0x16, 0x03, 0x01, 0x02, 0x00])
        #expect(performing: { try HTTPRequestHead.read(from: &tls) }, throws: code(.malformed))
        // A bad request line fails before the head is complete.
        #expect(performing: { try readRequest("hello world\r\nHost: a") }, throws: code(.malformed))
    }

    @Test func enforcesTheSizeLimit() throws {
        let head = "GET http://a/ HTTP/1.1\r\nX: " + String(repeating: "y", count: 100) + "\r\n\r\n"
        #expect(try readRequest(head, max: head.utf8.count) != nil)
        #expect(performing: { try readRequest(head, max: head.utf8.count - 1) }, throws: code(.tooLarge))
        // Incomplete but already past the limit.
        #expect(performing: { try readRequest(String(head.prefix(80)), max: 64) }, throws: code(.tooLarge))
        // Incomplete and under the limit: wait.
        #expect(try readRequest(String(head.prefix(50)), max: 64) == nil)
    }

    @Test func fieldValuesRoundTripByteForByte() throws {
        // A Latin-1 byte that is not valid UTF-8 comes back out unchanged.
        var input = ByteBuffer(string: "GET http://a/ HTTP/1.1\r\nX-Name: caf")
        input.writeBytes([0xE9, 0x20, 0xC3, 0xA9])
        input.writeString("\r\n\r\n")
        let original = bytes(input)
        let head = try #require(try HTTPRequestHead.read(from: &input))
        var out = ByteBuffer()
        head.serialize(into: &out)
        #expect(bytes(out) == original)
        // CR and LF in a value set by code cannot split the head.
        let injected = HTTPRequestHead(method: "GET", target: "/", headers: [(name: "X", value: "a\r\nEvil: 1")])
        #expect(serialized(injected) == "GET / HTTP/1.1\r\nX: a  Evil: 1\r\n\r\n")
    }

    @Test func keepAlive() throws {
        #expect(try readRequest("GET http://a/ HTTP/1.1\r\n\r\n")!.isKeepAlive)
        #expect(try !readRequest("GET http://a/ HTTP/1.1\r\nConnection: close\r\n\r\n")!.isKeepAlive)
        #expect(try !readRequest("GET http://a/ HTTP/1.0\r\n\r\n")!.isKeepAlive)
        #expect(try readRequest("GET http://a/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")!.isKeepAlive)
    }

    @Test func proxyBasicCredentials() throws {
        // "alice:s3cret:x" — the password may contain colons.
        let head = try #require(try readRequest("GET http://a/ HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0Ong=\r\n\r\n"))
        let creds = try #require(head.proxyBasicCredentials)
        #expect(creds.username == Array("alice".utf8))
        #expect(creds.password == Array("s3cret:x".utf8))
        #expect(head.hasProxyAuthorization(ProxyCredentials(username: "alice", password: "s3cret:x")))
        #expect(!head.hasProxyAuthorization(ProxyCredentials(username: "alice", password: "s3cret")))
        #expect(!head.hasProxyAuthorization(ProxyCredentials(username: "bob", password: "s3cret:x")))
        let none = try #require(try readRequest("GET http://a/ HTTP/1.1\r\n\r\n"))
        #expect(none.proxyBasicCredentials == nil)
        #expect(!none.hasProxyAuthorization(ProxyCredentials(username: "", password: "")))
        for bad in ["Bearer YWxpY2U6eA==", "Basic !!!", "Basic YWxpY2U=", "Basic"] {
            let h = try #require(try readRequest("GET http://a/ HTTP/1.1\r\nProxy-Authorization: \(bad)\r\n\r\n"))
            #expect(h.proxyBasicCredentials == nil, "\(bad)")
        }
        // Unpadded base64 is accepted too.
        let unpadded = try #require(try readRequest("GET http://a/ HTTP/1.1\r\nProxy-Authorization: basic YTpi\r\n\r\n"))
        #expect(unpadded.proxyBasicCredentials?.username == [0x61])
    }

    @Test func garbageFailsCleanly() {
        var rng = SeededGenerator(seed: 9112)
        let alphabet = Array("GET POST CONNECT http://a:80/ HTTP/1.1\r\n: \t\u{0}é".utf8)
        var thrown = 0
        for round in 0..<3000 {
            let length = Int.random(in: 0..<120, using: &rng)
            let input: [UInt8] = (0..<length).map { _ in
                round % 2 == 0 ? UInt8.random(in: 0...255, using: &rng) : alphabet.randomElement(using: &rng)!
            }
            var buffer = ByteBuffer(bytes: input)
            do {
                if let head = try HTTPRequestHead.read(from: &buffer, maxHeadBytes: 100) {
                    #expect(buffer.readableBytes < length)
                    _ = try? HTTPProxyRequest(head: head)
                    _ = try? HTTPBodyFramer(request: head)
                } else {
                    #expect(buffer.readableBytes == length)
                }
            } catch {
                thrown += 1
                #expect(error is WireError)
            }
        }
        #expect(thrown > 1000)
    }
}

@Suite struct HTTPProxyRequestTests {
    private func proxy(_ s: String) throws -> HTTPProxyRequest {
        try HTTPProxyRequest(head: try #require(try readRequest(s)))
    }

    @Test func connectTargets() throws {
        #expect(try proxy("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
            == .connect(Endpoint(host: .domain("example.com"), port: 443)))
        #expect(try proxy("CONNECT 1.2.3.4:8443 HTTP/1.1\r\n\r\n") == .connect(Endpoint(host: .ipv4([1, 2, 3, 4]), port: 8443)))
        #expect(try proxy("CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n")
            == .connect(Endpoint(host: .ipv6([0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1]), port: 443)))
        for bad in ["example.com", "example.com:0", "example.com:99999", "2001:db8::1:443", "[::1", "user@host:443",
                    "http://example.com:443", "exa%6Dple.com:443", ":443"] {
            #expect(performing: { try proxy("CONNECT \(bad) HTTP/1.1\r\n\r\n") }, throws: code(.malformed))
        }
    }

    @Test func absoluteFormIsRewrittenToOriginForm() throws {
        let request = try proxy("POST http://Example.com:8080/path/x?q=1#frag HTTP/1.1\r\n"
            + "User-Agent: t\r\nHost: wrong.example\r\nProxy-Connection: keep-alive\r\n"
            + "Proxy-Authorization: Basic eDp5\r\nConnection: X-Hop, content-length, Transfer-Encoding\r\n"
            + "X-Hop: secret\r\nKeep-Alive: 300\r\nTE: trailers\r\nUpgrade: h2c\r\nHost: again\r\n"
            + "Content-Length: 3\r\nAccept: */*\r\n\r\n")
        guard case .forward(let head, let origin) = request else {
            Issue.record("expected .forward, got \(request)")
            return
        }
        #expect(origin == Endpoint(host: .domain("Example.com"), port: 8080))
        #expect(serialized(head) == "POST /path/x?q=1 HTTP/1.1\r\nHost: Example.com:8080\r\nUser-Agent: t\r\nContent-Length: 3\r\nAccept: */*\r\n\r\n")
    }

    @Test func defaultsAndEdgeForms() throws {
        let cases: [(String, String, Endpoint, String)] = [
            ("http://example.com", "/", Endpoint(host: .domain("example.com"), port: 80), "example.com"),
            ("http://example.com?x=1", "/?x=1", Endpoint(host: .domain("example.com"), port: 80), "example.com"),
            ("HTTP://example.com:/a", "/a", Endpoint(host: .domain("example.com"), port: 80), "example.com"),
            ("http://10.0.0.1:81/", "/", Endpoint(host: .ipv4([10, 0, 0, 1]), port: 81), "10.0.0.1:81"),
            ("http://[::1]/x", "/x", Endpoint(host: .ipv6(Array(repeating: 0, count: 15) + [1]), port: 80), "[::1]"),
            ("http://a.io#top", "/", Endpoint(host: .domain("a.io"), port: 80), "a.io"),
        ]
        for (target, originForm, endpoint, host) in cases {
            guard case .forward(let head, let origin) = try proxy("GET \(target) HTTP/1.1\r\n\r\n") else {
                Issue.record("expected .forward for \(target)")
                continue
            }
            #expect(head.target == originForm)
            #expect(origin == endpoint)
            #expect(head.headers.first! == (name: "Host", value: host))
            #expect(!head.contains("Connection"))
        }
    }

    @Test func connectionPersistenceIsCarriedOver() throws {
        guard case .forward(let closing, _) = try proxy("GET http://a/ HTTP/1.1\r\nConnection: close\r\n\r\n"),
              case .forward(let old, _) = try proxy("GET http://a/ HTTP/1.0\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive\r\n\r\n"),
              case .forward(let oldClosing, _) = try proxy("GET http://a/ HTTP/1.0\r\n\r\n")
        else {
            Issue.record("expected .forward")
            return
        }
        #expect(serialized(closing) == "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        #expect(serialized(old) == "GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        #expect(serialized(oldClosing) == "GET / HTTP/1.0\r\nHost: a\r\nConnection: close\r\n\r\n")
    }

    @Test func refusesWhatAProxyCannotForward() {
        let bad = [
            "GET https://example.com/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            "GET ftp://example.com/ HTTP/1.1\r\n\r\n",
            "GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n",
            "GET http:///path HTTP/1.1\r\n\r\n",
            "GET http://::1/ HTTP/1.1\r\n\r\n",
            "GET http://example.com:0/ HTTP/1.1\r\n\r\n",
            "GET http://exa_mple.com:http/ HTTP/1.1\r\n\r\n",
            "GET example.com:80 HTTP/1.1\r\n\r\n",
        ]
        for input in bad {
            #expect(performing: { try proxy(input) }, throws: { error in
                guard let wire = error as? WireError else { return false }
                return wire.code == .malformed && HTTPProxy.status(for: wire).status == 400
            })
        }
    }
}

@Suite struct HTTPProxyResponseTests {
    @Test func errorResponseBytes() {
        #expect(text(HTTPProxy.errorResponse(status: 400, reason: "Bad Request"))
            == "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\nConnection: close\r\n\r\n400 Bad Request\n")
        #expect(text(HTTPProxy.errorResponse(status: 502, reason: "Bad Gateway", message: "could not reach\r\nhost"))
            == "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 22\r\nConnection: close\r\n\r\ncould not reach  host\n")
        #expect(text(HTTPProxy.errorResponse(status: 407, reason: "Proxy Authentication Required"))
            == "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 34\r\n"
            + "Connection: close\r\nProxy-Authenticate: Basic realm=\"Raha\"\r\n\r\n407 Proxy Authentication Required\n")
        let auth = text(HTTPProxy.proxyAuthenticationRequired(realm: "home"))
        #expect(auth.hasPrefix("HTTP/1.1 407 Proxy Authentication Required\r\n"))
        #expect(auth.contains("\r\nProxy-Authenticate: Basic realm=\"home\"\r\n"))
        #expect(!auth.contains("realm=\"Raha\""))
        #expect(text(HTTPProxy.connectionEstablished) == "HTTP/1.1 200 Connection established\r\n\r\n")
    }

    @Test func errorResponsesParseBackAndFrameTheirBody() throws {
        for (status, reason) in [(400, "Bad Request"), (405, "Method Not Allowed"), (502, "Bad Gateway"), (504, "Gateway Timeout")] {
            var buffer = HTTPProxy.errorResponse(status: status, reason: reason)
            let head = try #require(try HTTPResponseHead.read(from: &buffer))
            #expect(head.status == status)
            #expect(head.reason == reason)
            #expect(!head.isKeepAlive)
            var framer = try HTTPBodyFramer(response: head, requestMethod: "GET")
            #expect(try framer.consume(buffer) == buffer.readableBytes)
            #expect(framer.isComplete)
        }
    }

    @Test func statusForErrors() {
        #expect(HTTPProxy.status(for: .malformed("x")).status == 400)
        #expect(HTTPProxy.status(for: .tooLarge("x")).status == 431)
        #expect(HTTPProxy.status(for: .unsupported("x")).status == 505)
        #expect(text(HTTPProxy.errorResponse(for: .unsupported("HTTP/2.0 is not supported"))).hasSuffix("\r\n\r\nHTTP/2.0 is not supported\n"))
    }
}

@Suite struct HTTPResponseHeadTests {
    static let sample = "HTTP/1.1 200 OK fine\r\nContent-Length: 5\r\nServer: x\r\n\r\n"

    @Test func readsWholeAndSplit() throws {
        var buffer = ByteBuffer(string: Self.sample + "hello")
        let head = try #require(try HTTPResponseHead.read(from: &buffer))
        #expect(head == HTTPResponseHead(version: .http1_1, status: 200, reason: "OK fine",
                                         headers: [(name: "Content-Length", value: "5"), (name: "Server", value: "x")]))
        #expect(text(buffer) == "hello")
        var out = ByteBuffer()
        head.serialize(into: &out)
        #expect(text(out) == Self.sample)
        let all = Array(Self.sample.utf8)
        for cut in 0..<all.count {
            var partial = ByteBuffer(bytes: all[..<cut])
            #expect(try HTTPResponseHead.read(from: &partial) == nil)
            #expect(partial.readableBytes == cut)
        }
    }

    @Test func statusLineForms() throws {
        var noReason = ByteBuffer(string: "HTTP/1.0 204\r\n\r\n")
        let a = try #require(try HTTPResponseHead.read(from: &noReason))
        #expect(a.status == 204 && a.reason == "" && a.version == .http1_0)
        var emptyReason = ByteBuffer(string: "HTTP/1.1 100 \r\n\r\n")
        let b = try #require(try HTTPResponseHead.read(from: &emptyReason))
        #expect(b.isInformational && b.reason == "")
        for bad in ["HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 099 X\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1  200 OK\r\n\r\n",
                    "HTTP/1.1\r\n\r\n", "\r\nHTTP/1.1 200 OK\r\n\r\n", "ICY 200 OK\r\n\r\n",
                    "HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n", "HTTP/1.1 200 OK\nX: 1\n\n"] {
            var buffer = ByteBuffer(string: bad)
            #expect(performing: { try HTTPResponseHead.read(from: &buffer) }, throws: code(.malformed))
        }
        var h2 = ByteBuffer(string: "HTTP/2.0 200 OK\r\n\r\n")
        #expect(performing: { try HTTPResponseHead.read(from: &h2) }, throws: code(.unsupported))
    }

    @Test func garbageFailsCleanly() {
        var rng = SeededGenerator(seed: 0xBAD)
        let alphabet = Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n:\t ".utf8)
        for round in 0..<2000 {
            let length = Int.random(in: 0..<100, using: &rng)
            let input: [UInt8] = (0..<length).map { _ in
                round % 2 == 0 ? UInt8.random(in: 0...255, using: &rng) : alphabet.randomElement(using: &rng)!
            }
            var buffer = ByteBuffer(bytes: input)
            do {
                if let head = try HTTPResponseHead.read(from: &buffer) {
                    var framer = try HTTPBodyFramer(response: head, requestMethod: "GET")
                    #expect(try framer.consume(buffer) <= buffer.readableBytes)
                } else {
                    #expect(buffer.readableBytes == length)
                }
            } catch {
                #expect(error is WireError)
            }
        }
    }
}

@Suite struct HTTPBodyFramerTests {
    private func request(_ fields: String, method: String = "POST", version: String = "HTTP/1.1") throws -> HTTPRequestHead {
        try #require(try readRequest("\(method) http://a/ \(version)\r\n\(fields)\r\n"))
    }

    private func response(_ status: Int, _ fields: String, version: String = "HTTP/1.1") throws -> HTTPResponseHead {
        var buffer = ByteBuffer(string: "\(version) \(status) X\r\n\(fields)\r\n")
        return try #require(try HTTPResponseHead.read(from: &buffer))
    }

    @Test func requestFraming() throws {
        #expect(try HTTPBodyFramer.framing(request: request("")) == .empty)
        #expect(try HTTPBodyFramer.framing(request: request("Content-Length: 10\r\n")) == .contentLength(10))
        #expect(try HTTPBodyFramer.framing(request: request("Content-Length: 7, 7\r\nContent-Length: 7\r\n")) == .contentLength(7))
        #expect(try HTTPBodyFramer.framing(request: request("Transfer-Encoding: chunked\r\n")) == .chunked)
        #expect(try HTTPBodyFramer.framing(request: request("Transfer-Encoding: gzip, CHUNKED\r\n")) == .chunked)
        #expect(try HTTPBodyFramer.framing(request: request("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n")) == .chunked)
        #expect(try HTTPBodyFramer.framing(request: request("", method: "CONNECT")) == .tunnel)
        let smuggling = [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5, 6\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length: \r\n",
            "Content-Length: 99999999999999999999\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunked, chunked\r\n",
            "Transfer-Encoding: \r\n",
        ]
        for fields in smuggling {
            #expect(performing: { try HTTPBodyFramer(request: request(fields)) }, throws: code(.malformed))
        }
        #expect(performing: { try HTTPBodyFramer(request: request("Transfer-Encoding: chunked\r\n", version: "HTTP/1.0")) },
                throws: code(.malformed))
    }

    @Test func responseFraming() throws {
        #expect(try HTTPBodyFramer.framing(response: response(200, "Content-Length: 5\r\n"), requestMethod: "HEAD") == .empty)
        #expect(try HTTPBodyFramer.framing(response: response(204, "Content-Length: 5\r\n"), requestMethod: "GET") == .empty)
        #expect(try HTTPBodyFramer.framing(response: response(304, "Transfer-Encoding: chunked\r\n"), requestMethod: "GET") == .empty)
        #expect(try HTTPBodyFramer.framing(response: response(100, ""), requestMethod: "POST") == .empty)
        #expect(try HTTPBodyFramer.framing(response: response(101, "Upgrade: websocket\r\n"), requestMethod: "GET") == .tunnel)
        #expect(try HTTPBodyFramer.framing(response: response(200, ""), requestMethod: "CONNECT") == .tunnel)
        #expect(try HTTPBodyFramer.framing(response: response(407, "Content-Length: 2\r\n"), requestMethod: "CONNECT") == .contentLength(2))
        #expect(try HTTPBodyFramer.framing(response: response(200, ""), requestMethod: "GET") == .untilClose)
        #expect(try HTTPBodyFramer.framing(response: response(200, "Content-Length: 0\r\n"), requestMethod: "GET") == .contentLength(0))
        #expect(try HTTPBodyFramer.framing(response: response(200, "Transfer-Encoding: chunked\r\n"), requestMethod: "GET") == .chunked)
        #expect(try HTTPBodyFramer.framing(response: response(200, "Transfer-Encoding: gzip\r\n"), requestMethod: "GET") == .untilClose)
        for fields in ["Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "Content-Length: 1\r\nContent-Length: 2\r\n",
                       "Transfer-Encoding: chunked, gzip\r\n"] {
            #expect(performing: { try HTTPBodyFramer(response: response(200, fields), requestMethod: "GET") }, throws: code(.malformed))
        }
        #expect(performing: { try HTTPBodyFramer(response: response(200, "Transfer-Encoding: chunked\r\n", version: "HTTP/1.0"), requestMethod: "GET") },
                throws: code(.malformed))
    }

    @Test func contentLengthAcrossSplits() throws {
        let message = Array("0123456789NEXT".utf8)
        for cut in 0...message.count {
            var framer = HTTPBodyFramer(framing: .contentLength(10))
            let first = try framer.consume(ByteBuffer(bytes: message[..<cut]))
            #expect(first == min(cut, 10))
            #expect(framer.isComplete == (cut >= 10))
            let second = try framer.consume(ByteBuffer(bytes: message[cut...]))
            #expect(first + second == 10)
            #expect(framer.isComplete)
            #expect(try framer.consume(ByteBuffer(string: "more")) == 0)
        }
        var buffer = ByteBuffer(bytes: message)
        var framer = HTTPBodyFramer(framing: .contentLength(10))
        #expect(text(try framer.readBody(from: &buffer)) == "0123456789")
        #expect(text(buffer) == "NEXT")
    }

    @Test func emptyUntilCloseAndTunnel() throws {
        var empty = HTTPBodyFramer(framing: .empty)
        #expect(empty.isComplete)
        #expect(try empty.consume(ByteBuffer(string: "GET")) == 0)
        for framing in [HTTPBodyFramer.Framing.untilClose, .tunnel] {
            var open = HTTPBodyFramer(framing: framing)
            #expect(try open.consume(ByteBuffer(string: "abc")) == 3)
            #expect(!open.isComplete)
            #expect(throws: Never.self) { try open.endOfInput() }
        }
    }

    @Test func endOfInputDetectsTruncation() throws {
        var framer = HTTPBodyFramer(framing: .contentLength(4))
        _ = try framer.consume(ByteBuffer(string: "ab"))
        #expect(performing: { try framer.endOfInput() }, throws: code(.malformed))
        var chunked = HTTPBodyFramer(framing: .chunked)
        _ = try chunked.consume(ByteBuffer(string: "3\r\nab"))
        #expect(performing: { try chunked.endOfInput() }, throws: code(.malformed))
        _ = try chunked.consume(ByteBuffer(string: "c\r\n0\r\n\r\n"))
        #expect(chunked.isComplete)
        #expect(throws: Never.self) { try chunked.endOfInput() }
    }

    static let chunkedBody = "4;name=value;quoted=\"a b;c\"\r\nWiki\r\n"
        + "5 ; ext\r\npedia\r\n"
        + "E\r\n in\r\n\r\nchunks.\r\n"
        + "000\r\n"
        + "Expires: Wed, 21 Oct 2015 07:28:00 GMT\r\nX-Checksum:abc\r\n\r\n"

    @Test func chunkedWithExtensionsAndTrailersSplitAtEveryByte() throws {
        let body = Array(Self.chunkedBody.utf8)
        let next = Array("GET http://a/ HTTP/1.1\r\n\r\n".utf8)
        let stream = body + next
        // One split anywhere.
        for cut in 0...stream.count {
            var framer = HTTPBodyFramer(framing: .chunked)
            let first = try framer.consume(ByteBuffer(bytes: stream[..<cut]))
            #expect(first == min(cut, body.count), "cut \(cut)")
            #expect(framer.isComplete == (cut >= body.count), "cut \(cut)")
            let rest = ByteBuffer(bytes: stream[first...])
            let second = try framer.consume(rest)
            #expect(first + second == body.count, "cut \(cut)")
            #expect(framer.isComplete)
        }
        // One byte at a time.
        var framer = HTTPBodyFramer(framing: .chunked)
        var total = 0
        for (i, byte) in stream.enumerated() {
            let used = try framer.consume(ByteBuffer(bytes: [byte]))
            total += used
            #expect(used == (i < body.count ? 1 : 0))
            #expect(framer.isComplete == (i >= body.count - 1))
        }
        #expect(total == body.count)
        // Whole, through readBody, leaving the next request.
        var buffer = ByteBuffer(bytes: stream)
        var whole = HTTPBodyFramer(framing: .chunked)
        #expect(bytes(try whole.readBody(from: &buffer)) == body)
        #expect(bytes(buffer) == next)
    }

    @Test func chunkedLastChunkWithoutTrailers() throws {
        var framer = HTTPBodyFramer(framing: .chunked)
        #expect(try framer.consume(ByteBuffer(string: "0\r\n\r\nX")) == 5)
        #expect(framer.isComplete)
        var large = HTTPBodyFramer(framing: .chunked)
        let payload = String(repeating: "z", count: 0x1000)
        #expect(try large.consume(ByteBuffer(string: "1000\r\n" + payload + "\r\n0\r\n\r\n")) == 6 + 0x1000 + 2 + 5)
        #expect(large.isComplete)
    }

    @Test func chunkedRejectsBadSyntax() throws {
        let bad: [(String, WireError.Code)] = [
            ("\r\n", .malformed),                          // no size
            ("g\r\n", .malformed),
            ("-1\r\n", .malformed),
            ("3\nabc\r\n0\r\n\r\n", .malformed),           // bare LF after size
            ("3\r\nabc\n0\r\n\r\n", .malformed),           // bare LF after data
            ("3\r\nabcd\r\n", .malformed),                 // data longer than its size
            ("3;a\u{1}b\r\n", .malformed),                 // control byte in an extension
            ("3;a\nb\r\n", .malformed),                    // LF inside an extension
            ("3 x\r\n", .malformed),
            ("0\r\nX: 1\r\n folded\r\n\r\n", .malformed), // obs-fold in trailers
            ("0\r\nX : 1\r\n\r\n", .malformed),           // space before colon
            ("0\r\nNoColon\r\n\r\n", .malformed),
            ("0\r\nX: 1\n\r\n", .malformed),
            ("0\r\n\rX", .malformed),
            ("10000000000000000\r\n", .tooLarge),          // 2^64
            ("1;" + String(repeating: "e", count: 5000) + "\r\n", .tooLarge),
            ("0\r\nX: " + String(repeating: "v", count: 20000) + "\r\n\r\n", .tooLarge),
        ]
        for (input, expected) in bad {
            // Whole, and byte by byte.
            var whole = HTTPBodyFramer(framing: .chunked)
            #expect(performing: { try whole.consume(ByteBuffer(string: input)) }, throws: code(expected))
            var piecewise = HTTPBodyFramer(framing: .chunked)
            #expect(performing: {
                for byte in input.utf8 { _ = try piecewise.consume(ByteBuffer(bytes: [byte])) }
            }, throws: code(expected))
        }
        // Sixteen hex digits is the most that fits.
        var max = HTTPBodyFramer(framing: .chunked)
        #expect(try max.consume(ByteBuffer(string: "ffffffffffffffff\r\nab")) == 20)
        #expect(!max.isComplete)
    }

    @Test func chunkedGarbageFailsCleanly() {
        var rng = SeededGenerator(seed: 7230)
        let alphabet = Array("0123456789abcdefABCDEF;=\" \t\r\n:Xx".utf8)
        for round in 0..<3000 {
            let length = Int.random(in: 0..<64, using: &rng)
            let input: [UInt8] = (0..<length).map { _ in
                round % 3 == 0 ? UInt8.random(in: 0...255, using: &rng) : alphabet.randomElement(using: &rng)!
            }
            var framer = HTTPBodyFramer(framing: .chunked)
            do {
                let used = try framer.consume(ByteBuffer(bytes: input))
                #expect(used <= length)
                if !framer.isComplete { #expect(used == length) }
            } catch {
                #expect(error is WireError)
            }
        }
    }
}
