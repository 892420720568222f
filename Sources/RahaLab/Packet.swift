/// IPv4 packets as a censoring router sees them: an NFQUEUE program hands over the
/// IP header, the transport header and the payload, and a censor profile looks at
/// this small parsed value. Parsing is bounds-checked and never traps: malformed
/// input throws a `PacketError` that says what was wrong.

/// An IPv4 address held as its 32-bit big-endian value.
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Dotted quad, e.g. "10.0.0.1"; nil for anything else.
    public init?(_ string: String) {
        let parts = string.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let octet = UInt8(part) else { return nil }
            value = value << 8 | UInt32(octet)
        }
        self.value = value
    }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
    }

    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.value < rhs.value }
}

/// The IP protocol number of a packet; the censors understand TCP and UDP.
public enum TransportProtocol: Hashable, Sendable, CustomStringConvertible {
    case tcp
    case udp
    case other(UInt8)

    public init(number: UInt8) {
        switch number {
        case 6: self = .tcp
        case 17: self = .udp
        default: self = .other(number)
        }
    }

    public var number: UInt8 {
        switch self {
        case .tcp: 6
        case .udp: 17
        case .other(let n): n
        }
    }

    public var description: String {
        switch self {
        case .tcp: "tcp"
        case .udp: "udp"
        case .other(let n): "ip-proto-\(n)"
        }
    }
}

/// TCP header flags (the low eight bits of the flags field).
public struct TCPFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let fin = TCPFlags(rawValue: 0x01)
    public static let syn = TCPFlags(rawValue: 0x02)
    public static let rst = TCPFlags(rawValue: 0x04)
    public static let psh = TCPFlags(rawValue: 0x08)
    public static let ack = TCPFlags(rawValue: 0x10)
    public static let urg = TCPFlags(rawValue: 0x20)
}

/// One side of a flow: address and port (port 0 for protocols without ports).
public struct IPv4Endpoint: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var address: IPv4Address
    public var port: UInt16
    public init(_ address: IPv4Address, _ port: UInt16) {
        self.address = address
        self.port = port
    }
    public var description: String { "\(address):\(port)" }
    public static func < (lhs: IPv4Endpoint, rhs: IPv4Endpoint) -> Bool {
        (lhs.address, lhs.port) < (rhs.address, rhs.port)
    }
}

/// Why a packet could not be parsed. The NFQUEUE program applies the profile's
/// `unparsableVerdict` to such packets.
public enum PacketError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Fewer bytes than the headers need.
    case truncated(needed: Int, have: Int)
    /// The version nibble is not 4 (IPv6 must be queued separately, or not at all).
    case notIPv4(version: UInt8)
    /// The IHL or TCP data offset is below the minimum of 5 words.
    case badHeaderLength(Int)
    /// The IP total length is shorter than the headers, or longer than the bytes received.
    case badTotalLength(Int)

    public var description: String {
        switch self {
        case .truncated(let needed, let have):
            "packet truncated: headers need \(needed) bytes, only \(have) received (is the NFQUEUE copy range at least the full packet?)"
        case .notIPv4(let version):
            "not an IPv4 packet (version \(version)): queue only IPv4 traffic to the censor"
        case .badHeaderLength(let words):
            "header length of \(words) words is below the minimum of 5"
        case .badTotalLength(let length):
            "IP total length \(length) does not fit the headers and the bytes received"
        }
    }
}

/// A parsed IPv4 packet. `bytes` is the whole packet as received; the fields are
/// copies of header values, and `payloadRange` locates the transport payload in `bytes`.
///
/// Non-first IP fragments and protocols other than TCP and UDP are parsed as far as the
/// IP header: their ports are 0, their flags empty and their payload is the IP payload.
public struct Packet: Sendable {
    public let bytes: [UInt8]
    public let source: IPv4Address
    public let destination: IPv4Address
    public let transport: TransportProtocol
    public let sourcePort: UInt16
    public let destinationPort: UInt16
    /// TCP flags; empty for UDP and other protocols.
    public let tcpFlags: TCPFlags
    /// TCP sequence and acknowledgement numbers; 0 for UDP and other protocols.
    public let sequenceNumber: UInt32
    public let acknowledgementNumber: UInt32
    /// True for any IP fragment (MF set or a non-zero offset).
    public let isFragment: Bool
    public let payloadRange: Range<Int>

