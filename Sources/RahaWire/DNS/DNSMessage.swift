import NIOCore

// DNS messages (RFC 1035 section 4.1) with EDNS0 (RFC 6891), and their TCP
// framing (RFC 1035 section 4.2.2).

/// A response code, twelve bits: four in the header and eight more in the
/// EDNS0 OPT record.
public struct DNSResponseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// The largest code that fits in the header and OPT record together.
    public static let maxRawValue: UInt16 = 0x0FFF

    public static let noError = DNSResponseCode(rawValue: 0)
    public static let formatError = DNSResponseCode(rawValue: 1)
    public static let serverFailure = DNSResponseCode(rawValue: 2)
    public static let nameError = DNSResponseCode(rawValue: 3)
    public static let notImplemented = DNSResponseCode(rawValue: 4)
    public static let refused = DNSResponseCode(rawValue: 5)
    /// BADVERS (RFC 6891): the EDNS version is not supported. Needs an OPT record.
    public static let badVersion = DNSResponseCode(rawValue: 16)

    public var description: String {
        switch self {
        case .noError: return "NOERROR"
        case .formatError: return "FORMERR"
        case .serverFailure: return "SERVFAIL"
        case .nameError: return "NXDOMAIN"
        case .notImplemented: return "NOTIMP"
        case .refused: return "REFUSED"
        case .badVersion: return "BADVERS"
        default: return "RCODE\(rawValue)"
        }
    }
}

/// An entry of the question section.
public struct DNSQuestion: Hashable, Sendable {
    public var name: DNSName
    public var type: DNSRecordType
    public var questionClass: DNSClass

    public init(name: DNSName, type: DNSRecordType, class questionClass: DNSClass = .internet) {
        self.name = name
        self.type = type
        self.questionClass = questionClass
    }
}

/// A DNS message. The EDNS0 OPT record is not kept among `additionals` but in
/// `edns`, and the extended response code bits it carries are part of `rcode`.
public struct DNSMessage: Hashable, Sendable {
    /// Size of the fixed header.
    public static let headerLength = 12
    /// The largest message: TCP's length prefix has sixteen bits.
    public static let maxLength = Int(UInt16.max)
    /// The largest UDP message a peer without EDNS0 accepts.
    public static let classicUDPLimit = 512

    public var id: UInt16
    /// QR: this is a response.
    public var isResponse: Bool
    /// OPCODE, four bits (0 is a standard query).
    public var opcode: UInt8
    /// AA: the answer comes from an authority for the name.
    public var authoritative: Bool
    /// TC: the message was cut to fit UDP; ask again over TCP.
    public var truncated: Bool
    /// RD: the client asks for recursion.
    public var recursionDesired: Bool
    /// RA: the server offers recursion.
    public var recursionAvailable: Bool
    /// AD (RFC 4035): the data was authenticated.
    public var authenticData: Bool
    /// CD (RFC 4035): checking is disabled.
    public var checkingDisabled: Bool
    /// The response code. Values above 15 need `edns` to be written.
    public var rcode: DNSResponseCode
    public var questions: [DNSQuestion]
    public var answers: [DNSRecord]
    public var authorities: [DNSRecord]
    /// Additional records other than OPT.
    public var additionals: [DNSRecord]
    /// The OPT pseudo-record, nil when the message has none.
    public var edns: EDNS?

    public init(id: UInt16, isResponse: Bool = false, opcode: UInt8 = 0, authoritative: Bool = false,
                truncated: Bool = false, recursionDesired: Bool = false, recursionAvailable: Bool = false,
                authenticData: Bool = false, checkingDisabled: Bool = false, rcode: DNSResponseCode = .noError,
                questions: [DNSQuestion] = [], answers: [DNSRecord] = [], authorities: [DNSRecord] = [],
                additionals: [DNSRecord] = [], edns: EDNS? = nil) {
        self.id = id
        self.isResponse = isResponse
        self.opcode = opcode
        self.authoritative = authoritative
        self.truncated = truncated
        self.recursionDesired = recursionDesired
        self.recursionAvailable = recursionAvailable
        self.authenticData = authenticData
        self.checkingDisabled = checkingDisabled
        self.rcode = rcode
        self.questions = questions
        self.answers = answers
        self.authorities = authorities
        self.additionals = additionals
        self.edns = edns
    }

