// Resource records (RFC 1035 section 3.2 and 4.1.3, RFC 3596 for AAAA) and
// the EDNS0 OPT pseudo-record (RFC 6891).

/// A record TYPE or question QTYPE.
public struct DNSRecordType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let a = DNSRecordType(rawValue: 1)
    public static let ns = DNSRecordType(rawValue: 2)
    public static let cname = DNSRecordType(rawValue: 5)
    public static let soa = DNSRecordType(rawValue: 6)
    public static let txt = DNSRecordType(rawValue: 16)
    public static let aaaa = DNSRecordType(rawValue: 28)
    public static let opt = DNSRecordType(rawValue: 41)
    public static let any = DNSRecordType(rawValue: 255)

    public var description: String {
        switch self {
        case .a: return "A"
        case .ns: return "NS"
        case .cname: return "CNAME"
        case .soa: return "SOA"
        case .txt: return "TXT"
        case .aaaa: return "AAAA"
        case .opt: return "OPT"
        case .any: return "ANY"
        default: return "TYPE\(rawValue)"
        }
    }
}

/// A record CLASS or question QCLASS.
public struct DNSClass: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let internet = DNSClass(rawValue: 1)
    public static let chaos = DNSClass(rawValue: 3)
    public static let any = DNSClass(rawValue: 255)

    public var description: String {
        switch self {
        case .internet: return "IN"
        case .chaos: return "CH"
        case .any: return "ANY"
        default: return "CLASS\(rawValue)"
        }
    }
}

/// The SOA record's fields (RFC 1035 section 3.3.13).
public struct DNSSOA: Hashable, Sendable {
    public var primaryServer: DNSName
    public var responsibleMailbox: DNSName
    public var serial: UInt32
    public var refresh: UInt32
    public var retry: UInt32
    public var expire: UInt32
    /// The TTL for negative answers (RFC 2308).
    public var minimum: UInt32

    public init(primaryServer: DNSName, responsibleMailbox: DNSName, serial: UInt32,
                refresh: UInt32, retry: UInt32, expire: UInt32, minimum: UInt32) {
        self.primaryServer = primaryServer
        self.responsibleMailbox = responsibleMailbox
        self.serial = serial
        self.refresh = refresh
        self.retry = retry
        self.expire = expire
        self.minimum = minimum
    }
}

/// The data of a record, decoded for the types this codec knows.
///
/// Parsing always decodes a known type into its own case, so `.other` only
/// carries unknown types there. Building `.other` with a known type writes its
/// bytes as they are; reading them back then gives the typed case.
public enum DNSRecordData: Hashable, Sendable {
    /// Four address bytes.
    case a([UInt8])
    /// Sixteen address bytes.
    case aaaa([UInt8])
    case ns(DNSName)
    case cname(DNSName)
    case soa(DNSSOA)
    /// The character-strings, each at most 255 bytes. See `DNSTXT` to split
    /// and join longer data.
    case txt([[UInt8]])
    /// Any other type, with its rdata bytes.
    case other(DNSRecordType, [UInt8])

    public var type: DNSRecordType {
        switch self {
        case .a: return .a
        case .aaaa: return .aaaa
        case .ns: return .ns
        case .cname: return .cname
        case .soa: return .soa
        case .txt: return .txt
        case .other(let type, _): return type
        }
    }

    /// Decodes rdata of `type` that occupies `reader.offset..<end`. Names may
    /// point anywhere earlier in the message but must end inside the rdata.
    static func read(type: DNSRecordType, from reader: inout DNSReader, end: Int) throws -> DNSRecordData {
        let start = reader.offset
        func fixedLength(_ expected: Int) throws -> [UInt8] {
            guard end - start == expected else {
                throw WireError.malformed("\(type) rdata at offset \(start) is \(end - start) bytes; it must be \(expected)")
            }
            return try reader.readBytes(expected, "\(type) rdata")
        }
        let data: DNSRecordData
        switch type {
        case .a:
            data = .a(try fixedLength(4))
        case .aaaa:
            data = .aaaa(try fixedLength(16))
        case .ns:
            data = .ns(try DNSName.read(from: &reader))
        case .cname:
            data = .cname(try DNSName.read(from: &reader))
        case .soa:
            let primary = try DNSName.read(from: &reader)
            let mailbox = try DNSName.read(from: &reader)
            guard reader.offset + 20 <= end else {
                throw WireError.malformed("SOA rdata at offset \(start) is too short for its five 32-bit numbers")
            }
            data = .soa(DNSSOA(primaryServer: primary, responsibleMailbox: mailbox,
                               serial: try reader.readUInt32("SOA serial"), refresh: try reader.readUInt32("SOA refresh"),
                               retry: try reader.readUInt32("SOA retry"), expire: try reader.readUInt32("SOA expire"),
                               minimum: try reader.readUInt32("SOA minimum")))
        case .txt:
            var strings: [[UInt8]] = []
            while reader.offset < end {
                let length = Int(try reader.readUInt8("TXT rdata"))
                guard reader.offset + length <= end else {
                    throw WireError.malformed("a TXT character-string of \(length) bytes at offset \(reader.offset - 1) runs past the end of its rdata at offset \(end)")
                }
                strings.append(try reader.readBytes(length, "a TXT character-string"))
            }
            data = .txt(strings)
        default:
            data = .other(type, try reader.readBytes(end - start, "\(type) rdata"))
        }
        guard reader.offset == end else {
            let problem = reader.offset > end ? "runs \(reader.offset - end) bytes past" : "stops \(end - reader.offset) bytes short of"
            throw WireError.malformed("\(type) rdata at offset \(start) \(problem) its declared length of \(end - start) bytes")
        }
        return data
    }

