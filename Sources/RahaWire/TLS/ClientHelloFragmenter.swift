/// Splitting a TLS ClientHello so that a middlebox reading one TCP segment
/// or one TLS record at a time does not see the server name whole, as
/// Iranian users relied on in 2025 against SNI filtering.
///
/// Two independent techniques, both valid TLS that servers accept:
/// - record fragmentation: the handshake message is carried in several TLS
///   records (RFC 8446 section 5.1 allows handshake messages to span records);
/// - segmentation: the bytes are written as several TCP segments.
/// Both place a cut inside the server name when it can be found.
public enum ClientHelloFragmenter {
    /// The byte range of the SNI host name inside a TLS record holding a
    /// ClientHello, or nil if the record is not a ClientHello or has no SNI.
    /// With `partialRecord`, `record` may be the record's beginning only (a first
    /// TCP segment): the name is found if it lies whole within the bytes given.
    public static func serverNameRange(in record: [UInt8], partialRecord: Bool = false) -> Range<Int>? {
        var r = Reader(bytes: record)
        guard r.u8() == 0x16, r.skip(2), let recordLength = r.u16(), partialRecord || record.count >= 5 + recordLength,
              r.u8() == 0x01, r.skip(3),            // handshake type client_hello, length
              r.skip(2 + 32),                       // legacy_version, random
              let session = r.u8(), r.skip(Int(session)),
              let suites = r.u16(), r.skip(suites),
              let compression = r.u8(), r.skip(Int(compression)),
              let extensionsLength = r.u16() else { return nil }
        let end = min(r.offset + extensionsLength, 5 + recordLength, record.count)
        while r.offset + 4 <= end {
            guard let type = r.u16(), let length = r.u16() else { return nil }
            if type == 0 {
                // server_name: list length, then entries of type (0 = host_name), length, name.
                guard r.skip(2), r.u8() == 0, let nameLength = r.u16(), r.offset + nameLength <= end else { return nil }
                return r.offset..<(r.offset + nameLength)
            }
            guard r.skip(length) else { return nil }
        }
        return nil
    }

    /// Re-frames one TLS record as several records whose payloads are the
    /// given sizes (the last takes the rest). A cut is forced inside the
    /// server name if the sizes would not make one. Non-handshake input is returned unchanged.
    public static func splitRecords(_ record: [UInt8], sizes: [Int]) -> [UInt8] {
        guard record.count > 5, record[0] == 0x16 else { return record }
        let payload = Array(record[5...])
        var cuts = cutPoints(count: payload.count, sizes: sizes)
        if let name = serverNameRange(in: record), name.count >= 2 {
            let inside = (name.lowerBound - 5 + 1)..<(name.upperBound - 5)
            if !cuts.contains(where: { inside.contains($0) }) { cuts.append(inside.lowerBound + inside.count / 2) }
        }
        var out: [UInt8] = []
        var start = 0
        for cut in (cuts.sorted() + [payload.count]) where cut > start {
            let piece = payload[start..<cut]
            out += [record[0], record[1], record[2], UInt8(piece.count >> 8), UInt8(piece.count & 0xff)]
            out += piece
            start = cut
        }
        return out
    }

    /// Splits bytes into segments of sizes drawn from `sizes`, with one cut
    /// inside the server name when the bytes start with a ClientHello record.
    public static func segments(_ bytes: [UInt8], sizes: ClosedRange<Int>, using rng: inout some RandomNumberGenerator) -> [[UInt8]] {
        precondition(sizes.lowerBound >= 1)
        var cuts: [Int] = []
        var position = 0
        while true {
            position += Int.random(in: sizes, using: &rng)
            guard position < bytes.count else { break }
            cuts.append(position)
        }
        if let name = serverNameRange(in: bytes), name.count >= 2 {
            let inside = (name.lowerBound + 1)..<name.upperBound
            if !cuts.contains(where: { inside.contains($0) }) { cuts.append(inside.lowerBound + inside.count / 2) }
        }
        var out: [[UInt8]] = []
        var start = 0
        for cut in cuts.sorted() + [bytes.count] where cut > start {
            out.append(Array(bytes[start..<cut]))
            start = cut
        }
        return out
    }

    private static func cutPoints(count: Int, sizes: [Int]) -> [Int] {
        var cuts: [Int] = []
        var position = 0
        for size in sizes where size > 0 {
            position += size
            guard position < count else { break }
            cuts.append(position)
        }
        return cuts
    }

    /// A bounds-checked big-endian reader.
    private struct Reader {
        let bytes: [UInt8]
        var offset = 0
        mutating func u8() -> UInt8? {
            guard offset < bytes.count else { return nil }
            defer { offset += 1 }
            return bytes[offset]
        }
        mutating func u16() -> Int? {
            guard offset + 2 <= bytes.count else { return nil }
            defer { offset += 2 }
            return Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
        }
        mutating func skip(_ n: Int) -> Bool {
            guard n >= 0, offset + n <= bytes.count else { return false }
            offset += n
            return true
        }
    }
}
