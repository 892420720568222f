/// BLAKE3 (hash, keyed hash, key derivation, with extendable output), written
/// from the BLAKE3 specification (O'Connor, Aumasson, Neves, Wilcox-O'Hearn, 2020).
///
/// This is a one-shot implementation: the whole input is available up front, so
/// the chunk tree is built by recursive splitting (the left subtree always holds
/// the largest power-of-two number of whole chunks that leaves at least one byte
/// for the right). It works on 32-bit words held in SIMD vectors, so hashing
/// allocates nothing per block; the only allocations are the output array and,
/// for inputs that are not contiguous in memory, one copy of the input.
///
/// Shadowsocks 2022 (SIP022) uses `deriveKey(context: "shadowsocks 2022 session subkey",
/// material: psk + salt)` for its session subkeys.
public enum BLAKE3 {
    /// The default output length in bytes.
    public static let defaultOutputLength = 32
    /// The key length of `keyedHash` in bytes.
    public static let keyLength = 32

    /// The plain BLAKE3 hash of `input`, `outputLength` bytes long (any length:
    /// longer outputs extend shorter ones).
    public static func hash<C: Collection>(_ input: C, outputLength: Int = 32) -> [UInt8] where C.Element == UInt8 {
        withBytes(input) { run($0, key: iv, flags: 0, outputLength: outputLength) }
    }

    /// The keyed BLAKE3 hash (a MAC / PRF) of `input` under a 32-byte `key`.
    public static func keyedHash<C: Collection>(key: [UInt8], _ input: C, outputLength: Int = 32) -> [UInt8] where C.Element == UInt8 {
        precondition(key.count == keyLength, "BLAKE3.keyedHash needs a 32-byte key, got \(key.count) bytes")
        let keyWords = key.withUnsafeBytes { words8(from: $0, at: 0) }
        return withBytes(input) { run($0, key: keyWords, flags: Flag.keyedHash, outputLength: outputLength) }
    }

    /// BLAKE3 key derivation: a key for the purpose named by `context` (a
    /// hard-coded, globally unique, application-specific string) from `material`.
    public static func deriveKey<C: Collection>(context: String, material: C, outputLength: Int = 32) -> [UInt8] where C.Element == UInt8 {
        let contextKey = withBytes(context.utf8) {
            run($0, key: iv, flags: Flag.deriveKeyContext, outputLength: 32)
        }
        let keyWords = contextKey.withUnsafeBytes { words8(from: $0, at: 0) }
        return withBytes(material) { run($0, key: keyWords, flags: Flag.deriveKeyMaterial, outputLength: outputLength) }
    }

    // MARK: - Constants

    static let blockLength = 64
    static let chunkLength = 1024

    enum Flag {
        static let chunkStart: UInt32 = 1 << 0
        static let chunkEnd: UInt32 = 1 << 1
        static let parent: UInt32 = 1 << 2
        static let root: UInt32 = 1 << 3
        static let keyedHash: UInt32 = 1 << 4
        static let deriveKeyContext: UInt32 = 1 << 5
        static let deriveKeyMaterial: UInt32 = 1 << 6
    }

    /// The initialisation vector: the same eight words as SHA-256's.
    static let iv = SIMD8<UInt32>(
        0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A,
        0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19
    )

    // MARK: - Input and word helpers

    /// Calls `body` with the input's bytes, copying only when the collection
    /// has no contiguous storage.
    private static func withBytes<C: Collection, R>(_ input: C, _ body: (UnsafeRawBufferPointer) -> R) -> R where C.Element == UInt8 {
        if let result = input.withContiguousStorageIfAvailable({ body(UnsafeRawBufferPointer($0)) }) {
            return result
        }
        return Array(input).withUnsafeBytes(body)
    }

