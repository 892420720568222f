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
///    first two bytes; OpenSSL waits for that many bytes after the 2-byte header
///    (an ordinary server waits for a record, it does not answer a partial one), then
///    fails without a word. A length below 9 or beyond one record is refused at once.
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
    /// Read this many bytes in all (headers included), answer nothing, then close.
    case swallowThenClose(Int)

    /// OpenSSL's smallest SSLv2 record, and the largest record it buffers.
    static let minimumSSLv2Length = 9
    static let maximumRecordLength = 16_384

    public init(_ bytes: some Collection<UInt8>) {
        var iterator = bytes.makeIterator()
        guard let first = iterator.next() else { self = .needMore; return }
        guard first == 0x16 || first & 0x80 != 0 else { self = .http; return }
        guard bytes.count >= 5 else { self = .needMore; return }
        let second = iterator.next()!, third = iterator.next()!
        if first & 0x80 != 0, third == 1 {
            let length = Int(first & 0x7f) << 8 | Int(second)
            self = (Self.minimumSSLv2Length...Self.maximumRecordLength).contains(length) ? .swallowThenClose(2 + length) : .closeSilently
        } else if first == 0x16, second == 0x03 {
            self = .tls
        } else {
            self = .closeSilently
        }
    }
}
