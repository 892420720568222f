import CQREncode
import CZlib

/// A QR code made with Debian's libqrencode, drawn for terminals.
public struct QRCode: Sendable {
    public let width: Int
    /// Row-major modules, true = dark.
    public let modules: [Bool]

    public enum QRError: Error, CustomStringConvertible {
        case tooLong(Int)
        public var description: String {
            switch self {
            case .tooLong(let n): return "the text (\(n) bytes) is too long for a QR code"
            }
        }
    }

    public init(_ text: String) throws {
        guard let code = QRcode_encodeString8bit(text, 0, QR_ECLEVEL_M) else {
            throw QRError.tooLong(text.utf8.count)
        }
        defer { QRcode_free(code) }
        let width = Int(code.pointee.width)
        self.width = width
        self.modules = (0..<(width * width)).map { code.pointee.data[$0] & 1 == 1 }
    }

    public func isDark(_ x: Int, _ y: Int) -> Bool {
        guard x >= 0, y >= 0, x < width, y < width else { return false }
        return modules[y * width + x]
    }

    /// Two module rows per text line with half-block characters, black on
    /// an explicit white background (so it scans on dark and light
    /// terminals), with the four-module quiet zone the standard asks for.
    public var terminalString: String {
        let quiet = 4
        var lines: [String] = []
        var y = -quiet
        while y < width + quiet {
            var line = "\u{1b}[30;47m"
            for x in -quiet..<(width + quiet) {
                switch (isDark(x, y), isDark(x, y + 1)) {
                case (true, true): line += "█"
                case (true, false): line += "▀"
                case (false, true): line += "▄"
                case (false, false): line += " "
                }
            }
            line += "\u{1b}[0m"
            lines.append(line)
            y += 2
        }
        return lines.joined(separator: "\n")
    }
}

extension QRCode {
    /// The code as a PNG file (1-bit grayscale, black on white), `scale`
    /// pixels per module, with the four-module quiet zone: for invites that
    /// travel as pictures (phone galleries, messengers).
    public func png(scale: Int = 8) -> [UInt8] {
        let quiet = 4
        let scale = max(1, scale)
        let size = (width + 2 * quiet) * scale
        let rowBytes = (size + 7) / 8
        var raw: [UInt8] = []
        raw.reserveCapacity((rowBytes + 1) * size)
        for py in 0..<size {
            raw.append(0) // filter: none
            var row = [UInt8](repeating: 0xFF, count: rowBytes)
            for px in 0..<size where isDark(px / scale - quiet, py / scale - quiet) {
                row[px / 8] &= ~(0x80 >> UInt8(px % 8))
            }
            raw += row
        }
        var header: [UInt8] = []
        for value in [UInt32(size), UInt32(size)] { header += Self.bigEndian(value) }
        header += [1, 0, 0, 0, 0] // bit depth 1, grayscale, deflate, adaptive filtering, no interlace
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
            + Self.chunk("IHDR", header) + Self.chunk("IDAT", Self.zlib(raw)) + Self.chunk("IEND", [])
    }

    static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }

    /// length | type | data | CRC-32 of type and data (PNG section 5.3).
    static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let typed = Array(type.utf8) + data
        let crc = typed.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, uInt($0.count))) }
        return bigEndian(UInt32(data.count)) + typed + bigEndian(crc)
    }

    /// zlib-wrapped DEFLATE (RFC 1950), as PNG's IDAT wants.
    static func zlib(_ data: [UInt8]) -> [UInt8] {
        var length = compressBound(uLong(data.count))
        var out = [UInt8](repeating: 0, count: Int(length))
        let status = compress2(&out, &length, data, uLong(data.count), Z_BEST_COMPRESSION)
        precondition(status == Z_OK, "zlib compress2 failed (\(status))")
        return Array(out.prefix(Int(length)))
    }
}
