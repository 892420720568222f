import RahaWire
@testable import RahaLab

/// Builders for real IPv4 packet bytes, as an NFQUEUE program would receive them.
enum LabPackets {
    static func ipv4(_ proto: UInt8, from source: IPv4Address, to destination: IPv4Address, transport: [UInt8], fragment: UInt16 = 0x4000) -> [UInt8] {
        let total = 20 + transport.count
        var header: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0x12, 0x34,
                               UInt8(fragment >> 8), UInt8(fragment & 0xff), 64, proto, 0, 0]
        for a in [source, destination] {
            header += [UInt8(a.value >> 24), UInt8(a.value >> 16 & 0xff), UInt8(a.value >> 8 & 0xff), UInt8(a.value & 0xff)]
        }
        var sum: UInt32 = 0
        for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(header[i]) << 8 | UInt32(header[i + 1]) }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        let checksum = ~UInt16(sum)
        header[10] = UInt8(checksum >> 8)
        header[11] = UInt8(checksum & 0xff)
        return header + transport
    }

    static func tcp(from: IPv4Endpoint, to: IPv4Endpoint, flags: TCPFlags = [.ack, .psh], payload: [UInt8] = [], optionWords: Int = 0,
                    seq: UInt32 = 1, ack: UInt32 = 0) -> [UInt8] {
        let offset = 5 + optionWords
        func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
        var segment: [UInt8] = [UInt8(from.port >> 8), UInt8(from.port & 0xff), UInt8(to.port >> 8), UInt8(to.port & 0xff)]
        segment += be32(seq) + be32(ack) + [UInt8(offset << 4), flags.rawValue, 0xff, 0xff, 0, 0, 0, 0]
        segment += Array(repeating: 0x01, count: optionWords * 4) // NOP options
        return ipv4(6, from: from.address, to: to.address, transport: segment + payload)
    }

    static func udp(from: IPv4Endpoint, to: IPv4Endpoint, payload: [UInt8]) -> [UInt8] {
        let length = 8 + payload.count
        let header: [UInt8] = [UInt8(from.port >> 8), UInt8(from.port & 0xff), UInt8(to.port >> 8), UInt8(to.port & 0xff),
                               UInt8(length >> 8), UInt8(length & 0xff), 0, 0]
        return ipv4(17, from: from.address, to: to.address, transport: header + payload)
    }

    static func parse(_ bytes: [UInt8]) -> Packet {
        // The builders above only make valid packets.
        try! Packet(parsing: bytes)
    }

    /// A ClientHello made by Python's ssl module (OpenSSL 3) for www.example.com
    /// (the same one RahaWireTests uses): one record of 517 bytes.
    static let realClientHello = hex("1603010200010001fc030389dde4922689d5f3fafdfe5d84afdce243f7ed61d713f04120eccf64f342a18e20e0103886579b7f15486f91e83a5d293d47ac0e283c8da6b92eb26caafcdc338c0024130213031301c02cc030c02bc02fcca9cca8c024c028c023c027009f009e006b006700ff0100018f00000014001200000f7777772e6578616d706c652e636f6d000b000403000102000a00160014001d0017001e0019001801000101010201030104002300000016000000170000000d002a0028040305030603080708080809080a080b080408050806040105010601030303010302040205020602002b00050403040303002d00020101003300260024001d002016983c51940bb6d5afb072f4a21ce0f42f5523f4626e6f7fe25dfd4fdcdaaf4c001500de000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000")

    /// A minimal, well-formed TLS 1.3 ClientHello, with a server_name extension when a name is given.
    static func clientHello(serverName: String?) -> [UInt8] {
        var extensions: [UInt8] = []
        if let name = serverName {
            let n = Array(name.utf8)
            let entry: [UInt8] = [0x00] + be16(n.count) + n
            let list = be16(entry.count) + entry
            extensions += [0x00, 0x00] + be16(list.count) + list
        }
        extensions += [0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04] // supported_versions: TLS 1.3
        var body: [UInt8] = [0x03, 0x03] + (0..<32).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        body += [32] + (0..<32).map { UInt8(truncatingIfNeeded: $0 &* 91 &+ 5) }
        body += [0x00, 0x02, 0x13, 0x01, 0x01, 0x00]
        body += be16(extensions.count) + extensions
        let handshake: [UInt8] = [0x01, 0, UInt8(body.count >> 8), UInt8(body.count & 0xff)] + body
        return [0x16, 0x03, 0x01] + be16(handshake.count) + handshake
    }

    static func be16(_ n: Int) -> [UInt8] { [UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] }

    /// Bytes that meet no exemption of the GFW's fully-encrypted rule (popcount 4.0, nothing printable).
    static func fullyEncrypted(_ count: Int) -> [UInt8] {
        let filler: [UInt8] = [0x0F, 0x8E, 0x9C, 0xF0, 0xE1, 0xC3]
        return (0..<count).map { filler[$0 % filler.count] }
    }
}

func hex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var chars = Array(s.utf8)[...]
    while chars.count >= 2 {
        out.append(UInt8(String(decoding: chars.prefix(2), as: UTF8.self), radix: 16)!)
        chars = chars.dropFirst(2)
    }
    return out
}

/// One TCP connection between a client and a server, as packets.
struct TCPConversation {
    let client: IPv4Endpoint
    let server: IPv4Endpoint

    init(client: IPv4Endpoint = IPv4Endpoint(IPv4Address(10, 1, 0, 2), 40_000), server: IPv4Endpoint) {
        self.client = client
        self.server = server
    }

    var syn: Packet { LabPackets.parse(LabPackets.tcp(from: client, to: server, flags: .syn)) }
    var synAck: Packet { LabPackets.parse(LabPackets.tcp(from: server, to: client, flags: [.syn, .ack])) }
    var ack: Packet { LabPackets.parse(LabPackets.tcp(from: client, to: server, flags: .ack)) }
    func fromClient(_ payload: [UInt8]) -> Packet { LabPackets.parse(LabPackets.tcp(from: client, to: server, payload: payload)) }
    func fromServer(_ payload: [UInt8]) -> Packet { LabPackets.parse(LabPackets.tcp(from: server, to: client, payload: payload)) }

    /// Feeds the three-way handshake and returns the verdicts.
    func handshake(_ censor: inout some Censor, at now: Duration) -> [Verdict] {
        [syn, synAck, ack].map { censor.inspect($0, at: now) }
    }
}

