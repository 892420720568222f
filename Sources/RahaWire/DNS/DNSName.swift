// Domain names (RFC 1035 sections 2.3.4, 3.1 and 4.1.4).
//
// A name is a list of labels, each 1...63 bytes, whose wire form (a length
// byte before each label and a zero byte for the root) is at most 255 bytes.
// Labels keep the exact bytes they were made from, so a server can echo the
// letter case a resolver chose (0x20 randomisation); comparison ignores ASCII
// case, as RFC 4343 asks.

/// A fully qualified domain name: its labels from the leftmost to the one just
/// below the root. Equality and hashing ignore ASCII letter case; `labels`
/// keeps the bytes exactly as given or received.
public struct DNSName: Hashable, Sendable, CustomStringConvertible {
    /// Longest label in bytes.
    public static let maxLabelLength = 63
    /// Longest name in wire form, length bytes and the final zero included.
    public static let maxWireLength = 255

    /// The root name, ".".
    public static let root = DNSName(validated: [])

    /// The labels, leftmost first; the root is the empty list.
    public private(set) var labels: [[UInt8]]

    private init(validated labels: [[UInt8]]) { self.labels = labels }

    /// Makes a name from labels, leftmost first. Throws when a label is empty
    /// or longer than 63 bytes, or the whole name is longer than 255 bytes in
    /// wire form.
    public init(labels: [[UInt8]]) throws {
        try DNSName.validate(labels)
        self.labels = labels
    }

    /// Parses presentation form: "www.example.com." or "www.example.com" (both
    /// fully qualified), "." or "" for the root. `\.` and `\\` stand for a dot
    /// and a backslash inside a label, `\DDD` for the byte with that decimal value.
    public init(_ text: String) throws {
        if text == "." || text.isEmpty {
            self = .root
            return
        }
        var labels: [[UInt8]] = []
        var label: [UInt8] = []
        let bytes = Array(text.utf8)
        var i = 0
        var endedWithDot = false
        while i < bytes.count {
            let byte = bytes[i]
            endedWithDot = false
            switch byte {
            case UInt8(ascii: "."):
                guard !label.isEmpty else {
                    throw WireError.malformed("the domain name \"\(DNSName.excerpt(text))\" has an empty label: two dots in a row or a leading dot")
                }
                labels.append(label)
                label = []
                endedWithDot = true
                i += 1
            case UInt8(ascii: "\\"):
                guard i + 1 < bytes.count else {
                    throw WireError.malformed("the domain name \"\(DNSName.excerpt(text))\" ends with a lone backslash")
                }
                if let value = DNSName.decimalEscape(bytes, at: i + 1) {
                    label.append(value)
                    i += 4
                } else if DNSName.isDigit(bytes[i + 1]) {
                    throw WireError.malformed("the domain name \"\(DNSName.excerpt(text))\" has a bad \\DDD escape: expected three decimal digits for a value up to 255")
                } else {
                    label.append(bytes[i + 1])
                    i += 2
                }
            default:
                label.append(byte)
                i += 1
            }
        }
        if !endedWithDot { labels.append(label) }
        try self.init(labels: labels)
    }

    /// The name as people write it, without the final dot: "www.example.com".
    public var displayText: String {
        labels.isEmpty ? "." : String(description.dropLast())
    }

    /// The name in presentation form with its final dot, "www.example.com.".
    public var description: String {
        if labels.isEmpty { return "." }
        var out = ""
        for label in labels {
            for byte in label {
                switch byte {
                case UInt8(ascii: "."), UInt8(ascii: "\\"):
                    out.append("\\")
                    out.append(Character(Unicode.Scalar(byte)))
                case 0x21...0x7E:
                    out.append(Character(Unicode.Scalar(byte)))
                default:
                    let digits = String(byte)
                    out.append("\\" + String(repeating: "0", count: 3 - digits.count) + digits)
                }
            }
            out.append(".")
        }
        return out
    }

