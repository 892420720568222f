import NIOCore

// HTTP/1.1 as a forward proxy sees it (RFC 9110, RFC 9112): request and
// response heads, the proxy's reading of a request (CONNECT or absolute-form),
// and body framing so that a forwarder can keep connections alive.
//
// Syntax decisions, the same for requests, responses and chunked bodies:
// - Lines end in CRLF. A bare LF or a bare CR is rejected as malformed
//   (RFC 9112 section 2.2 allows either choice; rejecting keeps this parser
//   and whatever sits behind it from disagreeing about where a line ends).
// - Control characters other than HTAB are rejected anywhere in a head, so a
//   peer speaking something else (TLS, SOCKS4, binary) fails on its first
//   bytes instead of waiting for a head that never comes.
// - obs-fold (a field line starting with SP or HTAB) is rejected, as is
//   whitespace between a field name and its colon (RFC 9112 section 5).
// - Empty lines before a request line are skipped (RFC 9112 section 2.2);
//   before a status line they are malformed.
// - Only HTTP/1.0 and HTTP/1.1 are accepted; other versions throw
//   `.unsupported`, which `HTTPProxy.errorResponse(for:)` answers with 505.
// - Field values are byte strings: they are decoded byte for byte as
//   ISO-8859-1 so that any value (UTF-8 or not) is written back unchanged by
//   `serialize(into:)`. ASCII, which is everything a proxy looks at, reads the
//   same either way. A value set by the caller is written as ISO-8859-1 where
//   every scalar is below U+0100 and as UTF-8 otherwise; CR, LF and NUL in a
//   caller's value are written as spaces.

// MARK: - Versions and heads

public struct HTTPVersion: Hashable, Sendable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    public static let http1_0 = HTTPVersion(major: 1, minor: 0)
    public static let http1_1 = HTTPVersion(major: 1, minor: 1)

    public var description: String { "HTTP/\(major).\(minor)" }
}

/// What request and response heads share: a version and ordered fields.
public protocol HTTPMessageHead {
    var version: HTTPVersion { get }
    var headers: [(name: String, value: String)] { get set }
}

extension HTTPMessageHead {
    /// The first value of the field `name`, compared case-insensitively.
    public func value(of name: String) -> String? {
        let wanted = asciiLowercased(name)
        return headers.first { asciiLowercased($0.name) == wanted }?.value
    }

    /// Every value of the field `name`, in order, compared case-insensitively.
    public func values(of name: String) -> [String] {
        let wanted = asciiLowercased(name)
        return headers.filter { asciiLowercased($0.name) == wanted }.map(\.value)
    }

    public func contains(_ name: String) -> Bool {
        value(of: name) != nil
    }

    /// The comma-separated list elements of every `name` field, trimmed and
    /// lowercased, empty elements dropped (RFC 9110 section 5.6.1). Suits
    /// token lists such as Connection and Transfer-Encoding.
    public func tokens(of name: String) -> [String] {
        values(of: name).flatMap { value in
            value.split(separator: ",", omittingEmptySubsequences: true)
                .map { asciiLowercased(trimOWS(Substring($0))) }
                .filter { !$0.isEmpty }
        }
    }

    /// Removes every `name` field, compared case-insensitively.
    public mutating func removeAll(named name: String) {
        let wanted = asciiLowercased(name)
        headers.removeAll { asciiLowercased($0.name) == wanted }
    }

    /// Replaces the first `name` field's value and removes the others, or
    /// appends the field when there is none.
    public mutating func set(_ name: String, to value: String) {
        let wanted = asciiLowercased(name)
        if let first = headers.firstIndex(where: { asciiLowercased($0.name) == wanted }) {
            headers[first].value = value
            var i = headers.index(after: first)
            while i < headers.endIndex {
                if asciiLowercased(headers[i].name) == wanted { headers.remove(at: i) } else { i += 1 }
            }
        } else {
            headers.append((name: name, value: value))
        }
    }

    /// Whether the connection stays open after this message, judging by the
    /// version and the Connection field: HTTP/1.1 unless `close` is listed,
    /// HTTP/1.0 only if `keep-alive` is. A body read until close ends the
    /// connection regardless (see `HTTPBodyFramer`).
    public var isKeepAlive: Bool {
        let tokens = self.tokens(of: "Connection")
        if tokens.contains("close") { return false }
        if version == .http1_0 { return tokens.contains("keep-alive") }
        return true
    }

