/// What an ordinary HTTPS server does with the first bytes of a connection to its TLS
/// port, so that a bridge listening there can do the same with bytes that are not a
/// TLS handshake. The model is nginx with OpenSSL 3, the most common HTTPS server, as
/// the censor lab measured it (raha-censor's active-probe profile against nginx):
///
/// 1. nginx looks at the first byte: 0x16 (a TLS handshake record) or any byte with the
///    high bit set (an SSLv2-style record header) goes to OpenSSL; anything else is
///    read as plain HTTP (and answered by the HTTP parser, e.g. 400 Bad Request).
/// 2. OpenSSL reads a 5-byte record header first, and waits until it has one.
/// 3. An SSLv2-style ClientHello (high bit set, third byte 1) announces a length in its
///    first two bytes. OpenSSL refuses a length below 9 (alert decode_error) or beyond
///    16,704 (record_overflow) at once; otherwise it waits for the whole record and
///    judges it: not a ClientHello, closed without a word; a session id longer than 32,
///    illegal_parameter; lengths that do not add up, decode_error; a version below
///    SSL 3, protocol_version; no cipher suites, illegal_parameter; cipher suites not in
///    threes, decode_error; anything else, handshake_failure (it speaks no SSLv2). Each
///    alert is one TLS 1.2 record, then the connection closes. (Measured against
///    Debian 12's nginx 1.22 with OpenSSL 3.0, every first byte after a real ClientHello
///    and crafted records for each branch.)
/// 4. Any other first record whose version's major byte is not 3 is closed without an
///    alert ("wrong version number" on a first record sends none); so is a high-bit
///    record header with version 3 (an invalid content type).
/// 5. 0x16 0x03: a TLS handshake, for the TLS stack.
public enum TLSPortFirstBytes: Hashable, Sendable {
    /// Not decided yet: keep reading.
    case needMore
    /// A TLS handshake record: hand every byte to the TLS stack.
    case tls
    /// Not TLS at all: plain HTTP on the TLS port, for the web site.
    case http
    /// Close without answering.
    case closeSilently
    /// Send this TLS alert (fatal, description code) and close.
    case alertThenClose(UInt8)

    /// OpenSSL's smallest SSLv2 record, and the largest it reads.
    static let minimumSSLv2Length = 9
    static let maximumSSLv2Length = 16_704

    /// TLS alert descriptions OpenSSL sends here (RFC 5246 section 7.2).
    public enum Alert {
        public static let handshakeFailure: UInt8 = 40
        public static let illegalParameter: UInt8 = 47
        public static let decodeError: UInt8 = 50
        public static let protocolVersion: UInt8 = 70
        public static let recordOverflow: UInt8 = 22
    }

    /// The alert record for `alertThenClose`: fatal, in a TLS 1.2 record.
    public static func alertRecord(_ description: UInt8) -> [UInt8] {
        [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
    }

    public init(_ bytes: some Collection<UInt8>) {
        var iterator = bytes.makeIterator()
        guard let first = iterator.next() else { self = .needMore; return }
        guard first == 0x16 || first & 0x80 != 0 else { self = .http; return }
        guard bytes.count >= 5 else { self = .needMore; return }
        let second = iterator.next()!, third = iterator.next()!
        if first & 0x80 != 0, third == 1 {
            self = Self.sslv2ClientHello(Array(bytes), length: Int(first & 0x7f) << 8 | Int(second))
        } else if first == 0x16, second == 0x03 {
            self = .tls
        } else {
            self = .closeSilently
        }
    }

    /// OpenSSL's judgement of an SSLv2-style record of `length` bytes after its 2-byte header.
    private static func sslv2ClientHello(_ bytes: [UInt8], length: Int) -> TLSPortFirstBytes {
        guard length >= minimumSSLv2Length else { return .alertThenClose(Alert.decodeError) }
        guard length <= maximumSSLv2Length else { return .alertThenClose(Alert.recordOverflow) }
        guard bytes.count >= 2 + length else { return .needMore }
        func u16(_ at: Int) -> Int { Int(bytes[at]) << 8 | Int(bytes[at + 1]) }
        // type (1), version (2), cipher-spec, session-id and challenge lengths (2 each).
        let version = u16(3), ciphers = u16(5), session = u16(7), challenge = u16(9)
        if session > 32 { return .alertThenClose(Alert.illegalParameter) }
        if 9 + ciphers + session + challenge != length { return .alertThenClose(Alert.decodeError) }
        if version < 0x0300 { return .alertThenClose(Alert.protocolVersion) }
        if ciphers == 0 { return .alertThenClose(Alert.illegalParameter) }
        if ciphers % 3 != 0 { return .alertThenClose(Alert.decodeError) }
        return .alertThenClose(Alert.handshakeFailure)
    }
}
