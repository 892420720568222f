/// A Shadowsocks access key: the `ss://` text people paste into a client.
///
/// Accepted forms (after trimming surrounding whitespace):
///
/// - SIP002 with base64 user info: `ss://BASE64URL(method:password)@host:port[/][?query][#tag]`
///   (padding optional; the standard base64 alphabet is accepted too);
/// - SIP002 with plain user info: `ss://method:password@host:port…`, where method and
///   password are percent-encoded. SIP002 requires this form for the 2022 methods;
/// - the legacy form `ss://BASE64(method:password@host:port)[#tag]`, whose decoded text
///   may itself carry a `?query` (Outline's SDK accepts that too).
///
/// Query parameters: `prefix` (Outline's connection prefix, see `prefix`), `outline`
/// (ignored), `plugin` (rejected: SIP003 plugins are not supported); others are ignored.
///
/// Error messages name what is wrong and what to do, and never contain the password.
public struct ShadowsocksKey: Hashable, Sendable {
    public let method: ShadowsocksMethod
    /// Legacy methods: the password (any text). 2022 methods: the base64 PSK text.
    public let password: String
    public let server: Endpoint
    /// Outline's connection prefix: these bytes replace the first bytes of the random
    /// salt of each TCP connection so that its first packet looks like another protocol.
    /// Empty when unused. Never longer than `method.saltLength`.
    public let prefix: [UInt8]
    /// The `#fragment`, percent-decoded: a name for people, not used on the wire.
    public var tag: String?

    /// Builds a key from its parts, with the same checks as parsing.
    public init(method: ShadowsocksMethod, password: String, server: Endpoint, prefix: [UInt8] = [], tag: String? = nil) throws {
        try ShadowsocksKey.validate(method: method, password: password, prefix: prefix)
        self.method = method
        self.password = password
        self.server = server
        self.prefix = prefix
        self.tag = tag
    }

    // MARK: Parsing

    public init(parsing text: String) throws {
        let trimmed = URIText.trimmingWhitespace(text)
        let scheme = "ss://"
        guard trimmed.utf8.count >= scheme.utf8.count,
              String(trimmed.prefix(scheme.count)).lowercased() == scheme else {
            if trimmed.lowercased().hasPrefix("ssconf://") {
                throw WireError.badKey("ssconf:// is an Outline dynamic key (a URL to fetch a key from), not an access key: fetch it and use the ss:// key it contains")
            }
            throw WireError.badKey("an access key starts with ss://: expected ss://BASE64(method:password)@host:port, ss://method:password@host:port or ss://BASE64(method:password@host:port)")
        }
        let (body, outerQuery, tag) = URIText.splitAfterScheme(trimmed.dropFirst(scheme.count))

        let method: ShadowsocksMethod
        let password: String
        let hostPart: Substring
        var queries: [Substring] = []
        if let at = body.lastIndex(of: "@") {
            // SIP002: user info, then host:port and an optional "/".
            let userinfo = body[..<at]
            hostPart = body[body.index(after: at)...]
            (method, password) = try ShadowsocksKey.parseUserinfo(userinfo)
        } else {
            // Legacy: the whole of it is base64 of method:password@host:port, possibly with a query.
            var encoded = body
            if encoded.hasSuffix("/") { encoded = encoded.dropLast() }
            guard !encoded.isEmpty else {
                throw WireError.badKey("the access key is empty after ss://: expected ss://BASE64(method:password)@host:port")
            }
            guard let decodedBytes = Base64.decode(ShadowsocksKey.percentDecodedEquals(encoded)),
                  let decoded = String(validatingUTF8Bytes: decodedBytes) else {
                throw WireError.badKey("the access key has no @ before the server and is not base64 of method:password@host:port either: expected ss://BASE64(method:password)@host:port")
            }
            guard let at = decoded.lastIndex(of: "@") else {
                throw WireError.badKey("the decoded access key has no server: expected base64 of method:password@host:port")
            }
            let credentials = decoded[..<at]
            var rest = decoded[decoded.index(after: at)...]
            if let question = rest.firstIndex(of: "?") {
                queries.append(rest[rest.index(after: question)...])
                rest = rest[..<question]
            }
            hostPart = rest
            guard let colon = credentials.firstIndex(of: ":") else {
                throw WireError.badKey("the decoded access key has no “:” between method and password: expected base64 of method:password@host:port")
            }
            method = try ShadowsocksMethod(name: String(credentials[..<colon]))
            password = String(credentials[credentials.index(after: colon)...])
        }
        if let outerQuery { queries.append(outerQuery) }

        let server = try ShadowsocksKey.parseServer(hostPart, password: password)

        var prefix: [UInt8] = []
        var sawPrefix = false
        for query in queries {
            for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
                let name: Substring
                let value: Substring
                if let eq = pair.firstIndex(of: "=") {
                    name = pair[..<eq]
                    value = pair[pair.index(after: eq)...]
                } else {
                    name = pair
                    value = ""
                }
                switch String(decoding: URIText.percentDecode(name, plusIsSpace: true), as: UTF8.self) {
                case "prefix":
                    // Like Outline's SDK, the first prefix wins.
                    if !sawPrefix {
                        sawPrefix = true
                        prefix = try ShadowsocksKey.parsePrefix(value)
                    }
                case "plugin":
                    if !value.isEmpty {
                        throw WireError.badKey("plugins are not supported: this key needs a SIP003 plugin (“plugin=” in the key); ask for a key without one")
                    }
                default:
                    continue // "outline=1" and unknown parameters are ignored, as SIP002 asks
                }
            }
        }

