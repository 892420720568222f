/// One IMAP server response (RFC 9051 section 7, the subset a mail client
/// that reads one mailbox needs), with its literals already read.
public struct IMAPResponse: Hashable, Sendable {
    public enum Kind: Hashable, Sendable {
        /// "* …": data, or an untagged status (OK, NO, BAD, BYE, PREAUTH).
        case untagged
        /// "+ …": the server waits for more of the command (a literal, IDLE).
        case continuation
        /// "TAG …": the completion of the command with that tag.
        case tagged(String)
    }

    public enum Status: String, Hashable, Sendable {
        case ok = "OK", no = "NO", bad = "BAD", bye = "BYE", preauth = "PREAUTH"
    }

    public var kind: Kind
    /// For status responses (every tagged one, and untagged OK/NO/BAD/BYE/PREAUTH).
    public var status: Status?
    /// A status response's code in brackets, as values: `[UIDVALIDITY 3]` is [.atom("UIDVALIDITY"), .number(3)].
    public var code: [IMAPValue]
    /// A status response's or continuation's human-readable text.
    public var text: String
    /// For data responses: the values after "*", e.g. [.number(4), .atom("EXISTS")]
    /// or [.number(1), .atom("FETCH"), .list([...])].
    public var data: [IMAPValue]

    public init(kind: Kind, status: Status? = nil, code: [IMAPValue] = [], text: String = "", data: [IMAPValue] = []) {
        self.kind = kind
        self.status = status
        self.code = code
        self.text = text
        self.data = data
    }

    /// "NO [AUTHENTICATIONFAILED] Authentication failed." and the like, for messages.
    public var summary: String {
        var parts: [String] = []
        if let status { parts.append(status.rawValue) }
        if !code.isEmpty { parts.append("[" + code.map(\.description).joined(separator: " ") + "]") }
        if !text.isEmpty { parts.append(text) }
        if parts.isEmpty { parts = data.map(\.description) }
        return MailError.excerpt(Array(parts.joined(separator: " ").utf8))
    }
}

/// A value in an IMAP response: atoms (including FETCH item names such as
/// `BODY[]`), numbers, strings (quoted or literal, as bytes), NIL and lists.
public indirect enum IMAPValue: Hashable, Sendable, CustomStringConvertible {
    case atom(String)
    case number(UInt64)
    case string([UInt8])
    case nil_
    case list([IMAPValue])

    public var description: String {
        switch self {
        case .atom(let atom): atom
        case .number(let number): String(number)
        case .string(let bytes): "\"" + MailError.excerpt(bytes) + "\""
        case .nil_: "NIL"
        case .list(let values): "(" + values.map(\.description).joined(separator: " ") + ")"
        }
    }

    /// The atom, uppercased; nil for other values.
    public var keyword: String? {
        if case .atom(let atom) = self { return atom.uppercased() }
        return nil
    }

    public var number: UInt64? {
        if case .number(let number) = self { return number }
        return nil
    }

    /// The bytes of a string, or of an atom or number written as text.
    public var bytes: [UInt8]? {
        switch self {
        case .string(let bytes): bytes
        case .atom(let atom): Array(atom.utf8)
        case .number(let number): Array(String(number).utf8)
        case .nil_, .list: nil
        }
    }
}

/// Splits a server's bytes into responses, reading literals ("{n}" and then
/// n bytes) wherever they occur. Pure and incremental.
public struct IMAPResponseParser: Sendable {
    /// The longest line (outside literals) accepted.
    public static let maximumLineLength = 65_536
    /// The largest literal accepted: a whole message of up to 64 MiB.
    public static let maximumLiteral = 64 << 20

    private var buffer: [UInt8] = []
    /// Where to look for the end of the response being assembled.
    private var scanFrom = 0

    public init() {}