    /// The fields a proxy must not forward: Connection, the fields it names
    /// (except Host, Content-Length and Transfer-Encoding, which frame the
    /// message and are never dropped on a peer's say-so), Keep-Alive,
    /// Proxy-Connection, Proxy-Authorization, Proxy-Authenticate, TE and
    /// Upgrade. Lowercased.
    public var hopByHopFieldNames: Set<String> {
        var names: Set<String> = ["connection", "keep-alive", "proxy-connection", "proxy-authorization",
                                  "proxy-authenticate", "te", "upgrade"]
        for token in tokens(of: "Connection") where !framingFieldNames.contains(token) {
            names.insert(token)
        }
        return names
    }

    /// Removes the fields `hopByHopFieldNames` lists.
    public mutating func removeHopByHopFields() {
        let names = hopByHopFieldNames
        headers.removeAll { names.contains(asciiLowercased($0.name)) }
    }
}

private let framingFieldNames: Set<String> = ["host", "content-length", "transfer-encoding"]

/// A request line and its header fields.
public struct HTTPRequestHead: HTTPMessageHead, Equatable, Sendable, CustomStringConvertible {
    public var method: String
    /// The request-target exactly as received (origin-, absolute-,
    /// authority- or asterisk-form).
    public var target: String
    public var version: HTTPVersion
    public var headers: [(name: String, value: String)]

    public init(method: String, target: String, version: HTTPVersion = .http1_1, headers: [(name: String, value: String)] = []) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
    }

    public static func == (lhs: HTTPRequestHead, rhs: HTTPRequestHead) -> Bool {
        lhs.method == rhs.method && lhs.target == rhs.target && lhs.version == rhs.version
            && headersEqual(lhs.headers, rhs.headers)
    }

    public var description: String { "\(method) \(target) \(version)" }

    /// Reads a request head: optional empty lines, the request line, field
    /// lines and the empty line. Returns nil, with the reader index
    /// unchanged, until the whole head is in the buffer; then consumes exactly
    /// the head, leaving any body bytes. Throws `.tooLarge` when no head ends
    /// within `maxHeadBytes`, `.malformed` for bad syntax (see the notes at
    /// the top of this file) and `.unsupported` for an HTTP version other
    /// than 1.0 or 1.1. A bad request line is reported as soon as it is
    /// complete, and a control byte as soon as it arrives.
    public static func read(from buffer: inout ByteBuffer, maxHeadBytes: Int = 32768) throws -> HTTPRequestHead? {
        var requestLine: (method: String, target: String, version: HTTPVersion)?
        guard let scan = try scanHead(buffer, maxHeadBytes: maxHeadBytes, isRequest: true, firstLine: { line in
            requestLine = try parseRequestLine(line)
        }) else { return nil }
        guard let requestLine else { return nil } // unreachable: scanHead saw the first line
        let headers = try parseFieldLines(buffer, scan.fieldLines)
        buffer.moveReaderIndex(forwardBy: scan.length)
        return HTTPRequestHead(method: requestLine.method, target: requestLine.target,
                               version: requestLine.version, headers: headers)
    }

    /// Writes the request line, the fields and the empty line.
    @discardableResult
    public func serialize(into buffer: inout ByteBuffer) -> Int {
        let start = buffer.writerIndex
        writeSanitized(method, into: &buffer)
        buffer.writeInteger(UInt8(ascii: " "))
        writeSanitized(target, into: &buffer)
        buffer.writeInteger(UInt8(ascii: " "))
        buffer.writeString(version.description)
        buffer.writeStaticString("\r\n")
        writeFields(headers, into: &buffer)
        return buffer.writerIndex - start
    }

    /// The username and password of a `Proxy-Authorization: Basic` field,
    /// or nil when there is none or it is not Basic with valid base64 and a
    /// colon.
    public var proxyBasicCredentials: (username: [UInt8], password: [UInt8])? {
        guard let field = value(of: "Proxy-Authorization") else { return nil }
        let trimmed = trimOWS(Substring(field))
        guard let space = trimmed.firstIndex(where: { $0 == " " || $0 == "\t" }),
              asciiLowercased(String(trimmed[..<space])) == "basic",
              let decoded = Base64.decode(trimOWS(trimmed[space...])),
              let colon = decoded.firstIndex(of: UInt8(ascii: ":"))
        else { return nil }
        return (Array(decoded[..<colon]), Array(decoded[(colon + 1)...]))
    }

    /// True when the request carries `Proxy-Authorization: Basic` with
    /// exactly these credentials. Compared in constant time.
    public func hasProxyAuthorization(_ credentials: ProxyCredentials) -> Bool {
        let parsed = proxyBasicCredentials
        let offered = parsed ?? (username: [], password: [])
        // Both comparisons run to the end before either result is looked at.
        let userMatches = constantTimeEquals(offered.username, Array(credentials.username.utf8))
        let passwordMatches = constantTimeEquals(offered.password, Array(credentials.password.utf8))
        return parsed != nil && userMatches && passwordMatches
    }
}

