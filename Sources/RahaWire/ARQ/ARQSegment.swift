/// One datagram of Raha's ARQ layer: the reliability layer that turns an
/// unreliable, duplicating, reordering datagram channel (DNS queries and
/// answers through recursive resolvers) into one ordered byte stream each way.
///
/// Wire format (big-endian, 20 bytes of header, then blocks, then payload):
///
///     segment  := session (u64) | flags (u8) | sequence (u32) | ack (u32)
///                 | window (u16) | block count (u8) | block* | payload
///     block    := gap (varint) | length (varint)
///
/// - `session` is chosen by the client at random and names the connection;
///   a segment with another session is not ours and is ignored. The two
///   byte streams start at sequence numbers taken from it: the client's at
///   its low 32 bits, the server's at its high 32 bits.
/// - `flags`: `fin` (the sender's stream ends after this payload; the FIN
///   takes one sequence number, after the last byte), `reset` (abort both
///   ways), `poll` (from the polling side: this segment carries nothing but
///   a chance to answer), `more` (from the answering side: poll again, I
///   have more to send). Unknown bits are malformed. A segment carries data
///   when its payload is not empty; it is ack-only when it carries neither
///   data nor FIN (see `isAckOnly`).
/// - `sequence` is the sequence number of the first payload byte: sequence
///   numbers count bytes, so a retransmission may be cut to a smaller
///   budget than the original. All sequence arithmetic is modulo 2^32.
/// - `ack` is cumulative: the next sequence number the sender expects. It
///   is always valid (before any data it is the peer's starting number).
/// - `window` is the receive window beyond `ack`, in units of 64 bytes.
/// - Each block is a selective acknowledgement: bytes received above a hole.
///   Blocks are ascending; the first gap counts from `ack`, each later gap
///   from the end of the block before. Lengths are at least 1, and the
///   blocks span less than 2^31 sequence numbers from `ack`. A varint is
///   LEB128, at most 5 bytes, at most 2^32 - 1.
/// - The payload is the rest of the datagram (the datagram gives its length).
public struct ARQSegment: Hashable, Sendable {
    public struct Flags: OptionSet, Hashable, Sendable {
        public var rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let fin = Flags(rawValue: 0x01)
        public static let reset = Flags(rawValue: 0x02)
        public static let poll = Flags(rawValue: 0x04)
        public static let more = Flags(rawValue: 0x08)
        static let known: Flags = [.fin, .reset, .poll, .more]
    }

    /// Received bytes `start ..< end` (modulo 2^32) above the cumulative ack.
    public struct Block: Hashable, Sendable {
        public var start: UInt32
        public var end: UInt32
        public init(start: UInt32, end: UInt32) {
            self.start = start
            self.end = end
        }
    }

    public static let headerLength = 20
    /// Bytes per unit of the window field.
    public static let windowUnit = 64
    /// Blocks a decoder accepts in one segment.
    public static let maxBlocks = 64

    public var session: UInt64
    public var flags: Flags
    public var sequence: UInt32
    public var acknowledgement: UInt32
    public var window: UInt16
    public var blocks: [Block]
    public var payload: [UInt8]

    public init(session: UInt64, flags: Flags = [], sequence: UInt32, acknowledgement: UInt32, window: UInt16, blocks: [Block] = [], payload: [UInt8] = []) {
        self.session = session
        self.flags = flags
        self.sequence = sequence
        self.acknowledgement = acknowledgement
        self.window = window
        self.blocks = blocks
        self.payload = payload
    }

    public var carriesData: Bool { !payload.isEmpty }
    /// Neither data nor FIN nor RESET: an acknowledgement (or poll) only.
    public var isAckOnly: Bool { payload.isEmpty && flags.isDisjoint(with: [.fin, .reset]) }
    /// The window in bytes.
    public var windowBytes: Int { Int(window) * Self.windowUnit }

    /// Bytes the blocks take on the wire.
    public static func encodedLength(of blocks: [Block], acknowledgement: UInt32) -> Int {
        var total = 0
        var previous = acknowledgement
        for block in blocks {
            total += varintLength(block.start &- previous) + varintLength(block.end &- block.start)
            previous = block.end
        }
        return total
    }