    @inline(__always)
    private static func word(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> UInt32 {
        UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    /// Eight little-endian words starting at `offset` (which must have 32 bytes after it).
    private static func words8(from bytes: UnsafeRawBufferPointer, at offset: Int) -> SIMD8<UInt32> {
        var out = SIMD8<UInt32>()
        for i in 0..<8 { out[i] = word(bytes, offset + 4 * i) }
        return out
    }

    /// One message block as sixteen little-endian words; a short final block is
    /// padded with zero bytes.
    private static func block(from bytes: UnsafeRawBufferPointer, at offset: Int, length: Int) -> SIMD16<UInt32> {
        var out = SIMD16<UInt32>()
        if length == blockLength {
            for i in 0..<16 { out[i] = word(bytes, offset + 4 * i) }
            return out
        }
        var padded: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &padded) { tmp in
            if length > 0 {
                tmp.baseAddress!.copyMemory(from: bytes.baseAddress! + offset, byteCount: length)
            }
            let view = UnsafeRawBufferPointer(tmp)
            for i in 0..<16 { out[i] = word(view, 4 * i) }
        }
        return out
    }

    // MARK: - Compression function

    @inline(__always)
    private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 {
        (x &>> n) | (x &<< (32 &- n))
    }

    /// The quarter-round mixing function G.
    @inline(__always)
    private static func g(_ a: inout UInt32, _ b: inout UInt32, _ c: inout UInt32, _ d: inout UInt32, _ x: UInt32, _ y: UInt32) {
        a = a &+ b &+ x
        d = rotr(d ^ a, 16)
        c = c &+ d
        b = rotr(b ^ c, 12)
        a = a &+ b &+ y
        d = rotr(d ^ a, 8)
        c = c &+ d
        b = rotr(b ^ c, 7)
    }

    /// The BLAKE3 compression function, returning all sixteen output words
    /// (the first eight are the new chaining value; all sixteen are used for
    /// root output).
    static func compress(cv: SIMD8<UInt32>, block m0: SIMD16<UInt32>, counter: UInt64, blockLength: UInt32, flags: UInt32) -> SIMD16<UInt32> {
        var v0 = cv[0], v1 = cv[1], v2 = cv[2], v3 = cv[3]
        var v4 = cv[4], v5 = cv[5], v6 = cv[6], v7 = cv[7]
        var v8 = iv[0], v9 = iv[1], v10 = iv[2], v11 = iv[3]
        var v12 = UInt32(truncatingIfNeeded: counter)
        var v13 = UInt32(truncatingIfNeeded: counter >> 32)
        var v14 = blockLength
        var v15 = flags
        var m = m0
        for round in 0..<7 {
            // Columns.
            g(&v0, &v4, &v8, &v12, m[0], m[1])
            g(&v1, &v5, &v9, &v13, m[2], m[3])
            g(&v2, &v6, &v10, &v14, m[4], m[5])
            g(&v3, &v7, &v11, &v15, m[6], m[7])
            // Diagonals.
            g(&v0, &v5, &v10, &v15, m[8], m[9])
            g(&v1, &v6, &v11, &v12, m[10], m[11])
            g(&v2, &v7, &v8, &v13, m[12], m[13])
            g(&v3, &v4, &v9, &v14, m[14], m[15])
            if round < 6 {
                // The fixed message word permutation between rounds.
                m = SIMD16(
                    m[2], m[6], m[3], m[10], m[7], m[0], m[4], m[13],
                    m[1], m[11], m[12], m[5], m[9], m[14], m[15], m[8]
                )
            }
        }
        return SIMD16(
            v0 ^ v8, v1 ^ v9, v2 ^ v10, v3 ^ v11,
            v4 ^ v12, v5 ^ v13, v6 ^ v14, v7 ^ v15,
            v8 ^ cv[0], v9 ^ cv[1], v10 ^ cv[2], v11 ^ cv[3],
            v12 ^ cv[4], v13 ^ cv[5], v14 ^ cv[6], v15 ^ cv[7]
        )
    }

    // MARK: - Tree

    /// A node whose compression has not yet been done: either it becomes a
    /// chaining value for its parent, or, for the root, the source of the
    /// extendable output.
    struct Output {
        var inputCV: SIMD8<UInt32>
        var block: SIMD16<UInt32>
        var counter: UInt64
        var blockLength: UInt32
        var flags: UInt32

        func chainingValue() -> SIMD8<UInt32> {
            let words = BLAKE3.compress(cv: inputCV, block: block, counter: counter, blockLength: blockLength, flags: flags)
            return words.lowHalf
        }

        func rootBytes(_ length: Int) -> [UInt8] {
            precondition(length >= 0, "BLAKE3 output length must not be negative")
            var out = [UInt8](repeating: 0, count: length)
            out.withUnsafeMutableBytes { dst in
                var produced = 0
                var blockCounter: UInt64 = 0
                while produced < length {
                    var words = BLAKE3.compress(cv: inputCV, block: block, counter: blockCounter, blockLength: blockLength, flags: flags | Flag.root)
                    for i in 0..<16 { words[i] = words[i].littleEndian }
                    let take = min(64, length - produced)
                    withUnsafeBytes(of: &words) { src in
                        (dst.baseAddress! + produced).copyMemory(from: src.baseAddress!, byteCount: take)
                    }
                    produced += take
                    blockCounter += 1
                }
            }
            return out
        }
    }

    /// The output node of one chunk (1...1024 bytes, or the empty input).
    private static func chunkOutput(_ bytes: UnsafeRawBufferPointer, offset: Int, length: Int, chunkCounter: UInt64, key: SIMD8<UInt32>, flags: UInt32) -> Output {
        var cv = key
        var position = offset
        var remaining = length
        var startFlag = Flag.chunkStart
        // Every block but the last updates the chaining value; the last block
        // (possibly short, possibly empty) is left to the caller.
        while remaining > blockLength {
            let m = block(from: bytes, at: position, length: blockLength)
            cv = compress(cv: cv, block: m, counter: chunkCounter, blockLength: UInt32(blockLength), flags: flags | startFlag).lowHalf
            startFlag = 0
            position += blockLength
            remaining -= blockLength
        }
        let last = block(from: bytes, at: position, length: remaining)
        return Output(inputCV: cv, block: last, counter: chunkCounter, blockLength: UInt32(remaining), flags: flags | startFlag | Flag.chunkEnd)
    }

    private static func parentOutput(left: SIMD8<UInt32>, right: SIMD8<UInt32>, key: SIMD8<UInt32>, flags: UInt32) -> Output {
        Output(inputCV: key, block: SIMD16(lowHalf: left, highHalf: right), counter: 0, blockLength: UInt32(blockLength), flags: flags | Flag.parent)
    }

    /// The output node of the subtree covering `length` bytes at `offset`,
    /// whose first chunk has index `chunkCounter`.
    private static func subtreeOutput(_ bytes: UnsafeRawBufferPointer, offset: Int, length: Int, chunkCounter: UInt64, key: SIMD8<UInt32>, flags: UInt32) -> Output {
        if length <= chunkLength {
            return chunkOutput(bytes, offset: offset, length: length, chunkCounter: chunkCounter, key: key, flags: flags)
        }
        // The left subtree takes the largest power of two of whole chunks that
        // still leaves at least one byte for the right subtree.
        let chunks = (length + chunkLength - 1) / chunkLength
        let leftChunks = 1 << (Int.bitWidth - 1 - (chunks - 1).leadingZeroBitCount)
        let leftLength = leftChunks * chunkLength
        let left = subtreeOutput(bytes, offset: offset, length: leftLength, chunkCounter: chunkCounter, key: key, flags: flags).chainingValue()
        let right = subtreeOutput(bytes, offset: offset + leftLength, length: length - leftLength,
                                  chunkCounter: chunkCounter + UInt64(leftChunks), key: key, flags: flags).chainingValue()
        return parentOutput(left: left, right: right, key: key, flags: flags)
    }

    private static func run(_ bytes: UnsafeRawBufferPointer, key: SIMD8<UInt32>, flags: UInt32, outputLength: Int) -> [UInt8] {
        precondition(outputLength >= 0, "BLAKE3 output length must not be negative")
        return subtreeOutput(bytes, offset: 0, length: bytes.count, chunkCounter: 0, key: key, flags: flags).rootBytes(outputLength)
    }
}