/// A status line and its header fields.
public struct HTTPResponseHead: HTTPMessageHead, Equatable, Sendable, CustomStringConvertible {
    public var version: HTTPVersion
    public var status: Int
    public var reason: String
    public var headers: [(name: String, value: String)]

    public init(version: HTTPVersion = .http1_1, status: Int, reason: String, headers: [(name: String, value: String)] = []) {
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
    }

    public static func == (lhs: HTTPResponseHead, rhs: HTTPResponseHead) -> Bool {
        lhs.version == rhs.version && lhs.status == rhs.status && lhs.reason == rhs.reason
            && headersEqual(lhs.headers, rhs.headers)
    }

    public var description: String { "\(version) \(status) \(reason)" }

    /// 1xx: an interim response. Another head follows for the same request
    /// (except after 101, when the connection changes protocol).
    public var isInformational: Bool { (100..<200).contains(status) }

    /// Reads a response head: the status line, field lines and the empty
    /// line. Same contract as `HTTPRequestHead.read(from:maxHeadBytes:)`.
    /// The status code must be three digits from 100 to 999; the reason
    /// phrase may be empty, and the space before an empty one may be missing.
    /// To forward the head byte for byte, slice the buffer between the reader
    /// index before and after the call.
    public static func read(from buffer: inout ByteBuffer, maxHeadBytes: Int = 32768) throws -> HTTPResponseHead? {
        var statusLine: (version: HTTPVersion, status: Int, reason: String)?
        guard let scan = try scanHead(buffer, maxHeadBytes: maxHeadBytes, isRequest: false, firstLine: { line in
            statusLine = try parseStatusLine(line)
        }) else { return nil }
        guard let statusLine else { return nil }
        let headers = try parseFieldLines(buffer, scan.fieldLines)
        buffer.moveReaderIndex(forwardBy: scan.length)
        return HTTPResponseHead(version: statusLine.version, status: statusLine.status,
                                reason: statusLine.reason, headers: headers)
    }

    @discardableResult
    public func serialize(into buffer: inout ByteBuffer) -> Int {
        let start = buffer.writerIndex
        buffer.writeString(version.description)
        buffer.writeInteger(UInt8(ascii: " "))
        buffer.writeString(String(status))
        buffer.writeInteger(UInt8(ascii: " "))
        writeSanitized(reason, into: &buffer)
        buffer.writeStaticString("\r\n")
        writeFields(headers, into: &buffer)
        return buffer.writerIndex - start
    }
}

// MARK: - Proxy semantics

/// What a client asks of a forward proxy.
public enum HTTPProxyRequest: Equatable, Sendable {
    /// CONNECT host:port: open a tunnel. Answer with
    /// `HTTPProxy.connectionEstablished` once it is up.
    case connect(Endpoint)
    /// A plain http:// request: send `head` (rewritten to origin-form, see
    /// `init(head:)`) and the body to `origin`.
    case forward(HTTPRequestHead, origin: Endpoint)