    public var encodedLength: Int {
        Self.headerLength + Self.encodedLength(of: blocks, acknowledgement: acknowledgement) + payload.count
    }

    public func encoded() -> [UInt8] {
        precondition(blocks.count <= Self.maxBlocks, "an ARQ segment holds at most \(Self.maxBlocks) blocks")
        var out: [UInt8] = []
        out.reserveCapacity(encodedLength)
        append(session, to: &out)
        out.append(flags.rawValue)
        append(sequence, to: &out)
        append(acknowledgement, to: &out)
        append(window, to: &out)
        out.append(UInt8(blocks.count))
        var previous = acknowledgement
        for block in blocks {
            Self.appendVarint(block.start &- previous, to: &out)
            Self.appendVarint(block.end &- block.start, to: &out)
            previous = block.end
        }
        out += payload
        return out
    }

    /// Decodes one whole datagram. Throws `WireError` for anything that
    /// does not follow the format; never traps.
    public init(decoding bytes: [UInt8]) throws {
        var reader = Reader(bytes: bytes)
        guard bytes.count >= Self.headerLength else {
            throw WireError.malformed("an ARQ segment has a \(Self.headerLength)-byte header; got \(bytes.count) bytes")
        }
        session = reader.integer(as: UInt64.self)
        flags = Flags(rawValue: reader.integer(as: UInt8.self))
        guard Flags.known.isSuperset(of: flags) else {
            throw WireError.malformed("an ARQ segment has unknown flags \(flags.rawValue)")
        }
        sequence = reader.integer(as: UInt32.self)
        acknowledgement = reader.integer(as: UInt32.self)
        window = reader.integer(as: UInt16.self)
        let count = Int(reader.integer(as: UInt8.self))
        guard count <= Self.maxBlocks else {
            throw WireError.malformed("an ARQ segment has \(count) ack blocks; at most \(Self.maxBlocks)")
        }
        blocks = []
        var offset: UInt64 = 0
        for _ in 0 ..< count {
            let gap = try reader.varint()
            let length = try reader.varint()
            guard length > 0 else { throw WireError.malformed("an ARQ ack block is empty") }
            let start = offset + UInt64(gap)
            offset = start + UInt64(length)
            guard offset < 1 << 31 else { throw WireError.malformed("ARQ ack blocks reach too far beyond the cumulative ack") }
            blocks.append(Block(start: acknowledgement &+ UInt32(start), end: acknowledgement &+ UInt32(offset)))
        }
        payload = Array(bytes[reader.index...])
    }

    private func append<T: FixedWidthInteger>(_ value: T, to out: inout [UInt8]) {
        var big = value.bigEndian
        withUnsafeBytes(of: &big) { out.append(contentsOf: $0) }
    }

    static func varintLength(_ value: UInt32) -> Int {
        var n = 1
        var v = value >> 7
        while v != 0 { n += 1; v >>= 7 }
        return n
    }

    static func appendVarint(_ value: UInt32, to out: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    private struct Reader {
        let bytes: [UInt8]
        var index = 0

        /// Only for the fixed header, whose length was checked.
        mutating func integer<T: FixedWidthInteger>(as: T.Type) -> T {
            var value: T = 0
            for _ in 0 ..< MemoryLayout<T>.size {
                value = value << 8 | T(bytes[index])
                index += 1
            }
            return value
        }

        mutating func varint() throws -> UInt32 {
            var value: UInt64 = 0
            for shift in stride(from: 0, to: 35, by: 7) {
                guard index < bytes.count else { throw WireError.malformed("an ARQ ack block is cut short") }
                let byte = bytes[index]
                index += 1
                value |= UInt64(byte & 0x7F) << UInt64(shift)
                if byte & 0x80 == 0 {
                    guard value <= UInt64(UInt32.max) else { break }
                    return UInt32(value)
                }
            }
            throw WireError.malformed("an ARQ varint is longer than 32 bits")
        }
    }
}
