/// How a DNS tunnel query name spells the bytes it carries: the entropy part
/// of query shaping. Detectors of DNS tunnels score how random a name's
/// characters look (character entropy, unusual letters, no vowels); the
/// lower-entropy spellings carry fewer bits per character, so a user trades
/// speed for names that look more like ordinary ones.
///
/// - `base32`: RFC 4648's alphabet in lowercase, 5 bits a character (the
///   default, the most per query; about 5 bits of character entropy).
/// - `hex`: 0-9a-f, 4 bits a character, like the hashes in CDN and
///   content-addressed names (4 bits of entropy).
/// - `syllables`: consonant and vowel in turn, from 16 consonants and 4
///   vowels (4 and 2 bits), so names are pronounceable like "gimolatuvi":
///   3 bits a character, no digits, a vowel every other letter (about 4 bits
///   of entropy, close to English text).
///
/// All three are a stream of characters cut into labels anywhere, decoded
/// without regard to letter case (resolvers may randomise it, 0x20 encoding).
/// A bridge reads every spelling; only the client chooses.
public enum DNSTunnelEncoding: String, CaseIterable, Hashable, Sendable {
    case base32
    case hex
    case syllables

    /// The alphabets the characters cycle through, each of a power-of-two size.
    private var pattern: [Alphabet] {
        switch self {
        case .base32: [Alphabet.base32]
        case .hex: [Alphabet.hex]
        case .syllables: [Alphabet.consonants, Alphabet.vowels]
        }
    }

    /// The characters this encoding writes (lowercase).
    public var characters: Set<UInt8> {
        Set(pattern.flatMap(\.symbols))
    }

    /// Bits carried by the first `characters` characters.
    private func bits(_ characters: Int) -> Int {
        let pattern = self.pattern
        let period = pattern.reduce(0) { $0 + $1.bits }
        return characters / pattern.count * period
            + pattern.prefix(characters % pattern.count).reduce(0) { $0 + $1.bits }
    }

    /// Characters for `count` bytes: the fewest that carry 8 × count bits.
    public func encodedLength(_ count: Int) -> Int {
        let pattern = self.pattern
        let period = pattern.reduce(0) { $0 + $1.bits }
        var characters = max(0, count * 8 / period - 1) * pattern.count
        while bits(characters) < count * 8 { characters += 1 }
        return characters
    }

    /// Bytes that `characters` characters decode to.
    public func decodedLength(_ characters: Int) -> Int {
        bits(characters) / 8
    }

    /// The bytes spelled out, high bits first; the last character is padded with zero bits.
    public func encode(_ bytes: [UInt8]) -> [UInt8] {
        let pattern = self.pattern
        var out: [UInt8] = []
        out.reserveCapacity(encodedLength(bytes.count))
        var accumulator: UInt32 = 0
        var bits = 0
        var index = bytes.startIndex
        while index < bytes.endIndex || bits > 0 {
            let alphabet = pattern[out.count % pattern.count]
            while bits < alphabet.bits, index < bytes.endIndex {
                accumulator = accumulator << 8 | UInt32(bytes[index])
                bits += 8
                index += 1
            }
            let take = min(bits, alphabet.bits)
            let value = (accumulator >> UInt32(bits - take)) << UInt32(alphabet.bits - take)
            bits -= take
            accumulator &= (1 << UInt32(bits)) - 1
            out.append(alphabet.symbols[Int(value)])
        }
        return out
    }

    /// The bytes, or nil for a character outside the alphabet its position
    /// calls for (either case), a length no byte count encodes to, or
    /// non-zero bits after the last byte: one spelling per byte string.
    public func decode(_ text: some Sequence<UInt8>) -> [UInt8]? {
        let pattern = self.pattern
        var out: [UInt8] = []
        var accumulator: UInt32 = 0
        var bits = 0
        var characters = 0
        for character in text {
            let alphabet = pattern[characters % pattern.count]
            guard let value = alphabet.value(of: character) else { return nil }
            characters += 1
            accumulator = accumulator << UInt32(alphabet.bits) | UInt32(value)
            bits += alphabet.bits
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                accumulator &= (1 << UInt32(bits)) - 1
            }
        }
        guard encodedLength(out.count) == characters, accumulator == 0 else { return nil }
        return out
    }

    /// One alphabet: its symbols (lowercase ASCII) and their reverse table.
    private struct Alphabet: Sendable {
        let symbols: [UInt8]
        let bits: Int
        private let values: [Int8]

        init(_ text: String) {
            symbols = Array(text.utf8)
            bits = symbols.count.trailingZeroBitCount
            precondition(1 << bits == symbols.count, "an alphabet's size must be a power of two")
            var values = [Int8](repeating: -1, count: 256)
            for (value, symbol) in symbols.enumerated() {
                values[Int(symbol)] = Int8(value)
                if (0x61...0x7A).contains(symbol) { values[Int(symbol - 0x20)] = Int8(value) }
            }
            self.values = values
        }

        func value(of character: UInt8) -> UInt8? {
            let value = values[Int(character)]
            return value < 0 ? nil : UInt8(value)
        }

        static let base32 = Alphabet("abcdefghijklmnopqrstuvwxyz234567")
        static let hex = Alphabet("0123456789abcdef")
        static let consonants = Alphabet("bdfghjklmnprstvz")
        static let vowels = Alphabet("aiou")
    }
}