    /// Length of the name in uncompressed wire form.
    public var wireLength: Int { labels.reduce(1) { $0 + 1 + $1.count } }

    /// True when this name is `zone` or lies below it, ignoring ASCII case.
    public func isSubdomain(of zone: DNSName) -> Bool {
        labels(relativeTo: zone) != nil
    }

    /// The labels in front of `zone`, leftmost first, exactly as they are in
    /// this name: `a.B.example.` relative to `EXAMPLE.` is `["a", "B"]`, and a
    /// name relative to itself is `[]`. Nil when this name is not under `zone`.
    public func labels(relativeTo zone: DNSName) -> [[UInt8]]? {
        let prefixCount = labels.count - zone.labels.count
        guard prefixCount >= 0 else { return nil }
        for (mine, theirs) in zip(labels[prefixCount...], zone.labels) where !DNSName.labelsEqual(mine, theirs) {
            return nil
        }
        return Array(labels[..<prefixCount])
    }

    /// This name with `prefix` put in front: `["a", "b"]` before `example.`
    /// is `a.b.example.`. Throws when the result is not a valid name.
    public func prepending(_ prefix: [[UInt8]]) throws -> DNSName {
        try DNSName(labels: prefix + labels)
    }

    public static func == (lhs: DNSName, rhs: DNSName) -> Bool {
        lhs.labels.count == rhs.labels.count && zip(lhs.labels, rhs.labels).allSatisfy(labelsEqual)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(labels.count)
        for label in labels {
            hasher.combine(label.count)
            for byte in label { hasher.combine(DNSName.lowercased(byte)) }
        }
    }

    // MARK: Helpers

    static func validate(_ labels: [[UInt8]]) throws {
        var wireLength = 1
        for label in labels {
            guard !label.isEmpty else {
                throw WireError.malformed("a domain name has an empty label; only the root may be empty")
            }
            guard label.count <= maxLabelLength else {
                throw WireError.tooLarge("a domain name label is \(label.count) bytes long; labels may be at most \(maxLabelLength) bytes")
            }
            wireLength += 1 + label.count
        }
        guard wireLength <= maxWireLength else {
            throw WireError.tooLarge("a domain name is \(wireLength) bytes long in wire form; names may be at most \(maxWireLength) bytes (253 characters of text)")
        }
    }

    static func lowercased(_ byte: UInt8) -> UInt8 {
        (0x41...0x5A).contains(byte) ? byte | 0x20 : byte
    }

    static func labelsEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { lowercased($0) == lowercased($1) }
    }

    private static func isDigit(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) }

    private static func decimalEscape(_ bytes: [UInt8], at start: Int) -> UInt8? {
        guard start + 3 <= bytes.count else { return nil }
        var value = 0
        for byte in bytes[start..<start + 3] {
            guard isDigit(byte) else { return nil }
            value = value * 10 + Int(byte - 0x30)
        }
        return value <= 255 ? UInt8(value) : nil
    }

    private static func excerpt(_ text: String) -> String {
        let scalars = text.unicodeScalars.prefix(40).map { $0.isASCII && $0.value >= 0x20 && $0 != "\"" ? Character($0) : "?" }
        return String(scalars) + (text.unicodeScalars.count > 40 ? "…" : "")
    }
}

// MARK: - Wire form