        try self.init(method: method, password: password, server: server, prefix: prefix, tag: tag)
    }

    // MARK: Output

    /// The canonical SIP002 text.
    ///
    /// Legacy methods: `ss://BASE64URL(method:password)@host:port/?outline=1[&prefix=…][#tag]`,
    /// the form Outline Manager hands out, with the prefix written the Outline way (each
    /// byte as the UTF-8 of the code point with that value, percent-encoded).
    /// 2022 methods: `ss://method:password@host:port[/?prefix=…][#tag]` with percent-encoded
    /// user info, as SIP002 requires for them.
    public var uri: String {
        var out = "ss://"
        if method.is2022 {
            out += URIText.percentEncode(Array(method.rawValue.utf8))
            out += ":"
            out += URIText.percentEncode(Array(password.utf8))
        } else {
            out += Base64.encode(Array("\(method.rawValue):\(password)".utf8), urlSafe: true, padded: false)
        }
        out += "@"
        switch server.host {
        case .ipv6: out += "[\(server.hostText)]"
        case .ipv4: out += server.hostText
        case .domain(let name): out += URIText.percentEncode(Array(name.utf8), keeping: { $0 < 0x80 })
        }
        out += ":\(server.port)"
        var query: [String] = []
        if !method.is2022 { query.append("outline=1") }
        if !prefix.isEmpty { query.append("prefix=" + ShadowsocksKey.encodePrefix(prefix)) }
        if !query.isEmpty { out += "/?" + query.joined(separator: "&") }
        if let tag, !tag.isEmpty { out += "#" + URIText.percentEncode(Array(tag.utf8)) }
        return out
    }

    /// The pre-shared key bytes for a 2022 method; nil for legacy methods.
    public var decodedPSK: [UInt8]? {
        guard method.is2022 else { return nil }
        return Base64.decode(Substring(password))
    }

    // MARK: Generation

    /// A fresh key from the system CSPRNG.
    ///
    /// Legacy methods get a 24-character URL-safe password (144 random bits) and, when
    /// `prefix` is nil, a `defaultPrefix(for:)`. 2022 methods get base64 of `keyLength`
    /// random bytes and no prefix unless one is given. `prefix` must not be longer than
    /// `method.saltLength`.
    public static func generate(method: ShadowsocksMethod, server: Endpoint, prefix: [UInt8]? = nil, tag: String? = nil) -> ShadowsocksKey {
        var rng = SystemRandomNumberGenerator()
        let password: String
        if method.is2022 {
            password = Base64.encode(randomBytes(method.keyLength, using: &rng), urlSafe: false, padded: true)
        } else {
            password = Base64.encode(randomBytes(18, using: &rng), urlSafe: true, padded: false)
        }
        let chosenPrefix = prefix ?? (method.is2022 ? [] : defaultPrefix(for: method, using: &rng))
        precondition(chosenPrefix.count <= method.saltLength,
                     "a \(method.rawValue) prefix can be at most \(method.saltLength) bytes, got \(chosenPrefix.count)")
        do {
            return try ShadowsocksKey(method: method, password: password, server: server, prefix: chosenPrefix, tag: tag)
        } catch {
            preconditionFailure("a generated key failed validation: \(error)")
        }
    }

    /// A short printable prefix that exempts a connection's first packet from the GFW's
    /// fully-encrypted-traffic rule (Wu et al., USENIX Security 2023): an HTTP method,
    /// a space and "/" followed by random lowercase letters, e.g. `GET /qzk`. That makes
    /// the first six bytes printable ASCII (exemption Ex2) and matches the HTTP request
    /// fingerprint (Ex5), whatever random bytes follow.
    ///
    /// It is 6 to 12 bytes long and never more than half the salt, so at least half the
    /// salt stays random; the method and the letters vary from key to key so that the
    /// prefix is not one fixed fingerprint.
    public static func defaultPrefix(for method: ShadowsocksMethod, using rng: inout some RandomNumberGenerator) -> [UInt8] {
        let verbs = ["GET", "POST", "PUT", "HEAD"]
        let verb = verbs[Int.random(in: 0..<verbs.count, using: &rng)]
        let maxLength = min(12, method.saltLength / 2)
        let head = Array((verb + " /").utf8)
        // At least two letters so that keys differ, and at least six bytes in all.
        let minLength = max(6, head.count + 2)
        let length = minLength >= maxLength ? maxLength : Int.random(in: minLength...maxLength, using: &rng)
        var out = head
        while out.count < length {
            out.append(UInt8(ascii: "a") + UInt8.random(in: 0..<26, using: &rng))
        }
        return out
    }

    /// `defaultPrefix(for:using:)` with the system CSPRNG.
    public static func defaultPrefix(for method: ShadowsocksMethod) -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        return defaultPrefix(for: method, using: &rng)
    }

    // MARK: Helpers

    private static func randomBytes(_ count: Int, using rng: inout some RandomNumberGenerator) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    private static func validate(method: ShadowsocksMethod, password: String, prefix: [UInt8]) throws {
        guard !password.isEmpty else {
            throw WireError.badKey("the access key has an empty password: expected ss://…method:password…@host:port")
        }
        if method.is2022 {
            if password.contains(":") {
                throw WireError.badKey("multi-user 2022 keys (iPSK:uPSK, SIP023) are not supported yet: use a single-user key, base64 of \(method.keyLength) bytes")
            }
            guard let psk = Base64.decode(Substring(password)) else {
                throw WireError.badKey("the \(method.rawValue) key is not base64: it must be base64 of exactly \(method.keyLength) bytes, e.g. from `openssl rand -base64 \(method.keyLength)`")
            }
            guard psk.count == method.keyLength else {
                throw WireError.badKey("the 2022 key must be base64 of exactly \(method.keyLength) bytes, this decodes to \(psk.count): generate one with `openssl rand -base64 \(method.keyLength)`")
            }
        }
        guard prefix.count <= method.saltLength else {
            throw WireError.badKey("the prefix is \(prefix.count) bytes but the \(method.rawValue) salt is only \(method.saltLength): use a shorter prefix (Outline recommends at most 16 bytes, and as few as get through)")
        }
    }

    /// Splits SIP002 user info into method and password: plain (`method:password`,
    /// percent-encoded) when it contains a ':', otherwise base64 of `method:password`.
    private static func parseUserinfo(_ userinfo: Substring) throws -> (ShadowsocksMethod, String) {
        guard !userinfo.isEmpty else {
            throw WireError.badKey("the access key has nothing before the @: expected ss://BASE64(method:password)@host:port")
        }
        let credentials: String
        if let colon = userinfo.firstIndex(of: ":") {
            let methodText = String(decoding: URIText.percentDecode(userinfo[..<colon], plusIsSpace: false), as: UTF8.self)
            let passwordText = String(decoding: URIText.percentDecode(userinfo[userinfo.index(after: colon)...], plusIsSpace: false), as: UTF8.self)
            return (try ShadowsocksMethod(name: methodText), passwordText)
        } else if let bytes = Base64.decode(percentDecodedEquals(userinfo)), let text = String(validatingUTF8Bytes: bytes) {
            credentials = text
        } else {
            throw WireError.badKey("the part before the @ is neither base64 of method:password nor method:password: expected ss://BASE64(method:password)@host:port or ss://method:password@host:port")
        }
        guard let colon = credentials.firstIndex(of: ":") else {
            throw WireError.badKey("the decoded user info has no “:” between method and password: expected base64 of method:password")
        }
        return (try ShadowsocksMethod(name: String(credentials[..<colon])), String(credentials[credentials.index(after: colon)...]))
    }

    private static func parseServer(_ text: Substring, password: String) throws -> Endpoint {
        var hostPort = text
        if hostPort.hasSuffix("/") { hostPort = hostPort.dropLast() }
        if hostPort.contains("/") {
            throw WireError.badKey("the access key has a path after host:port, which Shadowsocks keys do not have: expected ss://…@host:port[/?query][#tag]")
        }
        guard !hostPort.isEmpty else {
            throw WireError.badKey("the access key has no server: expected ss://…@host:port")
        }
        let decoded = String(decoding: URIText.percentDecode(hostPort, plusIsSpace: false), as: UTF8.self)
        if decoded.hasPrefix("[") {
            guard decoded.contains("]:") else {
                throw WireError.badKey("the access key has no port: expected ss://…@[IPv6]:port")
            }
        } else {
            let colons = decoded.filter { $0 == ":" }.count
            if colons == 0 {
                throw WireError.badKey("the access key has no port: expected ss://…@host:port")
            }
            if colons > 1 {
                throw WireError.badKey("an IPv6 server address must be in brackets: expected ss://…@[2001:db8::1]:port")
            }
        }
        do {
            return try Endpoint(parsing: decoded)
        } catch let error as WireError {
            // Endpoint's sentence quotes only the host text; make sure it cannot carry the password.
            let reason = !password.isEmpty && error.reason.contains(password)
                ? "the server address is not host:port" : error.reason
            throw WireError.badKey("the access key's server is not usable: \(reason)")
        }
    }

    /// Outline's prefix encoding: after percent-decoding, the text is UTF-8 whose code
    /// points are each one byte (U+0000–U+00FF), so `%C2%A8` is the byte 0xA8.
    private static func parsePrefix(_ value: Substring) throws -> [UInt8] {
        let raw = URIText.percentDecode(value, plusIsSpace: true)
        guard let text = String(validatingUTF8Bytes: raw) else {
            throw WireError.badKey("the prefix is not valid UTF-8 after percent-decoding: write bytes 0x80–0xFF as the UTF-8 of that code point, as Outline does (e.g. %C2%A8 for 0xA8)")
        }
        var out: [UInt8] = []
        for scalar in text.unicodeScalars {
            guard scalar.value <= 0xFF else {
                throw WireError.badKey("the prefix contains the character U+\(ShadowsocksKey.hex4(scalar.value)), beyond U+00FF: each prefix character stands for one byte 0x00–0xFF")
            }
            out.append(UInt8(scalar.value))
        }
        return out
    }

    private static func hex4(_ value: UInt32) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    private static func encodePrefix(_ prefix: [UInt8]) -> String {
        var utf8: [UInt8] = []
        for byte in prefix {
            if byte < 0x80 {
                utf8.append(byte)
            } else {
                utf8.append(0xC0 | (byte >> 6))
                utf8.append(0x80 | (byte & 0x3F))
            }
        }
        return URIText.percentEncode(utf8)
    }




    /// Base64 user info is sometimes written with its '=' padding percent-encoded.
    private static func percentDecodedEquals(_ text: Substring) -> Substring {
        guard text.contains("%") else { return text }
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count, bytes[i + 1] == UInt8(ascii: "3"),
               bytes[i + 2] == UInt8(ascii: "D") || bytes[i + 2] == UInt8(ascii: "d") {
                out.append(UInt8(ascii: "="))
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return Substring(String(decoding: out, as: UTF8.self))
    }


}
