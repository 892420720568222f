import NIOCore

/// A destination as proxies carry it: an IPv4 or IPv6 address or a domain
/// name that is resolved at the far end, plus a port.
///
/// Its binary form is the SOCKS5 address (RFC 1928 section 5), which
/// Shadowsocks and Trojan reuse: ATYP (1 = IPv4, 3 = domain, 4 = IPv6),
/// the address, then the port in network byte order.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public enum Host: Hashable, Sendable {
        /// Four bytes, network order.
        case ipv4([UInt8])
        /// Sixteen bytes, network order.
        case ipv6([UInt8])
        /// A name of 1 to 255 bytes, resolved by whoever finally connects.
        case domain(String)
    }

    public var host: Host
    public var port: UInt16

    public init(host: Host, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port`, `[v6]:port`, or a bare IPv4/IPv6 literal/domain with `defaultPort`.
    public init(parsing text: Substring, defaultPort: UInt16? = nil) throws {
        var hostText: Substring
        var portText: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw WireError.malformed("“\(text)” opens an IPv6 address with [ but never closes it: expected [ADDRESS]:PORT")
            }
            hostText = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            if rest.hasPrefix(":") { portText = rest.dropFirst() } else if !rest.isEmpty {
                throw WireError.malformed("unexpected “\(rest)” after the IPv6 address: expected [ADDRESS]:PORT")
            }
            guard let v6 = Endpoint.parseIPv6(hostText) else {
                throw WireError.malformed("“\(hostText)” is not an IPv6 address")
            }
            self.host = .ipv6(v6)
        } else {
            let colons = text.filter { $0 == ":" }.count
            if colons == 1, let colon = text.lastIndex(of: ":") {
                hostText = text[..<colon]
                portText = text[text.index(after: colon)...]
            } else {
                hostText = text
            }
            if colons > 1, let v6 = Endpoint.parseIPv6(hostText) {
                self.host = .ipv6(v6)
            } else if let v4 = Endpoint.parseIPv4(hostText) {
                self.host = .ipv4(v4)
            } else {
                guard !hostText.isEmpty else { throw WireError.malformed("the address has no host: expected HOST:PORT") }
                guard hostText.utf8.count <= 255, Endpoint.isPlausibleDomain(hostText) else {
                    throw WireError.malformed("“\(hostText.prefix(64))” is not a valid host name or IP address")
                }
                self.host = .domain(String(hostText))
            }
        }
        if let portText {
            guard let port = UInt16(portText), port != 0 else {
                throw WireError.malformed("“\(portText)” is not a port: expected a number from 1 to 65535")
            }
            self.port = port
        } else if let defaultPort {
            self.port = defaultPort
        } else {
            throw WireError.malformed("“\(text)” has no port: expected HOST:PORT")
        }
    }

    public init(parsing text: String, defaultPort: UInt16? = nil) throws {
        try self.init(parsing: text[...], defaultPort: defaultPort)
    }

    /// The host as text, without brackets.
    public var hostText: String {
        switch host {
        case .ipv4(let b): return b.map(String.init).joined(separator: ".")
        case .ipv6(let b): return Endpoint.formatIPv6(b)
        case .domain(let d): return d
        }
    }

    /// `host:port`, with IPv6 in brackets.
    public var description: String {
        if case .ipv6 = host { return "[\(hostText)]:\(port)" }
        return "\(hostText):\(port)"
    }

    // MARK: Binary form

    /// Number of bytes `write(to:)` produces.
    public var encodedLength: Int {
        switch host {
        case .ipv4: return 1 + 4 + 2
        case .ipv6: return 1 + 16 + 2
        case .domain(let d): return 1 + 1 + d.utf8.count + 2
        }
    }

    /// Writes ATYP, address and port.
    @discardableResult
    public func write(to buffer: inout ByteBuffer) -> Int {
        switch host {
        case .ipv4(let b):
            buffer.writeInteger(UInt8(1))
            buffer.writeBytes(b)
        case .ipv6(let b):
            buffer.writeInteger(UInt8(4))
            buffer.writeBytes(b)
        case .domain(let d):
            buffer.writeInteger(UInt8(3))
            buffer.writeInteger(UInt8(truncatingIfNeeded: d.utf8.count))
            buffer.writeString(d)
        }
        buffer.writeInteger(port)
        return encodedLength
    }

    /// Reads ATYP, address and port. Returns nil, with the reader index
    /// unchanged, when the buffer does not yet hold the whole address; throws
    /// on an unknown address type, an empty domain or one that is not UTF-8.
    public static func read(from buffer: inout ByteBuffer) throws -> Endpoint? {
        var copy = buffer
        guard let atyp = copy.readInteger(as: UInt8.self) else { return nil }
        let host: Host
        switch atyp {
        case 1:
            guard let b = copy.readBytes(length: 4) else { return nil }
            host = .ipv4(b)
        case 4:
            guard let b = copy.readBytes(length: 16) else { return nil }
            host = .ipv6(b)
        case 3:
            guard let len = copy.readInteger(as: UInt8.self) else { return nil }
            guard len > 0 else { throw WireError.malformed("the address is a domain name of length zero") }
            guard let bytes = copy.readBytes(length: Int(len)) else { return nil }
            // Decoding with repairs would turn each bad byte into three
            // (U+FFFD), and the name would no longer be the one sent nor fit
            // its length byte when written on.
            guard let name = String(validating: bytes, as: UTF8.self) else {
                throw WireError.malformed("the address is a domain name that is not valid UTF-8")
            }
            host = .domain(name)
        default:
            throw WireError.malformed("unknown address type \(atyp): expected 1 (IPv4), 3 (domain) or 4 (IPv6)")
        }
        guard let port = copy.readInteger(as: UInt16.self) else { return nil }
        buffer = copy
        return Endpoint(host: host, port: port)
    }

    // MARK: Text helpers

    public static func parseIPv4<S: StringProtocol>(_ s: S) -> [UInt8]? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let v = UInt8(p) else { return nil }
            out.append(v)
        }
        return out
    }

    public static func parseIPv6<S: StringProtocol>(_ s: S) -> [UInt8]? {
        var text = Substring(s)
        if let pct = text.firstIndex(of: "%") { text = text[..<pct] } // zone ids are not carried
        guard text.contains(":") else { return nil }
        // Allow a trailing dotted IPv4 part.
        var tailV4: [UInt8] = []
        if let lastColon = text.lastIndex(of: ":"), text[text.index(after: lastColon)...].contains(".") {
            guard let v4 = parseIPv4(text[text.index(after: lastColon)...]) else { return nil }
            tailV4 = v4
            text = text[...lastColon]
            if text.hasSuffix(":") && !text.hasSuffix("::") { text = text.dropLast() }
        }
        var halves: [String] = []
        if let r = text.firstRange(of: "::") {
            let rest = text[r.upperBound...]
            guard rest.firstRange(of: "::") == nil else { return nil }
            halves = [String(text[..<r.lowerBound]), String(rest)]
        } else {
            halves = [String(text)]
        }
        func groups(_ part: String) -> [UInt16]? {
            if part.isEmpty { return [] }
            var result: [UInt16] = []
            for g in part.split(separator: ":", omittingEmptySubsequences: false) {
                guard !g.isEmpty, g.count <= 4, let v = UInt16(g, radix: 16) else { return nil }
                result.append(v)
            }
            return result
        }
        guard let head = groups(halves[0]) else { return nil }
        let tail: [UInt16]
        if halves.count == 2 { guard let t = groups(halves[1]) else { return nil }; tail = t } else { tail = [] }
        let wanted = 8 - tailV4.count / 2
        var all: [UInt16]
        if halves.count == 2 {
            guard head.count + tail.count < wanted else { return nil }
            all = head + Array(repeating: 0, count: wanted - head.count - tail.count) + tail
        } else {
            guard head.count == wanted else { return nil }
            all = head
        }
        var bytes: [UInt8] = []
        for g in all { bytes.append(UInt8(g >> 8)); bytes.append(UInt8(g & 0xff)) }
        return bytes + tailV4
    }

    public static func formatIPv6(_ b: [UInt8]) -> String {
        precondition(b.count == 16)
        var groups: [UInt16] = []
        for i in stride(from: 0, to: 16, by: 2) { groups.append(UInt16(b[i]) << 8 | UInt16(b[i + 1])) }
        // Find the longest run of zero groups (length >= 2) to compress, per RFC 5952.
        var bestStart = -1, bestLen = 0, i = 0
        while i < 8 {
            if groups[i] == 0 {
                var j = i
                while j < 8 && groups[j] == 0 { j += 1 }
                if j - i > bestLen { bestStart = i; bestLen = j - i }
                i = j
            } else { i += 1 }
        }
        func hex(_ r: ArraySlice<UInt16>) -> String { r.map { String($0, radix: 16) }.joined(separator: ":") }
        if bestLen >= 2 {
            return hex(groups[0..<bestStart]) + "::" + hex(groups[(bestStart + bestLen)...])
        }
        return hex(groups[...])
    }

    static func isPlausibleDomain<S: StringProtocol>(_ s: S) -> Bool {
        s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)
                || c == 0x2d || c == 0x2e || c == 0x5f || c >= 0x80
        }
    }
}
