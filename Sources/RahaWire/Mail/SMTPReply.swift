/// One SMTP server reply (RFC 5321 section 4.2): a three-digit code and one
/// or more lines of text. Multi-line replies put "-" after the code on every
/// line but the last, which has " " (or nothing).
public struct SMTPReply: Hashable, Sendable, CustomStringConvertible {
    public var code: Int
    public var lines: [String]

    public init(code: Int, lines: [String]) {
        self.code = code
        self.lines = lines
    }

    /// 2xx: the command succeeded.
    public var isPositive: Bool { (200..<300).contains(code) }
    /// 3xx: go on (354 after DATA, 334 during AUTH).
    public var isIntermediate: Bool { (300..<400).contains(code) }
    /// 4xx: failed for now; the same command may work later.
    public var isTransient: Bool { (400..<500).contains(code) }

    /// The code and the text on one line, for messages ("550 5.7.1 relaying denied").
    public var description: String {
        "\(code) " + lines.joined(separator: " / ")
    }
}

/// Splits a server's bytes into replies. Pure and incremental: feed bytes as
/// they come, take replies while there are any.
public struct SMTPReplyParser: Sendable {
    /// RFC 5321 allows reply lines of 512 octets; real servers stay under that.
    /// Longer ones are taken up to this limit, beyond it the stream is refused.
    public static let maximumLineLength = 4096
    /// Lines in one reply at most (EHLO replies have about 10-20).
    public static let maximumLines = 128

    private var buffer: [UInt8] = []
    private var pending: (code: Int, lines: [String])?

    public init() {}

    public mutating func feed(_ bytes: some Sequence<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    /// The next whole reply, nil when more bytes are needed. Throws
    /// `MailError.protocolViolation` for a line that is not a reply line or is
    /// too long, or a multi-line reply whose lines change code.
    public mutating func next() throws -> SMTPReply? {
        while let end = buffer.firstIndex(of: 0x0A) {
            var line = Array(buffer[..<end])
            buffer.removeSubrange(...end)
            if line.last == 0x0D { line.removeLast() }
            guard line.count <= Self.maximumLineLength else { throw MailError.protocolViolation("the SMTP server sent a reply line of \(line.count) bytes") }
            guard line.count >= 3, line[0..<3].allSatisfy({ (0x30...0x39).contains($0) }),
                  line.count == 3 || line[3] == 0x20 || line[3] == 0x2D else {
                throw MailError.protocolViolation("the SMTP server sent \"\(MailError.excerpt(line))\", which is not a reply line")
            }
            let code = Int(String(decoding: line[0..<3], as: UTF8.self))!
            let text = line.count > 4 ? String(decoding: line[4...], as: UTF8.self) : ""
            let last = line.count == 3 || line[3] == 0x20
            var reply = pending ?? (code, [])
            guard reply.code == code else {
                throw MailError.protocolViolation("the SMTP server changed the code within one reply (\(reply.code), then \(code))")
            }
            reply.lines.append(text)
            guard reply.lines.count <= Self.maximumLines else { throw MailError.protocolViolation("the SMTP server sent a reply of more than \(Self.maximumLines) lines") }
            if last {
                pending = nil
                return SMTPReply(code: reply.code, lines: reply.lines)
            }
            pending = reply
        }
        guard buffer.count <= Self.maximumLineLength else { throw MailError.protocolViolation("the SMTP server sent a reply line of more than \(Self.maximumLineLength) bytes") }
        return nil
    }
}