    public var payload: ArraySlice<UInt8> { bytes[payloadRange] }
    public var sourceEndpoint: IPv4Endpoint { IPv4Endpoint(source, sourcePort) }
    public var destinationEndpoint: IPv4Endpoint { IPv4Endpoint(destination, destinationPort) }
    /// A TCP SYN without ACK: the opening packet sent by a client.
    public var isInitialSYN: Bool { transport == .tcp && tcpFlags.contains(.syn) && !tcpFlags.contains(.ack) }

    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count >= 20 else { throw PacketError.truncated(needed: 20, have: bytes.count) }
        let version = bytes[0] >> 4
        guard version == 4 else { throw PacketError.notIPv4(version: version) }
        let ihl = Int(bytes[0] & 0x0f)
        guard ihl >= 5 else { throw PacketError.badHeaderLength(ihl) }
        let ipHeaderLength = ihl * 4
        guard bytes.count >= ipHeaderLength else { throw PacketError.truncated(needed: ipHeaderLength, have: bytes.count) }
        let totalLength = Int(bytes[2]) << 8 | Int(bytes[3])
        guard totalLength >= ipHeaderLength, totalLength <= bytes.count else { throw PacketError.badTotalLength(totalLength) }
        let fragmentField = Int(bytes[6]) << 8 | Int(bytes[7])
        let moreFragments = fragmentField & 0x2000 != 0
        let fragmentOffset = fragmentField & 0x1fff
        let proto = TransportProtocol(number: bytes[9])
        func address(at i: Int) -> IPv4Address { IPv4Address(bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]) }

        self.bytes = bytes
        source = address(at: 12)
        destination = address(at: 16)
        transport = proto
        isFragment = moreFragments || fragmentOffset != 0

        func port(at i: Int) -> UInt16 { UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1]) }
        func u32(at i: Int) -> UInt32 { UInt32(bytes[i]) << 24 | UInt32(bytes[i + 1]) << 16 | UInt32(bytes[i + 2]) << 8 | UInt32(bytes[i + 3]) }
        let t = ipHeaderLength  // start of the transport header
        switch proto {
        case .tcp where fragmentOffset == 0:
            guard totalLength >= t + 20 else { throw PacketError.truncated(needed: t + 20, have: totalLength) }
            let dataOffset = Int(bytes[t + 12] >> 4)
            guard dataOffset >= 5 else { throw PacketError.badHeaderLength(dataOffset) }
            let payloadStart = t + dataOffset * 4
            guard totalLength >= payloadStart else { throw PacketError.truncated(needed: payloadStart, have: totalLength) }
            sourcePort = port(at: t)
            destinationPort = port(at: t + 2)
            tcpFlags = TCPFlags(rawValue: bytes[t + 13])
            sequenceNumber = u32(at: t + 4)
            acknowledgementNumber = u32(at: t + 8)
            payloadRange = payloadStart..<totalLength
        case .udp where fragmentOffset == 0:
            guard totalLength >= t + 8 else { throw PacketError.truncated(needed: t + 8, have: totalLength) }
            sourcePort = port(at: t)
            destinationPort = port(at: t + 2)
            tcpFlags = []
            sequenceNumber = 0
            acknowledgementNumber = 0
            payloadRange = (t + 8)..<totalLength
        default:
            sourcePort = 0
            destinationPort = 0
            tcpFlags = []
            sequenceNumber = 0
            acknowledgementNumber = 0
            payloadRange = t..<totalLength
        }
    }
}

extension Packet {
    /// The two TCP resets a censor injects for a `.reset` verdict on this TCP packet
    /// (which is itself dropped): one towards the packet's destination, as if from its
    /// source, and one back towards its source, as if from its destination, with sequence
    /// numbers each receiver accepts (RFC 9293 section 3.10.7). Empty for non-TCP packets
    /// and for resets (a reset is never answered with one).
    public var resetPackets: [[UInt8]] {
        guard transport == .tcp, !isFragment, !tcpFlags.contains(.rst) else { return [] }
        let consumed = UInt32(truncatingIfNeeded: payloadRange.count)
            &+ (tcpFlags.contains(.syn) ? 1 : 0) &+ (tcpFlags.contains(.fin) ? 1 : 0)
        let next = sequenceNumber &+ consumed
        let forward = Self.tcpSegment(from: sourceEndpoint, to: destinationEndpoint, sequence: next, acknowledgement: 0, flags: .rst)
        // Towards the sender: in its window if we use the number it acknowledged; a bare
        // SYN acknowledged nothing, so answer it as a closed port would (RST+ACK, seq 0).
        let backward = tcpFlags.contains(.ack)
            ? Self.tcpSegment(from: destinationEndpoint, to: sourceEndpoint, sequence: acknowledgementNumber, acknowledgement: next, flags: [.rst, .ack])
            : Self.tcpSegment(from: destinationEndpoint, to: sourceEndpoint, sequence: 0, acknowledgement: next, flags: [.rst, .ack])
        return [forward, backward]
    }

    /// A 40-byte IPv4+TCP segment with no payload and valid checksums.
    static func tcpSegment(from: IPv4Endpoint, to: IPv4Endpoint, sequence: UInt32, acknowledgement: UInt32, flags: TCPFlags) -> [UInt8] {
        func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
        func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
        var ip: [UInt8] = [0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0] + be32(from.address.value) + be32(to.address.value)
        var tcp: [UInt8] = be16(from.port) + be16(to.port) + be32(sequence) + be32(acknowledgement)
            + [0x50, flags.rawValue, 0, 0, 0, 0, 0, 0]
        let pseudo: [UInt8] = be32(from.address.value) + be32(to.address.value) + [0, 6, 0, 20]
        let tcpSum = internetChecksum(pseudo + tcp)
        tcp[16] = UInt8(tcpSum >> 8)
        tcp[17] = UInt8(tcpSum & 0xff)
        let ipSum = internetChecksum(ip)
        ip[10] = UInt8(ipSum >> 8)
        ip[11] = UInt8(ipSum & 0xff)
        return ip + tcp
    }

    /// The RFC 1071 one's-complement checksum.
    public static func internetChecksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var i = 0
        while i + 1 < bytes.count {
            sum &+= UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        if i < bytes.count { sum &+= UInt32(bytes[i]) << 8 }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }
}

/// A flow's 5-tuple, the same for both directions: the endpoints are stored in a
/// canonical order, so a packet and its reply give the same key. Which side is the
/// client is flow state (see `FlowTable`), not part of the key.
public struct FlowKey: Hashable, Sendable, CustomStringConvertible {
    public let transport: TransportProtocol
    public let lower: IPv4Endpoint
    public let upper: IPv4Endpoint

    public init(_ packet: Packet) {
        self.init(transport: packet.transport, packet.sourceEndpoint, packet.destinationEndpoint)
    }

    public init(transport: TransportProtocol, _ a: IPv4Endpoint, _ b: IPv4Endpoint) {
        self.transport = transport
        lower = min(a, b)
        upper = max(a, b)
    }

    public var description: String { "\(transport) \(lower) <-> \(upper)" }
}