    /// A standard query for one name with RD set, and an OPT record offering
    /// `udpPayloadSize` when one is given.
    public static func query(id: UInt16, name: DNSName, type: DNSRecordType,
                             udpPayloadSize: UInt16? = nil) -> DNSMessage {
        DNSMessage(id: id, recursionDesired: true,
                   questions: [DNSQuestion(name: name, type: type)],
                   edns: udpPayloadSize.map { EDNS(udpPayloadSize: $0) })
    }

    /// An authoritative response to `query`: the same id, opcode, questions
    /// (with their exact letter case), RD and CD, with QR and AA set. It has an
    /// OPT record offering `udpPayloadSize` when the query had one, as
    /// RFC 6891 section 7 asks.
    public static func response(to query: DNSMessage, rcode: DNSResponseCode = .noError,
                                answers: [DNSRecord] = [], authorities: [DNSRecord] = [],
                                udpPayloadSize: UInt16 = EDNS.defaultUDPPayloadSize) -> DNSMessage {
        DNSMessage(id: query.id, isResponse: true, opcode: query.opcode, authoritative: true,
                   recursionDesired: query.recursionDesired, checkingDisabled: query.checkingDisabled,
                   rcode: rcode, questions: query.questions, answers: answers, authorities: authorities,
                   edns: query.edns.map { _ in EDNS(udpPayloadSize: udpPayloadSize) })
    }

    /// The UDP payload size from the OPT record, as written; nil without EDNS0.
    public var edns0PayloadSize: UInt16? { edns?.udpPayloadSize }

    /// The largest UDP message the sender of this message accepts: 512
    /// without EDNS0, and never less than 512 with it (RFC 6891 section 6.2.5).
    public var maxUDPResponseLength: Int {
        max(Self.classicUDPLimit, Int(edns0PayloadSize ?? 0))
    }

    // MARK: Decoding

    /// Parses a whole message. Throws a `WireError` for anything malformed:
    /// truncation anywhere, counts larger than the data, bad compression
    /// pointers, over-long names, rdata that does not fit its length, more
    /// than one OPT record, or bytes left over after the last record.
    public init(parsing bytes: [UInt8]) throws {
        var reader = DNSReader(bytes)
        guard bytes.count >= Self.headerLength else {
            throw WireError.malformed("a DNS message needs a \(Self.headerLength)-byte header; this one has \(bytes.count) bytes")
        }
        let id = try reader.readUInt16("the header")
        let flags = try reader.readUInt16("the header")
        let questionCount = Int(try reader.readUInt16("the header"))
        let answerCount = Int(try reader.readUInt16("the header"))
        let authorityCount = Int(try reader.readUInt16("the header"))
        let additionalCount = Int(try reader.readUInt16("the header"))
        // A question takes at least 5 bytes and a record at least 11.
        let minimum = questionCount * 5 + (answerCount + authorityCount + additionalCount) * 11
        guard minimum <= reader.remaining else {
            throw WireError.malformed("the header counts \(questionCount) questions and \(answerCount + authorityCount + additionalCount) records, which need at least \(minimum) bytes, but only \(reader.remaining) follow")
        }

        self.init(id: id, isResponse: flags & 0x8000 != 0, opcode: UInt8(flags >> 11 & 0xF),
                  authoritative: flags & 0x0400 != 0, truncated: flags & 0x0200 != 0,
                  recursionDesired: flags & 0x0100 != 0, recursionAvailable: flags & 0x0080 != 0,
                  authenticData: flags & 0x0020 != 0, checkingDisabled: flags & 0x0010 != 0,
                  rcode: DNSResponseCode(rawValue: flags & 0xF))

        for _ in 0..<questionCount {
            let name = try DNSName.read(from: &reader)
            let type = DNSRecordType(rawValue: try reader.readUInt16("a question's type"))
            let questionClass = DNSClass(rawValue: try reader.readUInt16("a question's class"))
            questions.append(DNSQuestion(name: name, type: type, class: questionClass))
        }
        answers = try Self.readRecords(answerCount, section: "answer", from: &reader)
        authorities = try Self.readRecords(authorityCount, section: "authority", from: &reader)

        for _ in 0..<additionalCount {
            let start = reader.offset
            let header = try Self.readRecordHeader(from: &reader)
            let end = reader.offset + header.length
            guard header.type == .opt else {
                let data = try DNSRecordData.read(type: header.type, from: &reader, end: end)
                additionals.append(DNSRecord(name: header.name, class: header.recordClass, ttl: header.ttl, data: data))
                continue
            }
            guard edns == nil else {
                throw WireError.malformed("the message has a second OPT record at offset \(start); RFC 6891 allows one")
            }
            guard header.name == .root else {
                throw WireError.malformed("the OPT record at offset \(start) is owned by \(header.name) instead of the root")
            }
            let options = try EDNS.readOptions(from: &reader, end: end)
            rcode.rawValue |= UInt16(header.ttl >> 24) << 4
            edns = EDNS(udpPayloadSize: header.recordClass.rawValue, version: UInt8(truncatingIfNeeded: header.ttl >> 16),
                        dnssecOK: header.ttl & 0x8000 != 0, otherFlags: UInt16(truncatingIfNeeded: header.ttl),
                        options: options)
        }
        guard reader.remaining == 0 else {
            throw WireError.malformed("\(reader.remaining) bytes follow the last record of the message")
        }
    }

