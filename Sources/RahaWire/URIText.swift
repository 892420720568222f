/// Text helpers shared by the access-key formats (ss://, trojan://):
/// RFC 3986 percent-encoding and decoding, and whitespace trimming.
enum URIText {
    static func isUnreserved(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
            || c == UInt8(ascii: "-") || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "~")
    }

    /// Percent-encodes every byte but RFC 3986 unreserved characters (and those `keeping` allows).
    static func percentEncode(_ bytes: [UInt8], keeping: (UInt8) -> Bool = { _ in false }) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        for b in bytes {
            if isUnreserved(b) || (keeping(b) && b != UInt8(ascii: "%")) {
                out.append(b)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0xF)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes %XX escapes; a '%' not followed by two hex digits stays as it is.
    static func percentDecode(_ text: Substring, plusIsSpace: Bool) -> [UInt8] {
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "%"), i + 2 < bytes.count, let hi = hexValue(bytes[i + 1]), let lo = hexValue(bytes[i + 2]) {
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(plusIsSpace && b == UInt8(ascii: "+") ? UInt8(ascii: " ") : b)
                i += 1
            }
        }
        return out
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }

    /// An access-key URI after its scheme, taken apart: the part before `?`,
    /// the query (empty when there is none) and the #fragment, percent-decoded
    /// (nil when empty). The fragment starts at the first '#' and the query at
    /// the first '?' before it; no access key's host, user info or base64
    /// contains either.
    static func splitAfterScheme(_ rest: Substring) -> (body: Substring, query: Substring?, tag: String?) {
        var body = rest
        var tag: String?
        if let hash = body.firstIndex(of: "#") {
            let fragment = body[body.index(after: hash)...]
            body = body[..<hash]
            if !fragment.isEmpty { tag = String(decoding: percentDecode(fragment, plusIsSpace: false), as: UTF8.self) }
        }
        var query: Substring?
        if let question = body.firstIndex(of: "?") {
            query = body[body.index(after: question)...]
            body = body[..<question]
        }
        return (body, query, tag)
    }

    static func trimmingWhitespace(_ text: String) -> Substring {
        var s = Substring(text)
        while let first = s.first, first.isWhitespace { s = s.dropFirst() }
        while let last = s.last, last.isWhitespace { s = s.dropLast() }
        return s
    }
}

extension String {
    /// The string if `bytes` are valid UTF-8, else nil.
    init?(validatingUTF8Bytes bytes: [UInt8]) {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        var scalars = String.UnicodeScalarView()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar): scalars.append(scalar)
            case .emptyInput: self = String(scalars); return
            case .error: return nil
            }
        }
    }
}

/// Base64 (RFC 4648) in both alphabets, without Foundation.
