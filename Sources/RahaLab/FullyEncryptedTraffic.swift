/// The Great Firewall of China's rule for fully encrypted traffic, as inferred by
/// Wu et al., "How the Great Firewall of China Detects and Blocks Fully Encrypted
/// Traffic", USENIX Security 2023 (Algorithm 1, sections 4.1–4.3).
///
/// The censor does not define fully encrypted traffic. It looks at the first data
/// packet a client sends on a TCP connection and exempts it if any of five heuristics
/// holds; everything else is a candidate for blocking:
///
/// - Ex1: the average number of set bits per byte is <= 3.4 or >= 4.6
///   (random bytes average 4);
/// - Ex2: the first six (or more) bytes are printable ASCII, 0x20–0x7e;
/// - Ex3: more than half of the bytes are printable ASCII;
/// - Ex4: more than 20 contiguous bytes are printable ASCII;
/// - Ex5: the first bytes match a protocol fingerprint: a TLS record header,
///   `[\x16-\x17] \x03 [\x00-\x09]`, or an HTTP request, `GET `, `PUT `, `POST `
///   or `HEAD ` (the space is part of the fingerprint).
///
/// This is the rule only. The paper also found that the GFW blocks a non-exempt
/// connection with a probability of about 26.3% (`blockProbability`), then drops the
/// same client IP, server IP and server port for 120 or 180 seconds; that it looks at
/// TCP only and only at some server address ranges. `isBlocked` answers "is this first
/// packet subject to blocking", not "was it blocked this time".
public enum FullyEncryptedTrafficRule {
    /// The paper's exemptions, in its order.
    public enum Exemption: String, CaseIterable, Hashable, Sendable {
        /// Ex1: popcount per byte <= 3.4 or >= 4.6.
        case popcount
        /// Ex2: the first six bytes are printable ASCII.
        case firstSixPrintable
        /// Ex3: more than 50% of the bytes are printable ASCII.
        case halfPrintable
        /// Ex4: a run of more than 20 printable ASCII bytes.
        case printableRun
        /// Ex5: the packet starts like TLS or an HTTP request.
        case protocolFingerprint
    }

    /// The per-connection probability with which the GFW blocked non-exempt
    /// connections in the paper's measurements (section 6.3).
    public static let blockProbability = 0.263

    /// The first exemption, in the paper's order, that the packet meets; nil when it
    /// meets none. An empty packet meets none, but it is not blocked either: the rule
    /// applies to the first packet that carries data.
    public static func exemption(forFirstPacket packet: [UInt8]) -> Exemption? {
        Exemption.allCases.first { meets($0, packet) }
    }

    /// Every exemption the packet meets.
    public static func exemptions(forFirstPacket packet: [UInt8]) -> Set<Exemption> {
        Set(Exemption.allCases.filter { meets($0, packet) })
    }

    /// True when the packet meets no exemption, so the GFW treats the connection as
    /// fully encrypted and may block it.
    public static func isBlocked(firstPacket: [UInt8]) -> Bool {
        !firstPacket.isEmpty && exemption(forFirstPacket: firstPacket) == nil
    }

    // MARK: The individual rules

    /// Average number of set bits per byte; 0 for an empty packet.
    public static func popcountPerByte(_ packet: [UInt8]) -> Double {
        guard !packet.isEmpty else { return 0 }
        let bits = packet.reduce(0) { $0 + $1.nonzeroBitCount }
        return Double(bits) / Double(packet.count)
    }

    /// 0x20 (space) through 0x7e (~).
    public static func isPrintable(_ byte: UInt8) -> Bool { byte >= 0x20 && byte <= 0x7e }

    private static func meets(_ exemption: Exemption, _ packet: [UInt8]) -> Bool {
        guard !packet.isEmpty else { return false }
        switch exemption {
        case .popcount:
            // Compare exact counts rather than a rounded average: bits/len <= 3.4 <=> 5*bits <= 17*len.
            let bits = packet.reduce(0) { $0 + $1.nonzeroBitCount }
            return 5 * bits <= 17 * packet.count || 5 * bits >= 23 * packet.count
        case .firstSixPrintable:
            return packet.count >= 6 && packet.prefix(6).allSatisfy(isPrintable)
        case .halfPrintable:
            return 2 * packet.lazy.filter(isPrintable).count > packet.count
        case .printableRun:
            var run = 0
            for byte in packet {
                run = isPrintable(byte) ? run + 1 : 0
                if run > 20 { return true }
            }
            return false
        case .protocolFingerprint:
            return looksLikeTLS(packet) || looksLikeHTTPRequest(packet)
        }
    }

    private static func looksLikeTLS(_ packet: [UInt8]) -> Bool {
        packet.count >= 3 && (packet[0] == 0x16 || packet[0] == 0x17) && packet[1] == 0x03 && packet[2] <= 0x09
    }

    private static let httpMethods: [[UInt8]] = ["GET ", "PUT ", "POST ", "HEAD "].map { Array($0.utf8) }

    private static func looksLikeHTTPRequest(_ packet: [UInt8]) -> Bool {
        httpMethods.contains { packet.starts(with: $0) }
    }
}
