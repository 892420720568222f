import RahaWire

/// What a middlebox that parses one packet, with no TCP reassembly, can learn about a
/// TLS ClientHello from the first client data packet. Like real DPI it reads the server
/// name from a first record that continues in later segments, as long as the name is
/// whole in this packet: browsers' post-quantum ClientHellos (about 1.8 KB, and BoringSSL's,
/// Raha's, about 1.5 KB) no longer fit one segment, and a censor that lost their names
/// would lose sight of most of the web. It does not join several TLS records.
public enum ClientHelloView: Hashable, Sendable {
    /// The payload does not start like a TLS handshake record (`16 03 xx`).
    case notTLS
    /// A ClientHello whose server name is readable in this packet (lower-cased).
    case serverName(String)
    /// A ClientHello record complete in this packet that carries no server name.
    case noServerName
    /// A TLS handshake record whose server name cannot be read from this packet alone:
    /// the record continues in a later segment, or the handshake spans several records
    /// (the fragmentation techniques of `ClientHelloFragmenter`). Also one or two bytes
    /// that begin like a handshake record (`16`, `16 03`).
    case unreadable

    /// Classifies a first data packet, with `ClientHelloFragmenter.serverNameRange(in:partialRecord:)`.
    public init(firstPacket payload: some Collection<UInt8>) {
        let bytes = Array(payload)
        guard bytes.count >= 3 else {
            // One or two bytes that could begin a handshake record cannot be judged.
            self = !bytes.isEmpty && [0x16, 0x03].starts(with: bytes) ? .unreadable : .notTLS
            return
        }
        guard bytes[0] == 0x16, bytes[1] == 0x03 else {
            self = .notTLS
            return
        }
        if let range = ClientHelloFragmenter.serverNameRange(in: bytes, partialRecord: true) {
            self = .serverName(String(decoding: bytes[range], as: UTF8.self).lowercased())
            return
        }
        // No name found. It is definitely absent only if the first record is whole here
        // and holds the whole ClientHello message.
        guard bytes.count >= 9, bytes[5] == 0x01 else {
            self = .unreadable
            return
        }
        let recordLength = Int(bytes[3]) << 8 | Int(bytes[4])
        let messageLength = Int(bytes[6]) << 16 | Int(bytes[7]) << 8 | Int(bytes[8])
        self = bytes.count >= 5 + recordLength && 4 + messageLength <= recordLength ? .noServerName : .unreadable
    }
}

/// A suffix-aware set of allowed host names: "example.com" allows "example.com" and
/// "www.example.com", not "badexample.com". Names compare case-insensitively and a
/// trailing dot is ignored.
public struct HostAllowlist: Hashable, Sendable {
    public let names: Set<String>

    public init(_ names: some Sequence<String>) {
        self.names = Set(names.map(Self.normalise).filter { !$0.isEmpty })
    }

    public func allows(_ host: String) -> Bool {
        var candidate = Self.normalise(host)[...]
        while !candidate.isEmpty {
            if names.contains(String(candidate)) { return true }
            guard let dot = candidate.firstIndex(of: ".") else { return false }
            candidate = candidate[candidate.index(after: dot)...]
        }
        return false
    }

    private static func normalise(_ name: String) -> String {
        var name = name.lowercased()
        while name.hasSuffix(".") { name.removeLast() }
        return name
    }
}

/// The protocol fingerprints of Iran's 2020 protocol filter (Bock et al., "Detecting
/// and Evading Censorship-in-Depth: A Case Study of Iran's Protocol Filter", FOCI 2020,
/// section 4.3), applied to the concatenated payloads of a flow's first two client data
/// packets (the filter does no reassembly beyond that).
///
/// What the paper states and this follows: HTTP needs at least 8 bytes beginning with a
/// method and a space (GET, POST, HEAD, CONNECT, OPTIONS, DELETE, PUT); any of the
/// protocols is allowed on any of the filtered ports. Where a summary was all that could
/// be consulted here, these are assumptions, kept loose as a byte-level filter would be:
/// - TLS: a handshake record header `16 03 [00-03]` followed by a ClientHello
///   (handshake type 0x01), i.e. at least 6 bytes;
/// - DNS over TCP: a two-byte length of at least 17 followed by the header of a standard
///   query: QR 0 and opcode 0, one question, no answer or authority records (ARCOUNT is
///   free, for EDNS); decided once 12 bytes are in.
///   The paper reports a bug in the filter's DNS fingerprint; it is not reproduced.
public enum IranProtocolFingerprint: String, CaseIterable, Hashable, Sendable {
    case dns
    case http
    case tls

    public enum Match: Hashable, Sendable {
        case matches(IranProtocolFingerprint)
        /// A prefix of an allowed protocol: a later packet may complete it.
        case needsMore
        case noMatch
    }

    static let httpMethods: [[UInt8]] = ["GET ", "POST ", "HEAD ", "CONNECT ", "OPTIONS ", "DELETE ", "PUT "].map { Array($0.utf8) }

    /// Classifies the client's payload so far.
    public static func match(_ payload: some Collection<UInt8>) -> Match {
        let bytes = Array(payload)
        var undecided = false
        for fingerprint in allCases {
            switch fingerprint.evaluate(bytes) {
            case true?: return .matches(fingerprint)
            case nil: undecided = true
            case false?: break
            }
        }
        return undecided ? .needsMore : .noMatch
    }

    /// true: matches; false: cannot match whatever follows; nil: too short to say.
    func evaluate(_ b: [UInt8]) -> Bool? {
        switch self {
        case .http:
            for method in Self.httpMethods {
                let common = min(b.count, method.count)
                guard b.prefix(common).elementsEqual(method.prefix(common)) else { continue }
                return b.count >= max(8, method.count) ? true : nil
            }
            return false
        case .tls:
            let expected: [(UInt8) -> Bool] = [{ $0 == 0x16 }, { $0 == 0x03 }, { $0 <= 0x03 }, { _ in true }, { _ in true }, { $0 == 0x01 }]
            for (byte, ok) in zip(b, expected) where !ok(byte) { return false }
            return b.count >= expected.count ? true : nil
        case .dns:
            // length >= 17 (a 12-byte header and the smallest question), then a standard
            // query (QR 0, opcode 0) with one question and no answer or authority records.
            let expected: [(UInt8) -> Bool] = [{ _ in true }, { _ in true }, { _ in true }, { _ in true },
                                               { $0 & 0xF8 == 0 }, { _ in true }, { $0 == 0 }, { $0 == 1 },
                                               { $0 == 0 }, { $0 == 0 }, { $0 == 0 }, { $0 == 0 }]
            if b.count >= 2, Int(b[0]) << 8 | Int(b[1]) < 17 { return false }
            for (byte, ok) in zip(b, expected) where !ok(byte) { return false }
            return b.count >= expected.count ? true : nil
        }
    }
}
