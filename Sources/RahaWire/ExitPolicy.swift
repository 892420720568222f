import NIOCore

/// Which destinations a bridge (or a page gateway) will connect to.
///
/// Neither is an open door into its own network: loopback, private,
/// link-local, unique-local, multicast and unspecified addresses (and every
/// IPv6 form that carries an IPv4 address: mapped, compatible, translated,
/// NAT64, 6to4; Teredo's is refused outright) are refused unless
/// `allowPrivate` is set. Domains are checked after resolution, so a name
/// that resolves to such an address is refused too.
public struct ExitPolicy: Sendable {
    public var allowPrivate: Bool

    public init(allowPrivate: Bool = false) { self.allowPrivate = allowPrivate }

    public func allows(_ address: SocketAddress) -> Bool {
        if allowPrivate { return true }
        switch address {
        case .v4(let a):
            let raw = UInt32(bigEndian: a.address.sin_addr.s_addr)
            return Self.isPublicIPv4(raw)
        case .v6(let a):
            var addr = a.address.sin6_addr
            let bytes = withUnsafeBytes(of: &addr) { Array($0) }
            return Self.isPublicIPv6(bytes)
        case .unixDomainSocket:
            return false
        }
    }

    public static func isPublicIPv4(_ a: UInt32) -> Bool {
        func inNet(_ net: UInt32, _ bits: UInt32) -> Bool { bits == 0 || (a >> (32 - bits)) == (net >> (32 - bits)) }
        let refused: [(UInt32, UInt32)] = [
            (0x0000_0000, 8),   // 0.0.0.0/8 "this network"
            (0x0A00_0000, 8),   // 10/8
            (0x6440_0000, 10),  // 100.64/10 carrier-grade NAT
            (0x7F00_0000, 8),   // loopback
            (0xA9FE_0000, 16),  // link-local
            (0xAC10_0000, 12),  // 172.16/12
            (0xC000_0000, 24),  // 192.0.0/24 IETF protocol assignments
            (0xC000_0200, 24),  // 192.0.2/24 documentation
            (0xC633_6400, 24),  // 198.51.100/24 documentation
            (0xCB00_7100, 24),  // 203.0.113/24 documentation
            (0xC0A8_0000, 16),  // 192.168/16
            (0xC612_0000, 15),  // 198.18/15 benchmarking
            (0xE000_0000, 4),   // multicast
            (0xF000_0000, 4),   // reserved and broadcast
        ]
        return !refused.contains { inNet($0.0, $0.1) }
    }

    public static func isPublicIPv6(_ b: [UInt8]) -> Bool {
        precondition(b.count == 16)
        func v4(at i: Int) -> UInt32 { UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3]) }
        let firstTenZero = b[0..<10].allSatisfy { $0 == 0 }
        // IPv4-mapped ::ffff:a.b.c.d and the deprecated IPv4-compatible ::a.b.c.d: judge the IPv4 address.
        if firstTenZero && ((b[10] == 0xff && b[11] == 0xff) || (b[10] == 0 && b[11] == 0)) {
            if b[10] == 0 && v4(at: 12) <= 1 { return false } // :: and ::1
            return isPublicIPv4(v4(at: 12))
        }
        // IPv4-translated ::ffff:0:a.b.c.d (RFC 2765).
        if b[0..<8].allSatisfy({ $0 == 0 }) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0 {
            return isPublicIPv4(v4(at: 12))
        }
        if b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b {
            // NAT64's well-known prefix 64:ff9b::/96 embeds an IPv4 address;
            // its local-use prefix 64:ff9b:1::/48 leads into a local network.
            if b[4...11].allSatisfy({ $0 == 0 }) { return isPublicIPv4(v4(at: 12)) }
            if b[4] == 0 && b[5] == 1 { return false }
        }
        if b[0] == 0x20 && b[1] == 0x02 { return isPublicIPv4(v4(at: 2)) }      // 6to4 2002:a.b.c.d::/48
        if b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0 { return false } // Teredo 2001::/32 (the client's address is hidden)
        if b[0] == 0x01 && b[1] == 0x00 && b[2..<8].allSatisfy({ $0 == 0 }) { return false } // 100::/64 discard
        if b[0] & 0xfe == 0xfc { return false }              // fc00::/7 unique local
        if b[0] == 0xfe && b[1] & 0xc0 == 0x80 { return false } // fe80::/10 link-local
        if b[0] == 0xfe && b[1] & 0xc0 == 0xc0 { return false } // fec0::/10 site-local
        if b[0] == 0xff { return false }                      // multicast
        if b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8 { return false } // documentation
        return true
    }
}