    /// Appends the rdata (without its length). Names in NS, CNAME and SOA may
    /// be compressed, as RFC 3597 section 4 allows for these types.
    func write(to writer: inout DNSWriter) throws {
        switch self {
        case .a(let address):
            guard address.count == 4 else {
                throw WireError.malformed("an A record has \(address.count) address bytes; it needs 4")
            }
            writer.bytes += address
        case .aaaa(let address):
            guard address.count == 16 else {
                throw WireError.malformed("an AAAA record has \(address.count) address bytes; it needs 16")
            }
            writer.bytes += address
        case .ns(let name), .cname(let name):
            writer.write(name)
        case .soa(let soa):
            writer.write(soa.primaryServer)
            writer.write(soa.responsibleMailbox)
            for number in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] { writer.write(number) }
        case .txt(let strings):
            for string in strings {
                guard string.count <= DNSTXT.maxStringLength else {
                    throw WireError.tooLarge("a TXT character-string is \(string.count) bytes; each may be at most \(DNSTXT.maxStringLength) (use DNSTXT.split)")
                }
                writer.write(UInt8(string.count))
                writer.bytes += string
            }
        case .other(_, let bytes):
            writer.bytes += bytes
        }
    }
}

/// A resource record.
public struct DNSRecord: Hashable, Sendable {
    public var name: DNSName
    public var recordClass: DNSClass
    public var ttl: UInt32
    public var data: DNSRecordData

    /// The record's TYPE, which follows from its data.
    public var type: DNSRecordType { data.type }

    public init(name: DNSName, class recordClass: DNSClass = .internet, ttl: UInt32, data: DNSRecordData) {
        self.name = name
        self.recordClass = recordClass
        self.ttl = ttl
        self.data = data
    }
}

/// An EDNS0 option from an OPT record (RFC 6891 section 6.1.2).
public struct EDNSOption: Hashable, Sendable {
    public var code: UInt16
    public var data: [UInt8]

    public init(code: UInt16, data: [UInt8]) {
        self.code = code
        self.data = data
    }
}

/// The EDNS0 OPT pseudo-record of a message (RFC 6891 section 6.1).
///
/// Its CLASS is the sender's UDP payload size and its TTL holds the high eight
/// bits of the response code, the version and flags. The response code bits
/// live in `DNSMessage.rcode` (all twelve of them), so they have one home.
public struct EDNS: Hashable, Sendable {
    /// The payload size used when none is given: the DNS flag day 2020 value.
    public static let defaultUDPPayloadSize: UInt16 = 1232

    /// The largest UDP response the sender can receive. RFC 6891 treats values
    /// below 512 as 512; this field keeps what was on the wire.
    public var udpPayloadSize: UInt16
    public var version: UInt8
    /// DO: the sender understands DNSSEC records.
    public var dnssecOK: Bool
    /// The fifteen flag bits after DO, which must be zero in version 0.
    public var otherFlags: UInt16
    public var options: [EDNSOption]

    public init(udpPayloadSize: UInt16 = EDNS.defaultUDPPayloadSize, version: UInt8 = 0, dnssecOK: Bool = false,
                otherFlags: UInt16 = 0, options: [EDNSOption] = []) {
        self.udpPayloadSize = udpPayloadSize
        self.version = version
        self.dnssecOK = dnssecOK
        self.otherFlags = otherFlags & 0x7FFF
        self.options = options
    }

    /// Decodes the options in `reader.offset..<end`.
    static func readOptions(from reader: inout DNSReader, end: Int) throws -> [EDNSOption] {
        var options: [EDNSOption] = []
        while reader.offset < end {
            guard end - reader.offset >= 4 else {
                throw WireError.malformed("an EDNS0 option header at offset \(reader.offset) is cut off by the end of the OPT rdata")
            }
            let code = try reader.readUInt16("an EDNS0 option code")
            let length = Int(try reader.readUInt16("an EDNS0 option length"))
            guard reader.offset + length <= end else {
                throw WireError.malformed("EDNS0 option \(code) of \(length) bytes at offset \(reader.offset - 4) runs past the end of the OPT rdata")
            }
            options.append(EDNSOption(code: code, data: try reader.readBytes(length, "an EDNS0 option")))
        }
        return options
    }

    func writeOptions(to writer: inout DNSWriter) throws {
        for option in options {
            guard option.data.count <= Int(UInt16.max) else {
                throw WireError.tooLarge("EDNS0 option \(option.code) has \(option.data.count) bytes; an option may have at most 65535")
            }
            writer.write(option.code)
            writer.write(UInt16(option.data.count))
            writer.bytes += option.data
        }
    }
}

/// Splitting data into TXT character-strings and joining it back.
public enum DNSTXT {
    /// Longest character-string: its length is one byte.
    public static let maxStringLength = 255

    /// Cuts `bytes` into character-strings of at most 255 bytes, all full but
    /// the last. Empty data gives one empty string, since a TXT record needs
    /// at least one.
    public static func split(_ bytes: some Collection<UInt8>) -> [[UInt8]] {
        let all = Array(bytes)
        guard !all.isEmpty else { return [[]] }
        return stride(from: 0, to: all.count, by: maxStringLength).map {
            Array(all[$0..<min($0 + maxStringLength, all.count)])
        }
    }

    /// The character-strings' bytes, concatenated.
    public static func join(_ strings: [[UInt8]]) -> [UInt8] {
        strings.flatMap { $0 }
    }
}
