/// One piece of a sealed envelope, for channels that carry small messages
/// (a mail of a few hundred KB, a DNS tunnel's datagram):
///
///     chunk := id (16) | index (u16) | count (u16) | bytes
///
/// `id` is random per envelope and names its pieces; `index` counts from 0
/// to `count` - 1. Chunks may arrive in any order, more than once, or mixed
/// with other envelopes' chunks.
public struct EnvelopeChunk: Hashable, Sendable {
    public static let idLength = 16
    public static let headerLength = idLength + 4
    /// Pieces one envelope may be cut into at most.
    public static let maximumCount = 4096

    public var id: [UInt8]
    public var index: Int
    public var count: Int
    public var bytes: [UInt8]

    public init(id: [UInt8], index: Int, count: Int, bytes: [UInt8]) {
        precondition(id.count == Self.idLength && (1...Self.maximumCount).contains(count) && (0..<count).contains(index))
        self.id = id
        self.index = index
        self.count = count
        self.bytes = bytes
    }

    public init(parsing data: [UInt8]) throws {
        guard data.count >= Self.headerLength else {
            throw WireError.malformed("an envelope chunk is at least \(Self.headerLength) bytes; this one has \(data.count)")
        }
        let index = Int(data[16]) << 8 | Int(data[17])
        let count = Int(data[18]) << 8 | Int(data[19])
        guard (1...Self.maximumCount).contains(count), index < count else {
            throw WireError.malformed("an envelope chunk says it is piece \(index + 1) of \(count)")
        }
        self.init(id: Array(data[0..<16]), index: index, count: count, bytes: Array(data[Self.headerLength...]))
    }

    public var serialized: [UInt8] {
        id + [UInt8(index >> 8), UInt8(index & 0xFF), UInt8(count >> 8), UInt8(count & 0xFF)] + bytes
    }

    /// `envelope` in pieces of at most `size` bytes each (at least 1), under one fresh random id.
    public static func split(_ envelope: [UInt8], size: Int) throws -> [EnvelopeChunk] {
        let size = max(1, size)
        let count = max(1, (envelope.count + size - 1) / size)
        guard count <= maximumCount else {
            throw WireError.tooLarge("an envelope of \(envelope.count) bytes would take \(count) pieces of \(size) bytes; at most \(maximumCount) are allowed: send less or allow larger pieces")
        }
        let id = SecureRandom.bytes(idLength)
        return (0..<count).map { index in
            EnvelopeChunk(id: id, index: index, count: count,
                          bytes: Array(envelope[(index * size)..<min(envelope.count, (index + 1) * size)]))
        }
    }
}

/// Puts envelopes back together from their chunks, in memory. Pure.
public struct EnvelopeAssembler: Sendable {
    public let maximumEnvelopeSize: Int
    /// Envelopes being assembled at most; the oldest is dropped beyond it.
    public let maximumPending: Int

    private struct Pending: Sendable {
        var count: Int
        var pieces: [Int: [UInt8]] = [:]
        var size = 0
    }

    private var pending: [[UInt8]: Pending] = [:]
    private var order: [[UInt8]] = []

    public init(maximumEnvelopeSize: Int, maximumPending: Int = 256) {
        self.maximumEnvelopeSize = maximumEnvelopeSize
        self.maximumPending = maximumPending
    }

    /// Envelopes with some but not all pieces.
    public var pendingCount: Int { pending.count }

    /// The whole envelope when `chunk` was its last missing piece, else nil.
    /// A piece seen before is ignored. Throws for a chunk that disagrees with
    /// its envelope's earlier ones on the count, or an envelope that grows
    /// beyond `maximumEnvelopeSize` (it is dropped).
    public mutating func add(_ chunk: EnvelopeChunk) throws -> [UInt8]? {
        if chunk.count == 1 {
            guard chunk.bytes.count <= maximumEnvelopeSize else {
                throw WireError.tooLarge("an envelope of \(chunk.bytes.count) bytes is larger than the \(maximumEnvelopeSize) allowed")
            }
            return chunk.bytes
        }
        var entry = pending[chunk.id] ?? Pending(count: chunk.count)
        guard entry.count == chunk.count else {
            throw WireError.malformed("a piece of an envelope says it has \(chunk.count) pieces; earlier ones said \(entry.count)")
        }
        guard entry.pieces[chunk.index] == nil else { return nil }
        entry.pieces[chunk.index] = chunk.bytes
        entry.size += chunk.bytes.count
        guard entry.size <= maximumEnvelopeSize else {
            drop(chunk.id)
            throw WireError.tooLarge("an envelope grew beyond the \(maximumEnvelopeSize) bytes allowed; its pieces were dropped")
        }
        if entry.pieces.count == entry.count {
            drop(chunk.id)
            return (0..<entry.count).flatMap { entry.pieces[$0]! }
        }
        if pending[chunk.id] == nil {
            order.append(chunk.id)
            if order.count > maximumPending { drop(order[0]) }
        }
        pending[chunk.id] = entry
        return nil
    }

    private mutating func drop(_ id: [UInt8]) {
        pending[id] = nil
        order.removeAll { $0 == id }
    }
}
