import NIOCore

/// An `http://`, `https://` or Outline `ssconf://` address of an online
/// configuration (`ssconf://` is fetched over https, as Outline does).
///
/// `redacted` (scheme, host and port, then `/…`) is what messages and logs
/// show: paths and queries of online configs often carry secrets.
public struct WebURL: Hashable, Sendable {
    public var secure: Bool
    public var server: Endpoint
    /// The origin-form request target: the path and query, never empty (`/` at least).
    public var target: String

    public init(secure: Bool, server: Endpoint, target: String) {
        self.secure = secure
        self.server = server
        self.target = target
    }

    /// Whether `text` starts with a scheme `WebURL` reads.
    public static func isWebURL(_ text: String) -> Bool {
        let lower = URIText.trimmingWhitespace(text).prefix(9).lowercased()
        return lower.hasPrefix("http://") || lower.hasPrefix("https://") || lower.hasPrefix("ssconf://")
    }

    public init(parsing text: String) throws {
        let trimmed = URIText.trimmingWhitespace(text)
        guard let schemeEnd = trimmed.range(of: "://") else {
            throw WireError.badKey("not a web address: expected https://host/path")
        }
        switch trimmed[..<schemeEnd.lowerBound].lowercased() {
        case "https", "ssconf": secure = true
        case "http": secure = false
        default: throw WireError.badKey("only https://, http:// and ssconf:// addresses can be fetched")
        }
        var rest = trimmed[schemeEnd.upperBound...]
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        guard !authority.isEmpty else {
            throw WireError.badKey("the web address has no host: expected https://host/path")
        }
        do {
            server = try Endpoint(parsing: authority, defaultPort: secure ? 443 : 80)
        } catch {
            throw WireError.badKey("the web address's host is not usable: \(error)")
        }
        let path = rest[authorityEnd...]
        target = path.isEmpty ? "/" : (path.hasPrefix("?") ? "/" + path : String(path))
        guard target.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw WireError.badKey("the web address has spaces or non-ASCII characters in its path: percent-encode them")
        }
    }

    /// `https://host:port/…`: the address without its path or query, for messages.
    public var redacted: String {
        let port = server.port == (secure ? 443 : 80) ? "" : ":\(server.port)"
        let host: String = if case .ipv6 = server.host { "[\(server.hostText)]" } else { server.hostText }
        return (secure ? "https://" : "http://") + host + port + (target == "/" ? "/" : "/…")
    }

    /// Where a redirect's `Location` points: an absolute http(s) URL, or a
    /// path on the same server.
    public func following(location: String) throws -> WebURL {
        if location.hasPrefix("/") && !location.hasPrefix("//") {
            return try WebURL(parsing: (secure ? "https://" : "http://") + authority + location)
        }
        if location.hasPrefix("//") {
            return try WebURL(parsing: (secure ? "https:" : "http:") + location)
        }
        let lower = location.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
            throw WireError.badKey("it redirects to an address that is not http(s)")
        }
        return try WebURL(parsing: location)
    }

    private var authority: String {
        let host: String = if case .ipv6 = server.host { "[\(server.hostText)]" } else { server.hostText }
        return "\(host):\(server.port)"
    }

    /// The GET request, `Connection: close`, no compression.
    public var request: ByteBuffer {
        let defaultPort: UInt16 = secure ? 443 : 80
        let host: String = if case .ipv6 = server.host { "[\(server.hostText)]" } else { server.hostText }
        let head = HTTPRequestHead(method: "GET", target: target, version: .http1_1, headers: [
            (name: "Host", value: server.port == defaultPort ? host : "\(host):\(server.port)"),
            (name: "User-Agent", value: "Raha"),
            (name: "Accept", value: "application/json, text/plain, */*"),
            (name: "Accept-Encoding", value: "identity"),
            (name: "Connection", value: "close"),
        ])
        var out = ByteBuffer()
        head.serialize(into: &out)
        return out
    }
}

/// Reads the response to a GET without keeping more than a cap: feed it
/// bytes as they arrive, it says when the body is complete, and hands back
/// the status, the `Location` (for redirects) and the decoded body
/// (Content-Length, chunked, or until close).
public struct WebResponseReader: Sendable {
    public struct Response: Sendable {
        public var status: Int
        public var location: String?
        public var body: [UInt8]
        public var contentType: String? = nil
    }

    public let maxBodyBytes: Int
    private var buffer = ByteBuffer()
    private var head: HTTPResponseHead?
    private var framer: HTTPBodyFramer?
    private var framed = ByteBuffer()

    public init(maxBodyBytes: Int) { self.maxBodyBytes = maxBodyBytes }

    /// Takes more bytes; returns the response once it is complete.
    public mutating func receive(_ bytes: inout ByteBuffer) throws -> Response? {
        buffer.writeBuffer(&bytes)
        while head == nil {
            guard let next = try HTTPResponseHead.read(from: &buffer, maxHeadBytes: 16384) else { return nil }
            if next.isInformational { continue }
            head = next
            framer = try HTTPBodyFramer(response: next, requestMethod: "GET")
        }
        guard var framer else { return nil }
        var slice = try framer.readBody(from: &buffer)
        self.framer = framer
        framed.writeBuffer(&slice)
        // Chunk lines add a little; the decoded body is checked exactly below.
        if framed.readableBytes > maxBodyBytes + 16384 || (framer.framing == .untilClose && framed.readableBytes > maxBodyBytes) {
            throw tooLarge
        }
        return framer.isComplete ? try finish() : nil
    }

    /// The peer closed: the response if it is complete, else an error.
    public mutating func endOfInput() throws -> Response {
        guard head != nil, let framer else {
            throw WireError.malformed("the server closed the connection before a complete response head")
        }
        try framer.endOfInput()
        return try finish()
    }

    private var tooLarge: WireError {
        WireError.tooLarge("the response is larger than \(maxBodyBytes / 1024) KiB, more than an online config may be")
    }

    private func finish() throws -> Response {
        guard let head, let framer else { preconditionFailure("finish() before the head") }
        var body: [UInt8]
        if case .chunked = framer.framing {
            body = try WebResponseReader.decodeChunked(framed)
        } else {
            body = Array(framed.readableBytesView)
        }
        guard body.count <= maxBodyBytes else { throw tooLarge }
        return Response(status: head.status, location: head.value(of: "Location"), body: body, contentType: head.value(of: "Content-Type"))
    }

    /// Decodes a chunked body that `HTTPBodyFramer` has already checked.
    static func decodeChunked(_ framed: ByteBuffer) throws -> [UInt8] {
        var input = framed
        var out: [UInt8] = []
        while true {
            guard let lineEnd = input.readableBytesView.firstIndex(of: UInt8(ascii: "\n")),
                  let line = input.readString(length: lineEnd - input.readerIndex + 1) else {
                throw WireError.malformed("the chunked body is cut short")
            }
            let sizeText = line.prefix { $0.isHexDigit }
            guard let size = Int(sizeText, radix: 16) else { throw WireError.malformed("a chunk size is not hexadecimal") }
            if size == 0 { return out }
            guard let chunk = input.readBytes(length: size) else { throw WireError.malformed("a chunk is cut short") }
            out += chunk
            input.moveReaderIndex(forwardBy: min(2, input.readableBytes)) // the CRLF after the data
        }
    }
}