    /// Reads the proxy request from a head.
    ///
    /// CONNECT needs authority-form `host:port` (IPv6 in brackets, port
    /// required). Other methods need an absolute `http://host[:port]/path?q`
    /// target (default port 80; no userinfo; a fragment is dropped); the head
    /// is rewritten to origin-form `/path?q`, its Host field replaced by the
    /// URI's authority (placed first), and its hop-by-hop fields removed (see
    /// `hopByHopFieldNames`). When the client's head is not keep-alive the
    /// rewritten one says `Connection: close`; an HTTP/1.0 keep-alive head
    /// says `Connection: keep-alive`. Method, version, body framing fields
    /// and every other field are kept in order. No Via field is added: a
    /// local front does not announce itself.
    ///
    /// Throws `.malformed` (answer 400) for an https:// URI outside CONNECT,
    /// an origin-form or asterisk-form target, any other scheme, and a bad
    /// URI or authority.
    public init(head: HTTPRequestHead) throws {
        if head.method == "CONNECT" {
            self = .connect(try Self.parseAuthorityForm(head.target))
            return
        }
        let (authority, originForm) = try Self.splitAbsoluteForm(head.target)
        let origin: Endpoint
        do {
            origin = try Endpoint(parsing: authority, defaultPort: 80)
        } catch let error as WireError {
            throw WireError.malformed("the request URI has a bad host or port (\(error.reason)): expected http://HOST[:PORT]/PATH")
        }
        var rewritten = head
        let keepAlive = head.isKeepAlive
        rewritten.target = originForm
        rewritten.removeHopByHopFields()
        rewritten.removeAll(named: "Host")
        rewritten.headers.insert((name: "Host", value: authority), at: 0)
        if !keepAlive {
            rewritten.headers.append((name: "Connection", value: "close"))
        } else if head.version == .http1_0 {
            rewritten.headers.append((name: "Connection", value: "keep-alive"))
        }
        self = .forward(rewritten, origin: origin)
    }

    static func parseAuthorityForm(_ target: String) throws -> Endpoint {
        guard !target.isEmpty, !target.contains("/"), !target.contains("@") else {
            throw WireError.malformed("CONNECT needs a target of the form HOST:PORT, not “\(excerpt(target))”")
        }
        if !target.hasPrefix("["), target.filter({ $0 == ":" }).count > 1 {
            throw WireError.malformed("CONNECT to an IPv6 address needs brackets: [ADDRESS]:PORT")
        }
        do {
            return try Endpoint(parsing: target)
        } catch let error as WireError {
            throw WireError.malformed("CONNECT needs a target of the form HOST:PORT: \(error.reason)")
        }
    }

    /// Splits `http://authority/path?query#fragment` into the authority
    /// (an empty port removed) and the origin-form `/path?query`.
    static func splitAbsoluteForm(_ target: String) throws -> (authority: String, originForm: String) {
        guard let schemeEnd = target.firstRange(of: "://") else {
            if target.hasPrefix("/") || target == "*" {
                throw WireError.malformed("the request target “\(excerpt(target))” is not a full http:// URL: this port is a proxy, so set it as the client's HTTP proxy instead of browsing to it")
            }
            throw WireError.malformed("the request target “\(excerpt(target))” is not an http:// URL")
        }
        let scheme = asciiLowercased(String(target[..<schemeEnd.lowerBound]))
        guard scheme == "http" else {
            if scheme == "https" {
                throw WireError.malformed("https:// URLs must be tunnelled with CONNECT, not sent as plain proxy requests")
            }
            throw WireError.malformed("the scheme “\(excerpt(scheme))” cannot be forwarded: only http:// URLs (and CONNECT) are served")
        }
        let rest = target[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        var pathAndQuery = rest[authorityEnd...]
        if let hash = pathAndQuery.firstIndex(of: "#") { pathAndQuery = pathAndQuery[..<hash] }
        guard !authority.contains("@") else {
            throw WireError.malformed("the request URI carries a username or password before the host, which is not allowed in HTTP URLs")
        }
        if authority.hasSuffix(":") { authority = authority.dropLast() }
        guard !authority.isEmpty else {
            throw WireError.malformed("the request URI has no host: expected http://HOST[:PORT]/PATH")
        }
        if !authority.hasPrefix("["), authority.filter({ $0 == ":" }).count > 1 {
            throw WireError.malformed("an IPv6 address in a URL needs brackets: http://[ADDRESS]:PORT/")
        }
        let originForm: String
        if pathAndQuery.isEmpty {
            originForm = "/"
        } else if pathAndQuery.hasPrefix("?") {
            originForm = "/" + pathAndQuery
        } else {
            originForm = String(pathAndQuery)
        }
        return (String(authority), originForm)
    }
}

/// Ready-made proxy responses.
public enum HTTPProxy {
    /// The answer to a CONNECT whose tunnel is up:
    /// `HTTP/1.1 200 Connection established` and an empty line.
    public static var connectionEstablished: ByteBuffer {
        ByteBuffer(string: "HTTP/1.1 200 Connection established\r\n\r\n")
    }