extension DNSName {
    /// Reads a possibly compressed name at `reader.offset`, leaving the offset
    /// just after the name's bytes at that place (after the first pointer, if
    /// any). Every pointer must point before the labels it continues, so
    /// following pointers always moves backwards and cannot loop.
    static func read(from reader: inout DNSReader) throws -> DNSName {
        let bytes = reader.bytes
        var labels: [[UInt8]] = []
        var wireLength = 1
        var position = reader.offset
        var segmentStart = position
        var resumeOffset: Int?
        while true {
            guard position < bytes.count else {
                throw WireError.malformed("a domain name at offset \(reader.offset) runs past the end of the \(bytes.count)-byte message")
            }
            let length = Int(bytes[position])
            switch length & 0xC0 {
            case 0x00:
                if length == 0 {
                    reader.offset = resumeOffset ?? position + 1
                    return DNSName(validated: labels)
                }
                wireLength += 1 + length
                guard wireLength <= maxWireLength else {
                    throw WireError.tooLarge("a domain name at offset \(reader.offset) is longer than \(maxWireLength) bytes in wire form")
                }
                guard position + 1 + length <= bytes.count else {
                    throw WireError.malformed("a \(length)-byte label at offset \(position) runs past the end of the \(bytes.count)-byte message")
                }
                labels.append(Array(bytes[position + 1..<position + 1 + length]))
                position += 1 + length
            case 0xC0:
                guard position + 1 < bytes.count else {
                    throw WireError.malformed("a compression pointer at offset \(position) is cut off by the end of the message")
                }
                let target = (length & 0x3F) << 8 | Int(bytes[position + 1])
                guard target < bytes.count else {
                    throw WireError.malformed("a compression pointer at offset \(position) points to offset \(target), past the end of the \(bytes.count)-byte message")
                }
                guard target < segmentStart else {
                    throw WireError.malformed("a compression pointer at offset \(position) points to offset \(target), which is not before the name it continues (a pointer loop or forward pointer)")
                }
                if resumeOffset == nil { resumeOffset = position + 2 }
                position = target
                segmentStart = target
            default:
                throw WireError.unsupported("a domain name at offset \(position) uses label type 0x\(String(length & 0xC0, radix: 16)), which is not supported (only plain labels and compression pointers are)")
            }
        }
    }
}

/// A bounds-checked cursor over a whole DNS message. Names need the whole
/// message to follow compression pointers, so every read is by offset into it.
struct DNSReader {
    let bytes: [UInt8]
    var offset: Int = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    mutating func readBytes(_ count: Int, _ what: @autoclosure () -> String) throws -> [UInt8] {
        guard count <= remaining else {
            throw WireError.malformed("the message ends inside \(what()): \(count) bytes needed at offset \(offset), \(remaining) left")
        }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    mutating func readUInt8(_ what: @autoclosure () -> String) throws -> UInt8 {
        try readBytes(1, what())[0]
    }

    mutating func readUInt16(_ what: @autoclosure () -> String) throws -> UInt16 {
        let b = try readBytes(2, what())
        return UInt16(b[0]) << 8 | UInt16(b[1])
    }

    mutating func readUInt32(_ what: @autoclosure () -> String) throws -> UInt32 {
        let b = try readBytes(4, what())
        return b.reduce(0) { $0 << 8 | UInt32($1) }
    }
}

/// Builds a DNS message, compressing names against the ones already written.
/// Compression matches exact bytes, not case-folded ones, so every name reads
/// back with the letter case it was written with.
struct DNSWriter {
    var bytes: [UInt8] = []
    let compress: Bool
    private var suffixOffsets: [ArraySlice<[UInt8]>: Int] = [:]

    init(compress: Bool) { self.compress = compress }

    mutating func write(_ value: UInt8) { bytes.append(value) }

    mutating func write(_ value: UInt16) {
        bytes.append(UInt8(value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    mutating func write(_ value: UInt32) {
        write(UInt16(value >> 16))
        write(UInt16(truncatingIfNeeded: value))
    }

    mutating func write(_ name: DNSName, compressible: Bool = true) {
        let labels = name.labels
        for index in labels.indices {
            let suffix = labels[index...]
            if compress, compressible, let target = suffixOffsets[suffix] {
                write(UInt16(0xC000 | target))
                return
            }
            if compress, compressible, bytes.count < 0x4000 {
                suffixOffsets[suffix] = bytes.count
            }
            bytes.append(UInt8(labels[index].count))
            bytes.append(contentsOf: labels[index])
        }
        bytes.append(0)
    }
}