    public mutating func feed(_ bytes: some Sequence<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    /// The next whole response, nil when more bytes are needed. Throws
    /// `MailError.protocolViolation` for what does not parse.
    public mutating func next() throws -> IMAPResponse? {
        // Find the end: a CRLF not preceded by a literal announcement.
        var position = scanFrom
        while true {
            guard let lf = buffer[position...].firstIndex(of: 0x0A) else {
                guard buffer.count - position <= Self.maximumLineLength else {
                    throw MailError.protocolViolation("the IMAP server sent a line of more than \(Self.maximumLineLength) bytes")
                }
                scanFrom = position
                return nil
            }
            guard let literal = try Self.literalLength(endingAt: lf, in: buffer, lineStart: position) else {
                let response = Array(buffer[..<(lf + 1)])
                buffer.removeSubrange(...lf)
                scanFrom = 0
                var cursor = IMAPCursor(response)
                return try cursor.response()
            }
            guard buffer.count > lf + literal else {
                scanFrom = position
                return nil
            }
            position = lf + 1 + literal
        }
    }

    /// n when the line before `lf` ends with "{n}" or "{n+}".
    static func literalLength(endingAt lf: Int, in buffer: [UInt8], lineStart: Int) throws -> Int? {
        var end = lf
        if end > lineStart, buffer[end - 1] == 0x0D { end -= 1 }
        guard end > lineStart, buffer[end - 1] == 0x7D else { return nil }
        var index = end - 2
        if index >= lineStart, buffer[index] == 0x2B { index -= 1 }
        var digits = 0
        var value = 0
        while index >= lineStart, (0x30...0x39).contains(buffer[index]) {
            guard digits < 10 else { throw MailError.protocolViolation("the IMAP server announced a literal too large to read") }
            value += Int(buffer[index] - 0x30) * Int(pow10(digits))
            digits += 1
            index -= 1
        }
        guard digits > 0, index >= lineStart, buffer[index] == 0x7B else { return nil }
        guard value <= maximumLiteral else {
            throw MailError.protocolViolation("the IMAP server announced a literal of \(value) bytes, more than the \(maximumLiteral) Raha reads")
        }
        return value
    }

    private static func pow10(_ n: Int) -> Int {
        (0..<n).reduce(1) { value, _ in value * 10 }
    }
}

/// Reads one whole response (literals inline).
struct IMAPCursor {
    private let bytes: [UInt8]
    private var index = 0

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    mutating func response() throws -> IMAPResponse {
        let first = try word()
        try expect(0x20, orEnd: first == "+")
        if first == "+" {
            return IMAPResponse(kind: .continuation, text: restOfLine())
        }
        if first == "*" {
            let start = index
            let head = try word()
            if let status = IMAPResponse.Status(rawValue: head.uppercased()) {
                return try statusResponse(.untagged, status)
            }
            index = start
            return IMAPResponse(kind: .untagged, data: try values(until: nil))
        }
        guard first.utf8.allSatisfy(Self.isAtomCharacter) else { throw violation("a response that starts with neither *, + nor a tag") }
        guard let status = IMAPResponse.Status(rawValue: try word().uppercased()), status != .preauth else {
            throw violation("a tagged response without OK, NO, BAD or BYE")
        }
        return try statusResponse(.tagged(first), status)
    }

    private mutating func statusResponse(_ kind: IMAPResponse.Kind, _ status: IMAPResponse.Status) throws -> IMAPResponse {
        var code: [IMAPValue] = []
        if peek() == 0x20 { index += 1 }
        if peek() == 0x5B {
            index += 1
            code = try values(until: 0x5D)
            if peek() == 0x20 { index += 1 }
        }
        return IMAPResponse(kind: kind, status: status, code: code, text: restOfLine())
    }

    /// Values separated by spaces, up to `close` (consumed) or the line end.
    private mutating func values(until close: UInt8?) throws -> [IMAPValue] {
        var out: [IMAPValue] = []
        while true {
            guard let byte = peek() else { throw violation("a response cut short") }
            if let close, byte == close {
                index += 1
                return out
            }
            if byte == 0x0D || byte == 0x0A {
                guard close == nil else { throw violation("a list that is not closed") }
                return out
            }
            if byte == 0x20 {
                index += 1
                continue
            }
            out.append(try value())
            guard out.count <= 100_000 else { throw violation("a response with too many values") }
        }
    }