    /// A complete HTTP/1.1 response with `Content-Type: text/plain`,
    /// `Content-Length`, `Connection: close` and a one-line body (`message`,
    /// or "STATUS REASON" when nil). Line breaks and control characters in
    /// `reason` and `message` become spaces. A 407 gets
    /// `Proxy-Authenticate: Basic realm="Raha"` unless `extraHeaders` has one.
    public static func errorResponse(status: Int, reason: String, message: String? = nil,
                                     extraHeaders: [(name: String, value: String)] = []) -> ByteBuffer {
        let safeReason = String(String.UnicodeScalarView(reason.unicodeScalars.map { ($0.value >= 0x20 && $0.value < 0x7F) ? $0 : " " }))
        let line = message.map { String(String.UnicodeScalarView($0.unicodeScalars.map { ($0.value < 0x20 || $0.value == 0x7F) ? " " : $0 })) }
            ?? "\(status) \(safeReason)"
        let body = line + "\n"
        var head = HTTPResponseHead(version: .http1_1, status: status, reason: safeReason, headers: [
            (name: "Content-Type", value: "text/plain; charset=utf-8"),
            (name: "Content-Length", value: String(body.utf8.count)),
            (name: "Connection", value: "close"),
        ])
        head.headers.append(contentsOf: extraHeaders)
        if status == 407 && !head.contains("Proxy-Authenticate") {
            head.headers.append((name: "Proxy-Authenticate", value: "Basic realm=\"Raha\""))
        }
        var out = ByteBuffer()
        head.serialize(into: &out)
        out.writeString(body)
        return out
    }

    /// 407 asking for Basic credentials in `realm`.
    public static func proxyAuthenticationRequired(realm: String = "Raha") -> ByteBuffer {
        let safeRealm = realm.filter { $0 != "\"" && $0 != "\\" }
        return errorResponse(status: 407, reason: "Proxy Authentication Required",
                             message: "This proxy needs a username and password.",
                             extraHeaders: [(name: "Proxy-Authenticate", value: "Basic realm=\"\(safeRealm)\"")])
    }

    /// The status for an error thrown while reading or interpreting a
    /// *request*: `.tooLarge` → 431, `.unsupported` → 505 (the only
    /// unsupported thing a request head can be is its version), anything
    /// else → 400. Errors from a *response* head or body mean 502 instead.
    public static func status(for error: WireError) -> (status: Int, reason: String) {
        switch error.code {
        case .tooLarge: return (431, "Request Header Fields Too Large")
        case .unsupported: return (505, "HTTP Version Not Supported")
        default: return (400, "Bad Request")
        }
    }