    /// Parses a whole message from the readable bytes of `buffer`.
    public init(parsing buffer: ByteBuffer) throws {
        try self.init(parsing: Array(buffer.readableBytesView))
    }

    private struct RecordHeader {
        var name: DNSName
        var type: DNSRecordType
        var recordClass: DNSClass
        var ttl: UInt32
        var length: Int
    }

    /// Reads a record's name, type, class, TTL and RDLENGTH, and checks that
    /// the rdata fits in the message.
    private static func readRecordHeader(from reader: inout DNSReader) throws -> RecordHeader {
        let start = reader.offset
        let name = try DNSName.read(from: &reader)
        let type = DNSRecordType(rawValue: try reader.readUInt16("a record's type"))
        let recordClass = DNSClass(rawValue: try reader.readUInt16("a record's class"))
        let ttl = try reader.readUInt32("a record's TTL")
        let length = Int(try reader.readUInt16("a record's rdata length"))
        guard length <= reader.remaining else {
            throw WireError.malformed("the \(type) record at offset \(start) declares \(length) bytes of rdata, but only \(reader.remaining) remain in the message")
        }
        return RecordHeader(name: name, type: type, recordClass: recordClass, ttl: ttl, length: length)
    }

    private static func readRecords(_ count: Int, section: String, from reader: inout DNSReader) throws -> [DNSRecord] {
        var records: [DNSRecord] = []
        for _ in 0..<count {
            let start = reader.offset
            let header = try readRecordHeader(from: &reader)
            guard header.type != .opt else {
                throw WireError.malformed("an OPT record at offset \(start) is in the \(section) section; it belongs in the additional section")
            }
            let data = try DNSRecordData.read(type: header.type, from: &reader, end: reader.offset + header.length)
            records.append(DNSRecord(name: header.name, class: header.recordClass, ttl: header.ttl, data: data))
        }
        return records
    }

    // MARK: Encoding

