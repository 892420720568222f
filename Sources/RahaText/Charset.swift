import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Turns a page's bytes into text: the charset from a byte-order mark, the
/// HTTP Content-Type, or the page's own <meta> (in its first 2 KB), else
/// UTF-8 if the bytes are valid UTF-8, else windows-1252 (as browsers do).
/// Other charsets (windows-1256 and ISO-8859-6 for Persian and Arabic
/// pages, KOI8-R, Shift_JIS, …) go through the C library's iconv.
public enum Charset {
    public static func decode(_ bytes: [UInt8], contentType: String? = nil) -> String {
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { return String(decoding: bytes.dropFirst(3), as: UTF8.self) }
        if bytes.starts(with: [0xFF, 0xFE]) { return convert(Array(bytes.dropFirst(2)), from: "UTF-16LE") ?? String(decoding: bytes, as: UTF8.self) }
        if bytes.starts(with: [0xFE, 0xFF]) { return convert(Array(bytes.dropFirst(2)), from: "UTF-16BE") ?? String(decoding: bytes, as: UTF8.self) }
        let declared = contentType.flatMap(charset(inContentType:)) ?? sniffMeta(bytes)
        if let declared, !["utf-8", "utf8", "us-ascii", "ascii"].contains(declared) {
            // Latin-1 is windows-1252 on the web (WHATWG Encoding).
            let name = ["iso-8859-1", "latin1", "l1"].contains(declared) ? "WINDOWS-1252" : declared.uppercased()
            if let text = convert(bytes, from: name) { return text }
        }
        if !bytes.contains(0), let text = String(validating: bytes, as: UTF8.self) { return text }
        if declared == nil, let text = convert(bytes, from: "WINDOWS-1252") { return text }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// "text/html; charset=windows-1256" → "windows-1256".
    static func charset(inContentType value: String) -> String? {
        for part in value.split(separator: ";").dropFirst() {
            let pair = part.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, pair[0].trimmingCharacters(in: .whitespaces).lowercased() == "charset" else { continue }
            let name = pair[1].trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\"'")).lowercased()
            return name.isEmpty ? nil : name
        }
        return nil
    }

    /// The charset a <meta> in the first 2 KB declares.
    static func sniffMeta(_ bytes: [UInt8]) -> String? {
        let head = String(decoding: bytes.prefix(2048), as: UTF8.self).lowercased()
        guard let range = head.range(of: "charset=") else { return nil }
        var name = ""
        for character in head[range.upperBound...].drop(while: { $0 == "\"" || $0 == "'" }) {
            guard character.isLetter || character.isNumber || character == "-" || character == "_" else { break }
            name.append(character)
        }
        return name.isEmpty ? nil : name
    }

    /// iconv from `charset` to UTF-8; nil if the charset is unknown or the bytes are not in it.
    static func convert(_ bytes: [UInt8], from charset: String) -> String? {
        let converter = iconv_open("UTF-8", charset)
        guard converter != iconv_t(bitPattern: -1) else { return nil }
        defer { iconv_close(converter) }
        var input = bytes.map { CChar(bitPattern: $0) }
        var output = [CChar](repeating: 0, count: bytes.count * 4 + 16)
        var inLeft = input.count
        var outLeft = output.count
        let result: Int = input.withUnsafeMutableBufferPointer { inBuffer in
            output.withUnsafeMutableBufferPointer { outBuffer in
                var inPointer: UnsafeMutablePointer<CChar>? = inBuffer.baseAddress
                var outPointer: UnsafeMutablePointer<CChar>? = outBuffer.baseAddress
                return iconv(converter, &inPointer, &inLeft, &outPointer, &outLeft)
            }
        }
        guard result != -1, inLeft == 0 else { return nil }
        let produced = output.count - outLeft
        return String(decoding: output[..<produced].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
