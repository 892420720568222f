import Foundation

/// What a courier mail looks like to anyone who reads the mailbox or the
/// wire: an ordinary mail with a subject, a short text and an attachment.
public struct MailDisguise: Hashable, Sendable, Codable {
    public var subject: String
    public var body: String
    public var attachmentName: String

    public static let `default` = MailDisguise(subject: "Files", body: "Here are the files.", attachmentName: "files.bin")

    public init(subject: String, body: String, attachmentName: String) {
        self.subject = subject
        self.body = body
        self.attachmentName = attachmentName
    }
}

/// Courier mails (RFC 5322 with MIME, RFC 2045-2046): one envelope chunk as
/// a base64 attachment of a multipart/mixed mail, next to a text part.
/// Pure: bytes in, bytes out.
public enum MailFormat {
    /// The mail carrying `chunk`. Header texts are encoded (RFC 2047) when
    /// they are not plain ASCII; the body part is UTF-8 in base64 then.
    public static func compose(chunk: [UInt8], from: String, to: String, disguise: MailDisguise, date: Date = Date()) -> [UInt8] {
        let boundary = "=_" + Hex.encode(SecureRandom.bytes(12))
        let domain = from.split(separator: "@").last.map(String.init) ?? "localhost"
        var lines = [
            "From: \(from)",
            "To: \(to)",
            "Subject: \(encodedWord(disguise.subject))",
            "Date: \(rfc5322Date(date))",
            "Message-ID: <\(Hex.encode(SecureRandom.bytes(16)))@\(domain)>",
            "MIME-Version: 1.0",
            "Content-Type: multipart/mixed; boundary=\"\(boundary)\"",
            "",
            "--\(boundary)",
        ]
        if disguise.body.utf8.allSatisfy({ $0 < 0x80 }) {
            lines += ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit", "", disguise.body]
        } else {
            lines += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: base64", ""]
            lines += wrapped(Base64.encode(Array(disguise.body.utf8)))
        }
        let name = encodedWord(disguise.attachmentName)
        lines += [
            "--\(boundary)",
            "Content-Type: application/octet-stream; name=\"\(name)\"",
            "Content-Disposition: attachment; filename=\"\(name)\"",
            "Content-Transfer-Encoding: base64",
            "",
        ]
        lines += wrapped(Base64.encode(chunk))
        lines += ["--\(boundary)--", ""]
        return Array(lines.joined(separator: "\r\n").utf8)
    }

    /// The chunk a courier mail carries: the first base64 attachment of a
    /// multipart mail. Nil for any other mail (a newsletter, spam, a mail
    /// cut short), which the courier then leaves alone.
    public static func chunk(fromMail mail: [UInt8]) -> [UInt8]? {
        let (headers, body) = split(mail)
        guard let type = headers["content-type"], type.lowercased().hasPrefix("multipart/"),
              let boundary = parameter("boundary", in: type) else { return nil }
        for part in parts(of: body, boundary: boundary) {
            let (partHeaders, partBody) = split(part)
            guard partHeaders["content-transfer-encoding"]?.lowercased() == "base64",
                  partHeaders["content-disposition"]?.lowercased().hasPrefix("attachment") ?? false else { continue }
            let text = partBody.filter { !(0x09...0x0D).contains($0) && $0 != 0x20 }
            return text.isEmpty ? [] : Base64.decode(String(decoding: text, as: UTF8.self))
        }
        return nil
    }

    // MARK: Parsing helpers

    /// Header fields (lowercased names → unfolded values, the first of each name) and the body.
    static func split(_ message: [UInt8]) -> ([String: String], [UInt8]) {
        var headers: [String: String] = [:]
        var current: (name: String, value: String)?
        var index = 0
        func flush() {
            if let field = current, headers[field.name] == nil { headers[field.name] = field.value.trimmingCharacters(in: .whitespaces) }
            current = nil
        }
        while index < message.count {
            let end = message[index...].firstIndex(of: 0x0A) ?? message.count
            var line = message[index..<end]
            if line.last == 0x0D { line = line.dropLast() }
            index = end + 1
            if line.isEmpty {
                flush()
                return (headers, index < message.count ? Array(message[index...]) : [])
            }
            if line.first == 0x20 || line.first == 0x09 {
                current?.value += " " + String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespaces)
                continue
            }
            flush()
            guard let colon = line.firstIndex(of: 0x3A) else { continue }
            current = (String(decoding: line[..<colon], as: UTF8.self).lowercased().trimmingCharacters(in: .whitespaces),
                       String(decoding: line[(colon + 1)...], as: UTF8.self))
        }
        flush()
        return (headers, [])
    }

    /// The bodies between "--boundary" lines, up to "--boundary--".
    static func parts(of body: [UInt8], boundary: String) -> [[UInt8]] {
        let delimiter = Array("--\(boundary)".utf8)
        var parts: [[UInt8]] = []
        var current: [UInt8]?
        var index = 0
        while index < body.count {
            let end = body[index...].firstIndex(of: 0x0A) ?? body.count
            var line = Array(body[index..<min(end + 1, body.count)])
            index = end + 1
            var bare = line
            while let last = bare.last, last == 0x0A || last == 0x0D || last == 0x20 || last == 0x09 { bare.removeLast() }
            if bare.starts(with: delimiter) {
                if let current { parts.append(current) }
                if bare == delimiter + [0x2D, 0x2D] { return parts }
                current = bare == delimiter ? [] : nil
                continue
            }
            if current != nil {
                if line.last != 0x0A { line.append(0x0A) }
                current! += line
            }
        }
        return parts
    }

    /// A parameter of a structured header: `boundary="x"` in `multipart/mixed; boundary="x"`.
    static func parameter(_ name: String, in header: String) -> String? {
        for piece in header.split(separator: ";").dropFirst() {
            let pair = piece.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, pair[0].trimmingCharacters(in: .whitespaces).lowercased() == name else { continue }
            var value = pair[1].trimmingCharacters(in: .whitespaces)
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = String(value.dropFirst().dropLast()) }
            return value.isEmpty ? nil : value
        }
        return nil
    }

    // MARK: Writing helpers

    /// `text` as is when it is printable ASCII, else one RFC 2047 encoded word per 45 bytes.
    static func encodedWord(_ text: String) -> String {
        if text.utf8.allSatisfy({ (0x20..<0x7F).contains($0) && $0 != 0x22 }) { return text }
        var words: [String] = []
        var piece: [UInt8] = []
        for character in text {
            let bytes = Array(String(character).utf8)
            if piece.count + bytes.count > 45 {
                words.append("=?utf-8?B?" + Base64.encode(piece) + "?=")
                piece = []
            }
            piece += bytes
        }
        if !piece.isEmpty { words.append("=?utf-8?B?" + Base64.encode(piece) + "?=") }
        return words.joined(separator: " ")
    }

    static func wrapped(_ text: String) -> [String] {
        let characters = Array(text.utf8)
        return stride(from: 0, to: characters.count, by: 76).map {
            String(decoding: characters[$0..<min($0 + 76, characters.count)], as: UTF8.self)
        }
    }

    /// "Sat, 21 Nov 2026 17:31:11 +0000"
    static func rfc5322Date(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss Z"
        return formatter.string(from: date)
    }
}