    private mutating func value() throws -> IMAPValue {
        guard let byte = peek() else { throw violation("a response cut short") }
        switch byte {
        case 0x28:
            index += 1
            return .list(try values(until: 0x29))
        case 0x22:
            return .string(try quoted())
        case 0x7B:
            return .string(try literal())
        default:
            let atom = try atomWithSections()
            if atom.uppercased() == "NIL" { return .nil_ }
            if let number = UInt64(atom), atom.utf8.allSatisfy({ (0x30...0x39).contains($0) }) { return .number(number) }
            return .atom(atom)
        }
    }

    /// An atom that may carry a section and partial: BODY[HEADER.FIELDS (SUBJECT)]<0>.
    private mutating func atomWithSections() throws -> String {
        let start = index
        var depth = 0
        while let byte = peek() {
            if byte == 0x5B { depth += 1 } else if byte == 0x5D {
                guard depth > 0 else { break }
                depth -= 1
            } else if depth == 0 && !(Self.isAtomCharacter(byte) || byte == 0x5C || byte == 0x3C || byte == 0x3E) {
                break
            } else if depth > 0 && (byte == 0x0D || byte == 0x0A) {
                break
            }
            index += 1
        }
        guard index > start else { throw violation("an unexpected \"\(Character(UnicodeScalar(bytes[index])))\"") }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private mutating func quoted() throws -> [UInt8] {
        index += 1
        var out: [UInt8] = []
        while let byte = peek() {
            index += 1
            switch byte {
            case 0x22: return out
            case 0x5C:
                guard let escaped = peek() else { break }
                out.append(escaped)
                index += 1
            case 0x0D, 0x0A: throw violation("a quoted string that is not closed")
            default: out.append(byte)
            }
        }
        throw violation("a quoted string that is not closed")
    }

    private mutating func literal() throws -> [UInt8] {
        index += 1
        let start = index
        while let byte = peek(), (0x30...0x39).contains(byte) { index += 1 }
        guard index > start, let length = Int(String(decoding: bytes[start..<index], as: UTF8.self)) else { throw violation("a bad literal") }
        if peek() == 0x2B { index += 1 }
        guard peek() == 0x7D else { throw violation("a bad literal") }
        index += 1
        if peek() == 0x0D { index += 1 }
        guard peek() == 0x0A, index + 1 + length <= bytes.count else { throw violation("a bad literal") }
        index += 1
        defer { index += length }
        return Array(bytes[index..<(index + length)])
    }

    private mutating func word() throws -> String {
        let start = index
        while let byte = peek(), byte != 0x20, byte != 0x0D, byte != 0x0A { index += 1 }
        guard index > start else { throw violation("an empty response") }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private mutating func expect(_ byte: UInt8, orEnd: Bool) throws {
        if peek() == byte {
            index += 1
        } else if !(orEnd && (peek() == 0x0D || peek() == 0x0A)) {
            throw violation("a response with a missing space")
        }
    }

    private mutating func restOfLine() -> String {
        let start = index
        while let byte = peek(), byte != 0x0D, byte != 0x0A { index += 1 }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private func peek() -> UInt8? {
        index < bytes.count ? bytes[index] : nil
    }

    private func violation(_ what: String) -> MailError {
        MailError.protocolViolation("the IMAP server sent \(what): \"\(MailError.excerpt(bytes.prefix(80)))\"")
    }

    /// Printable ASCII but the specials that end an atom: ( ) { " \ ] (list
    /// wildcards % and * are kept, as LIST and flag lists use them).
    static func isAtomCharacter(_ byte: UInt8) -> Bool {
        guard byte > 0x20, byte < 0x7F else { return false }
        switch byte {
        case 0x28, 0x29, 0x7B, 0x22, 0x5C, 0x5D: return false
        default: return true
        }
    }
}