    /// `errorResponse` for a request error, the error's sentence as body.
    public static func errorResponse(for error: WireError) -> ByteBuffer {
        let (status, reason) = self.status(for: error)
        return errorResponse(status: status, reason: reason, message: error.reason)
    }
}

// MARK: - Head scanning and parsing (internal)

let cr = UInt8(ascii: "\r")
let lf = UInt8(ascii: "\n")
let sp = UInt8(ascii: " ")
let htab = UInt8(ascii: "\t")

/// tchar from RFC 9110 section 5.6.2.
@inline(__always)
func isTChar(_ b: UInt8) -> Bool {
    switch b {
    case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"):
        return true
    case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
         UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
         UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
        return true
    default:
        return false
    }
}

/// field-vchar, obs-text, SP or HTAB.
@inline(__always)
func isFieldValueByte(_ b: UInt8) -> Bool {
    b == htab || (b >= 0x20 && b != 0x7F)
}

@inline(__always)
func hexValue(_ b: UInt8) -> UInt8? {
    switch b {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
    default: return nil
    }
}

struct HeadScan {
    /// Offsets from the reader index of each field line, without CRLF.
    var fieldLines: [Range<Int>]
    /// Bytes from the reader index to just past the empty line.
    var length: Int
}

/// Finds the end of a head in `buffer` without consuming anything. Calls
/// `firstLine` with the start line as soon as it is complete. Returns nil
/// when the head is not yet complete.
func scanHead(_ buffer: ByteBuffer, maxHeadBytes: Int, isRequest: Bool,
                      firstLine: ([UInt8]) throws -> Void) throws -> HeadScan? {
    let kind = isRequest ? "request" : "response"
    let window = Swift.min(buffer.readableBytes, Swift.max(maxHeadBytes, 0))
    let found: HeadScan? = try buffer.withUnsafeReadableBytes { bytes in
        var lineStart = 0
        var sawStartLine = false
        var fieldLines: [Range<Int>] = []
        var i = 0
        while i < window {
            let b = bytes[i]
            if b == cr {
                guard i + 1 < window else { break }
                guard bytes[i + 1] == lf else {
                    throw WireError.malformed("the \(kind) head has a CR not followed by LF")
                }
                if i == lineStart {
                    if sawStartLine {
                        return HeadScan(fieldLines: fieldLines, length: i + 2)
                    }
                    guard isRequest else {
                        throw WireError.malformed("the response starts with an empty line instead of a status line")
                    }
                } else if !sawStartLine {
                    sawStartLine = true
                    try firstLine(Array(bytes[lineStart..<i]))
                } else {
                    fieldLines.append(lineStart..<i)
                }
                i += 2
                lineStart = i
                continue
            }
            if b == lf {
                throw WireError.malformed("the \(kind) head has a line ending in a bare LF: lines must end in CRLF")
            }
            guard isFieldValueByte(b) else {
                throw WireError.malformed("the \(kind) head contains control byte \(b): the peer is not speaking HTTP/1.1")
            }
            i += 1
        }
        return nil
    }
    if let found { return found }
    if buffer.readableBytes >= maxHeadBytes {
        throw WireError.tooLarge("the \(kind) head is longer than \(maxHeadBytes) bytes")
    }
    return nil
}

func parseVersion(_ bytes: ArraySlice<UInt8>, kind: String) throws -> HTTPVersion {
    let prefix: [UInt8] = Array("HTTP/".utf8)
    guard bytes.count == 8, bytes.starts(with: prefix) else {
        throw WireError.malformed("the \(kind) line does not carry an HTTP version such as HTTP/1.1")
    }
    let major = bytes[bytes.startIndex + 5], dot = bytes[bytes.startIndex + 6], minor = bytes[bytes.startIndex + 7]
    guard (0x30...0x39).contains(major), dot == UInt8(ascii: "."), (0x30...0x39).contains(minor) else {
        throw WireError.malformed("the \(kind) line does not carry an HTTP version such as HTTP/1.1")
    }
    let version = HTTPVersion(major: Int(major - 0x30), minor: Int(minor - 0x30))
    guard version == .http1_0 || version == .http1_1 else {
        throw WireError.unsupported("\(version) is not supported: use HTTP/1.1")
    }
    return version
}

func parseRequestLine(_ line: [UInt8]) throws -> (method: String, target: String, version: HTTPVersion) {
    let parts = line.split(separator: sp, omittingEmptySubsequences: false)
    guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else {
        throw WireError.malformed("the request line is not METHOD TARGET HTTP/1.1 with single spaces")
    }
    guard parts[0].allSatisfy(isTChar) else {
        throw WireError.malformed("the request method contains characters a method cannot have")
    }
    guard parts[1].allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
        throw WireError.malformed("the request target contains spaces, control or non-ASCII bytes: it must be percent-encoded")
    }
    let version = try parseVersion(parts[2], kind: "request")
    return (String(decoding: parts[0], as: UTF8.self), String(decoding: parts[1], as: UTF8.self), version)
}

