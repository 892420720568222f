/// Base16: bytes as lowercase hex digits, and back (either case).
public enum Hex {
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes, or nil for an odd count of digits or a character that is not one.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        var out: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let a = iterator.next() {
            guard let b = iterator.next(), let high = URIText.hexValue(a), let low = URIText.hexValue(b) else { return nil }
            out.append(high << 4 | low)
        }
        return out
    }
}
