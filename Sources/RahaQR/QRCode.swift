import CQREncode

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