func parseStatusLine(_ line: [UInt8]) throws -> (version: HTTPVersion, status: Int, reason: String) {
    guard let firstSpace = line.firstIndex(of: sp) else {
        throw WireError.malformed("the status line is not HTTP/1.1 CODE REASON")
    }
    let version = try parseVersion(line[..<firstSpace], kind: "status")
    let rest = line[(firstSpace + 1)...]
    guard rest.count >= 3 else { throw WireError.malformed("the status line has no three-digit status code") }
    let code = rest.prefix(3)
    guard code.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), code.first != 0x30 else {
        throw WireError.malformed("the status line has no three-digit status code from 100 to 999")
    }
    let status = code.reduce(0) { $0 * 10 + Int($1 - 0x30) }
    let afterCode = rest.dropFirst(3)
    let reason: ArraySlice<UInt8>
    if afterCode.isEmpty {
        reason = []
    } else {
        guard afterCode.first == sp else { throw WireError.malformed("the status code is not followed by a space") }
        reason = afterCode.dropFirst()
    }
    return (version, status, latin1String(reason))
}

func parseFieldLines(_ buffer: ByteBuffer, _ lines: [Range<Int>]) throws -> [(name: String, value: String)] {
    var headers: [(name: String, value: String)] = []
    headers.reserveCapacity(lines.count)
    try buffer.withUnsafeReadableBytes { bytes in
        for range in lines {
            let line = bytes[range]
            let first = line.first! // lines are never empty
            if first == sp || first == htab {
                throw WireError.malformed("a header field is folded over lines (obs-fold), which is not accepted: send it on one line")
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
                throw WireError.malformed("a header line has no colon: expected NAME: VALUE")
            }
            let name = line[line.startIndex..<colon]
            guard !name.isEmpty else { throw WireError.malformed("a header line has an empty field name") }
            guard name.allSatisfy(isTChar) else {
                if name.last == sp || name.last == htab {
                    throw WireError.malformed("a header field name is followed by whitespace before its colon, which is not allowed")
                }
                throw WireError.malformed("a header field name contains characters a name cannot have")
            }
            var value = line[(colon + 1)...]
            while let f = value.first, f == sp || f == htab { value = value.dropFirst() }
            while let l = value.last, l == sp || l == htab { value = value.dropLast() }
            headers.append((name: String(decoding: name, as: UTF8.self), value: latin1String(value)))
        }
    }
    return headers
}

// MARK: - Text helpers (internal)

func latin1String<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    if bytes.allSatisfy({ $0 < 0x80 }) { return String(decoding: bytes, as: UTF8.self) }
    var scalars = String.UnicodeScalarView()
    for b in bytes { scalars.append(Unicode.Scalar(b)) }
    return String(scalars)
}

/// Writes `text` as ISO-8859-1 where it can and UTF-8 where it cannot, with
/// CR, LF and NUL turned into spaces.
func writeSanitized(_ text: String, into buffer: inout ByteBuffer) {
    if text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x80 || $0 == htab }) {
        buffer.writeString(text)
        return
    }
    for scalar in text.unicodeScalars {
        switch scalar.value {
        case 0x00, 0x0A, 0x0D:
            buffer.writeInteger(sp)
        case 0..<0x100:
            buffer.writeInteger(UInt8(scalar.value))
        default:
            buffer.writeString(String(scalar))
        }
    }
}

func writeFields(_ headers: [(name: String, value: String)], into buffer: inout ByteBuffer) {
    for (name, value) in headers {
        writeSanitized(name, into: &buffer)
        buffer.writeStaticString(": ")
        writeSanitized(value, into: &buffer)
        buffer.writeStaticString("\r\n")
    }
    buffer.writeStaticString("\r\n")
}

func headersEqual(_ a: [(name: String, value: String)], _ b: [(name: String, value: String)]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.name == $1.name && $0.value == $1.value }
}

func asciiLowercased(_ text: String) -> String {
    guard text.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) else { return text }
    return String(decoding: text.utf8.map { ($0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z")) ? $0 + 32 : $0 }, as: UTF8.self)
}

func trimOWS(_ text: Substring) -> String {
    var t = text
    while let f = t.first, f == " " || f == "\t" { t = t.dropFirst() }
    while let l = t.last, l == " " || l == "\t" { t = t.dropLast() }
    return String(t)
}

func excerpt(_ text: String) -> String {
    let short = text.prefix(64)
    return String(short.map { $0.isASCII && !($0.asciiValue! < 0x20) ? $0 : "?" }) + (text.count > 64 ? "…" : "")
}