    /// The message in wire form, with names compressed unless `compress` is
    /// false. Throws when a field does not fit: an opcode above 15, an rcode
    /// above 15 without `edns` or above 4095, a section of more than 65535
    /// entries, rdata over 65535 bytes, a bad address or TXT string length,
    /// or an OPT record placed among the ordinary records.
    public func serialize(compress: Bool = true) throws -> [UInt8] {
        guard opcode <= 0xF else {
            throw WireError.malformed("the opcode \(opcode) does not fit in four bits")
        }
        guard rcode.rawValue <= DNSResponseCode.maxRawValue else {
            throw WireError.malformed("the response code \(rcode.rawValue) does not fit in twelve bits")
        }
        guard rcode.rawValue <= 0xF || edns != nil else {
            throw WireError.malformed("the response code \(rcode) needs an EDNS0 OPT record to carry its high bits; set edns")
        }
        let additionalCount = additionals.count + (edns == nil ? 0 : 1)
        for (count, section) in [(questions.count, "question"), (answers.count, "answer"),
                                 (authorities.count, "authority"), (additionalCount, "additional")]
        where count > Int(UInt16.max) {
            throw WireError.tooLarge("the \(section) section has \(count) entries; a message may have at most 65535 in each")
        }

        var writer = DNSWriter(compress: compress)
        writer.write(id)
        var flags = UInt16(opcode) << 11 | rcode.rawValue & 0xF
        for (bit, isSet) in [(UInt16(0x8000), isResponse), (0x0400, authoritative), (0x0200, truncated),
                             (0x0100, recursionDesired), (0x0080, recursionAvailable),
                             (0x0020, authenticData), (0x0010, checkingDisabled)] where isSet {
            flags |= bit
        }
        writer.write(flags)
        for count in [questions.count, answers.count, authorities.count, additionalCount] {
            writer.write(UInt16(count))
        }
        for question in questions {
            writer.write(question.name)
            writer.write(question.type.rawValue)
            writer.write(question.questionClass.rawValue)
        }
        for record in answers + authorities + additionals {
            guard record.type != .opt else {
                throw WireError.malformed("an OPT record is among the ordinary records; put EDNS0 data in DNSMessage.edns")
            }
            try Self.writeRecord(name: record.name, type: record.type, classValue: record.recordClass.rawValue,
                                 ttl: record.ttl, to: &writer) { try record.data.write(to: &$0) }
        }
        if let edns {
            let ttl = UInt32(rcode.rawValue >> 4) << 24 | UInt32(edns.version) << 16
                | (edns.dnssecOK ? 0x8000 : 0) | UInt32(edns.otherFlags & 0x7FFF)
            try Self.writeRecord(name: .root, type: .opt, classValue: edns.udpPayloadSize, ttl: ttl, to: &writer) {
                try edns.writeOptions(to: &$0)
            }
        }
        return writer.bytes
    }

    private static func writeRecord(name: DNSName, type: DNSRecordType, classValue: UInt16, ttl: UInt32,
                                    to writer: inout DNSWriter,
                                    rdata: (inout DNSWriter) throws -> Void) throws {
        writer.write(name)
        writer.write(type.rawValue)
        writer.write(classValue)
        writer.write(ttl)
        let lengthOffset = writer.bytes.count
        writer.write(UInt16(0))
        try rdata(&writer)
        let length = writer.bytes.count - lengthOffset - 2
        guard length <= Int(UInt16.max) else {
            throw WireError.tooLarge("a \(type) record has \(length) bytes of rdata; at most 65535 fit")
        }
        writer.bytes[lengthOffset] = UInt8(length >> 8)
        writer.bytes[lengthOffset + 1] = UInt8(length & 0xFF)
    }

    /// The message with the two-byte length prefix used over TCP (RFC 1035
    /// section 4.2.2). Throws when the message is longer than 65535 bytes.
    public func serializeForTCP(compress: Bool = true) throws -> [UInt8] {
        let message = try serialize(compress: compress)
        guard message.count <= Self.maxLength else {
            throw WireError.tooLarge("the message is \(message.count) bytes; over TCP it may be at most \(Self.maxLength)")
        }
        return [UInt8(message.count >> 8), UInt8(message.count & 0xFF)] + message
    }
}

/// Cuts DNS messages out of a TCP byte stream, each preceded by its two-byte
/// length (RFC 1035 section 4.2.2), however the stream was split.
///
/// It holds the bytes appended and not yet taken; a caller that takes every
/// complete message after each append holds at most one partial message,
/// 65,537 bytes, plus the last append.
public struct DNSTCPFramer: Sendable {
    private var buffer = ByteBuffer()

    public init() {}

    /// Bytes received and not yet returned as messages.
    public var bufferedByteCount: Int { buffer.readableBytes }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        buffer.writeBytes(bytes)
    }

    public mutating func append(_ bytes: ByteBuffer) {
        var bytes = bytes
        buffer.writeBuffer(&bytes)
    }

    /// The next whole message's bytes without the length prefix, or nil while
    /// the buffer does not hold one.
    public mutating func nextMessageBytes() -> [UInt8]? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
              buffer.readableBytes >= 2 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 2)
        let message = buffer.readBytes(length: Int(length))
        if buffer.readerIndex > 65_536 { buffer.discardReadBytes() }
        return message
    }

    /// The next whole message, parsed; nil while the buffer does not hold one.
    /// A message that does not parse is consumed and its error thrown, so the
    /// stream can go on with the next one.
    public mutating func nextMessage() throws -> DNSMessage? {
        guard let bytes = nextMessageBytes() else { return nil }
        return try DNSMessage(parsing: bytes)
    }
}
