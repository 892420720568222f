import Crypto
import Foundation
import NIOFoundationCompat
import NIOCore

/// Constants of the Shadowsocks stream formats.
public enum ShadowsocksStream {
    /// Largest payload in one chunk: 0x3FFF for legacy AEAD, 0xFFFF for 2022.
    public static func maxPayload(_ method: ShadowsocksMethod) -> Int { method.is2022 ? 0xFFFF : 0x3FFF }
    /// SIP022: messages more than this many seconds away from our clock are replays.
    public static let maxClockSkew: UInt64 = 30
    /// SIP022: padding added to a request header without initial payload.
    public static let maxPadding = 900
    static let tag = AEADStreamCipher.tagLength
}

/// Reads one direction of a stream: the salt, then sealed chunks of a length
/// that the caller names.
///
/// Chunks are opened where they lie in the input buffer; only a chunk that
/// straddles two reads is copied, into `carried`, so the bulk of a stream is
/// never copied before decryption.
struct SealedChunkReader {
    let credential: ShadowsocksCredential
    private(set) var salt: [UInt8]?
    private var cipher: AEADStreamCipher?
    /// The latest input, read in place.
    private var current = ByteBuffer()
    /// The start of a chunk whose end has not arrived yet.
    private var carried = ByteBuffer()

    init(credential: ShadowsocksCredential) { self.credential = credential }

    mutating func append(_ bytes: inout ByteBuffer) {
        if current.readableBytes == 0 {
            current = bytes
        } else {
            current.writeBuffer(&bytes)
        }
        bytes.moveReaderIndex(to: bytes.writerIndex)
    }

    /// The next `count` bytes, or nil (carrying what there is) until they have all arrived.
    private mutating func take(_ count: Int) -> ByteBuffer? {
        if carried.readableBytes == 0, let slice = current.readSlice(length: count) {
            return slice
        }
        let missing = count - carried.readableBytes
        guard var rest = current.readSlice(length: missing) else {
            carried.writeBuffer(&current)
            return nil
        }
        carried.writeBuffer(&rest)
        defer { carried = ByteBuffer() }
        return carried
    }

    /// Reads the salt; nil until all of it has arrived.
    mutating func readSalt() -> [UInt8]? {
        if let salt { return salt }
        guard var bytes = take(credential.method.saltLength) else { return nil }
        let s = bytes.readBytes(length: bytes.readableBytes)!
        salt = s
        cipher = AEADStreamCipher(method: credential.method, key: credential.subkey(salt: s))
        return s
    }

    /// Opens the next chunk of `length` plaintext bytes, or nil when it has not all arrived.
    mutating func readChunk(length: Int) throws -> [UInt8]? {
        precondition(cipher != nil, "readSalt first")
        guard let sealed = take(length + ShadowsocksStream.tag) else { return nil }
        return try cipher!.open(sealed.readableBytesView)
    }

    /// Opens the next chunk of `length` plaintext bytes straight into `out`;
    /// false when it has not all arrived.
    mutating func readChunk(length: Int, into out: inout ByteBuffer) throws -> Bool {
        precondition(cipher != nil, "readSalt first")
        guard let sealed = take(length + ShadowsocksStream.tag) else { return false }
        try sealed.withUnsafeReadableBytes { try cipher!.open($0, into: &out) }
        return true
    }

    /// Opens a two-byte length chunk.
    mutating func readLength() throws -> Int? {
        guard let b = try readChunk(length: 2) else { return nil }
        return Int(b[0]) << 8 | Int(b[1])
    }
}

/// Writes one direction of a stream: the salt once, then length and payload
/// chunks. Public for the fuzz targets, which seal chunks of their choosing
/// (a lying length, a truncated address) so that the reader's parsing past
/// the AEAD is reached.
public struct SealedChunkWriter {
    public let method: ShadowsocksMethod
    public let salt: [UInt8]
    private var cipher: AEADStreamCipher

    public init(credential: ShadowsocksCredential, salt: [UInt8]) {
        self.method = credential.method
        self.salt = salt
        self.cipher = AEADStreamCipher(method: credential.method, key: credential.subkey(salt: salt))
    }

    /// Seals `plaintext` as one chunk, whatever it holds.
    public mutating func sealChunk<D: DataProtocol>(_ plaintext: D, into out: inout ByteBuffer) {
        cipher.seal(plaintext, into: &out)
    }

    /// Seals `payload` as length/payload chunk pairs of at most the method's maximum.
    mutating func sealPayload(_ payload: ByteBufferView, into out: inout ByteBuffer) {
        let maxPayload = ShadowsocksStream.maxPayload(method)
        var start = payload.startIndex
        while start < payload.endIndex {
            let end = payload.index(start, offsetBy: min(maxPayload, payload.distance(from: start, to: payload.endIndex)))
            let n = payload.distance(from: start, to: end)
            cipher.seal([UInt8(n >> 8), UInt8(n & 0xff)], into: &out)
            cipher.seal(payload[start..<end], into: &out)
            start = end
        }
    }
}

/// The request a client opened a stream with, as the bridge decoded it.
public struct ShadowsocksRequest: Sendable, Equatable {
    public var target: Endpoint
    /// The salt of the request stream: the caller checks it against its replay filter.
    public var salt: [UInt8]
}

/// The bridge's side of one Shadowsocks TCP connection: decodes the client's
/// request stream and encodes the response stream.
///
/// Any error thrown is final: the connection must then be treated exactly
/// like every other failed or incomplete one (see the bridge's probe policy).
public struct ShadowsocksServerSession {
    private enum State {
        case awaitingHeader
        /// 2022 only: the fixed header said how long the variable header is.
        case awaitingVariableHeader(length: Int)
        /// Legacy only: decrypted bytes that do not yet hold the whole address,
        /// and the length of the chunk being waited for, once known.
        case awaitingAddress(ByteBuffer, chunkLength: Int?)
        case awaitingLength
        case awaitingPayload(Int)
        case failed
    }

    public let credential: ShadowsocksCredential
    private var reader: SealedChunkReader
    private var writer: SealedChunkWriter?
    private var state: State = .awaitingHeader
    private var pendingResponseHeader = true

    public init(credential: ShadowsocksCredential) {
        self.credential = credential
        self.reader = SealedChunkReader(credential: credential)
    }

    /// Decodes what `input` holds (consuming all of it). Returns the request
    /// once, when the header is complete, and appends payload to `payload`.
    public mutating func receive(_ input: inout ByteBuffer, payload: inout ByteBuffer, now: UInt64) throws -> ShadowsocksRequest? {
        reader.append(&input)
        do {
            return try decode(into: &payload, now: now)
        } catch {
            state = .failed
            throw error
        }
    }

    private mutating func decode(into payload: inout ByteBuffer, now: UInt64) throws -> ShadowsocksRequest? {
        var request: ShadowsocksRequest?
        let is2022 = credential.method.is2022
        while true {
            switch state {
            case .failed:
                throw WireError(.malformed, "the stream already failed")
            case .awaitingHeader:
                guard reader.readSalt() != nil else { return request }
                if is2022 {
                    guard let fixed = try reader.readChunk(length: 11) else { return request }
                    guard fixed[0] == 0 else { throw WireError(.malformed, "the request header has type \(fixed[0]), expected 0") }
                    try Self.checkClock(Self.readUInt64(fixed, at: 1), now: now)
                    let length = Int(fixed[9]) << 8 | Int(fixed[10])
                    state = .awaitingVariableHeader(length: length)
                } else {
                    state = .awaitingAddress(ByteBuffer(), chunkLength: nil)
                }
            case .awaitingVariableHeader(let length):
                guard let header = try reader.readChunk(length: length) else { return request }
                var buf = ByteBuffer(bytes: header)
                guard let target = try Endpoint.read(from: &buf), let padding = buf.readInteger(as: UInt16.self),
                      buf.readableBytes >= Int(padding) else {
                    throw WireError(.malformed, "the request header ends before its address and padding")
                }
                buf.moveReaderIndex(forwardBy: Int(padding))
                guard padding > 0 || buf.readableBytes > 0 else {
                    throw WireError(.malformed, "the request header has neither padding nor payload")
                }
                payload.writeBuffer(&buf)
                request = ShadowsocksRequest(target: target, salt: reader.salt!)
                state = .awaitingLength
            case .awaitingAddress(var plain, let chunkLength):
                // Legacy: the address normally opens the first chunk, but may span chunks.
                guard let length = try chunkLength ?? reader.readLength() else { return request }
                try Self.checkLegacyLength(length)
                guard let chunk = try reader.readChunk(length: length) else {
                    state = .awaitingAddress(plain, chunkLength: length)
                    return request
                }
                plain.writeBytes(chunk)
                if let target = try Endpoint.read(from: &plain) {
                    payload.writeBuffer(&plain)
                    request = ShadowsocksRequest(target: target, salt: reader.salt!)
                    state = .awaitingLength
                } else {
                    guard plain.readableBytes < 1 + 1 + 255 + 2 else { throw WireError(.malformed, "the address is longer than any valid address") }
                    state = .awaitingAddress(plain, chunkLength: nil)
                }
            case .awaitingLength:
                guard let length = try reader.readLength() else { return request }
                if !is2022 { try Self.checkLegacyLength(length) }
                guard length > 0 else { throw WireError(.malformed, "a chunk of length zero") }
                state = .awaitingPayload(length)
            case .awaitingPayload(let length):
                guard try reader.readChunk(length: length, into: &payload) else { return request }
                state = .awaitingLength
            }
        }
    }

    /// Encodes response bytes for the client. The first call also writes the
    /// response salt (and for 2022 the response header), in the same buffer.
    public mutating func seal(_ data: ByteBufferView, into out: inout ByteBuffer, now: UInt64) {
        if writer == nil {
            var salt = [UInt8](repeating: 0, count: credential.method.saltLength)
            SecureRandom.fill(&salt)
            writer = SealedChunkWriter(credential: credential, salt: salt)
            out.writeBytes(salt)
        }
        if credential.method.is2022 && pendingResponseHeader {
            pendingResponseHeader = false
            let first = data.prefix(ShadowsocksStream.maxPayload(credential.method))
            var header: [UInt8] = [1]
            header += Self.bytes(of: now)
            header += reader.salt ?? []
            header += [UInt8(first.count >> 8), UInt8(first.count & 0xff)]
            writer!.sealChunk(header, into: &out)
            writer!.sealChunk(first, into: &out)
            writer!.sealPayload(data[first.endIndex...], into: &out)
            return
        }
        writer!.sealPayload(data, into: &out)
    }

    static func checkLegacyLength(_ length: Int) throws {
        guard length > 0, length <= 0x3FFF else { throw WireError(.malformed, "a chunk length of \(length) is outside 1...0x3FFF") }
    }

    static func checkClock(_ timestamp: UInt64, now: UInt64) throws {
        let skew = timestamp > now ? timestamp - now : now - timestamp
        guard skew <= ShadowsocksStream.maxClockSkew else {
            throw WireError(.clock, "the peer's clock is \(skew) s away from ours (at most \(ShadowsocksStream.maxClockSkew) s allowed): check both clocks")
        }
    }

    static func readUInt64(_ b: [UInt8], at offset: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(b[offset + i]) }
        return v
    }

    static func bytes(of v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * $0)) } }

}

/// The client's side of one Shadowsocks TCP connection: encodes the request
/// stream (salt, target, payload) and decodes the response stream.
public struct ShadowsocksClientSession {
    private enum ResponseState {
        case awaitingHeader
        case awaitingFirstPayload(Int)
        case awaitingLength
        case awaitingPayload(Int)
        case failed
    }

    public let credential: ShadowsocksCredential
    public let target: Endpoint
    private var writer: SealedChunkWriter
    private var headerSent = false
    private var reader: SealedChunkReader
    private var state: ResponseState = .awaitingHeader

    /// - Parameter prefix: bytes that replace the start of the request salt
    ///   (Outline's `prefix` key parameter), at most the salt's length.
    public init(credential: ShadowsocksCredential, target: Endpoint, prefix: [UInt8] = []) {
        var salt = [UInt8](repeating: 0, count: credential.method.saltLength)
        SecureRandom.fill(&salt)
        self.init(credential: credential, target: target, prefix: prefix, salt: salt)
    }

    /// With a chosen salt: for known-answer tests only.
    init(credential: ShadowsocksCredential, target: Endpoint, prefix: [UInt8], salt: [UInt8]) {
        precondition(prefix.count <= credential.method.saltLength, "the prefix is longer than the salt")
        var salt = salt
        self.credential = credential
        self.target = target
        salt.replaceSubrange(0..<prefix.count, with: prefix)
        self.writer = SealedChunkWriter(credential: credential, salt: salt)
        self.reader = SealedChunkReader(credential: credential)
    }

    /// The request salt (for tests and replay checks).
    public var requestSalt: [UInt8] { writer.salt }

    /// The response salt, once the response has begun: 2022 clients check it
    /// against their own replay filter.
    public var responseSalt: [UInt8]? { reader.salt }

    /// Encodes request bytes. The first call writes salt, header and the
    /// first payload together so they leave in one segment; it may be called
    /// with no data to send the header alone (2022 then pads it).
    public mutating func seal(_ data: ByteBufferView, into out: inout ByteBuffer, now: UInt64) {
        if headerSent {
            writer.sealPayload(data, into: &out)
            return
        }
        headerSent = true
        out.writeBytes(writer.salt)
        let method = credential.method
        var header = ByteBuffer()
        target.write(to: &header)
        if method.is2022 {
            let padding = data.isEmpty ? Int.random(in: 1...ShadowsocksStream.maxPadding) : 0
            header.writeInteger(UInt16(padding))
            header.writeBytes(SecureRandom.bytes(padding))
            let room = ShadowsocksStream.maxPayload(method) - header.readableBytes
            let first = data.prefix(room)
            header.writeBytes(first)
            var fixed: [UInt8] = [0]
            fixed += ShadowsocksServerSession.bytes(of: now)
            fixed += [UInt8(header.readableBytes >> 8), UInt8(header.readableBytes & 0xff)]
            writer.sealChunk(fixed, into: &out)
            writer.sealChunk(header.readableBytesView, into: &out)
            writer.sealPayload(data[first.endIndex...], into: &out)
        } else {
            header.writeBytes(data)
            writer.sealPayload(header.readableBytesView, into: &out)
        }
    }

    /// Decodes response bytes (consuming all of `input`), appending plaintext to `payload`.
    public mutating func receive(_ input: inout ByteBuffer, payload: inout ByteBuffer, now: UInt64) throws {
        reader.append(&input)
        do {
            try decode(into: &payload, now: now)
        } catch {
            state = .failed
            throw error
        }
    }

    private mutating func decode(into payload: inout ByteBuffer, now: UInt64) throws {
        let method = credential.method
        while true {
            switch state {
            case .failed:
                throw WireError(.malformed, "the stream already failed")
            case .awaitingHeader:
                guard reader.readSalt() != nil else { return }
                if method.is2022 {
                    let saltLength = method.saltLength
                    guard let fixed = try reader.readChunk(length: 1 + 8 + saltLength + 2) else { return }
                    guard fixed[0] == 1 else { throw WireError(.malformed, "the response header has type \(fixed[0]), expected 1") }
                    try ShadowsocksServerSession.checkClock(ShadowsocksServerSession.readUInt64(fixed, at: 1), now: now)
                    guard constantTimeEquals(Array(fixed[9..<(9 + saltLength)]), writer.salt) else {
                        throw WireError(.authentication, "the response does not answer this request (request salt mismatch)")
                    }
                    let length = Int(fixed[9 + saltLength]) << 8 | Int(fixed[10 + saltLength])
                    state = .awaitingFirstPayload(length)
                } else {
                    state = .awaitingLength
                }
            case .awaitingFirstPayload(let length):
                if length > 0 {
                    guard try reader.readChunk(length: length, into: &payload) else { return }
                }
                state = .awaitingLength
            case .awaitingLength:
                guard let length = try reader.readLength() else { return }
                if !method.is2022 { try ShadowsocksServerSession.checkLegacyLength(length) }
                guard length > 0 else { throw WireError(.malformed, "a chunk of length zero") }
                state = .awaitingPayload(length)
            case .awaitingPayload(let length):
                guard try reader.readChunk(length: length, into: &payload) else { return }
                state = .awaitingLength
            }
        }
    }
}

/// Which of several users opened a stream on a listener they share (a share
/// node's circle): the user whose key opens the stream's first chunk, as
/// Outline's server tells its users apart on one port.
public enum ShadowsocksUserMatch: Equatable, Sendable {
    case needMoreData
    case user(Int)
    case nobody

    /// - Parameter start: the stream's first bytes as they arrived (not consumed).
    public static func identify(_ credentials: [ShadowsocksCredential], start: ByteBuffer) -> ShadowsocksUserMatch {
        var waiting = false
        for (index, credential) in credentials.enumerated() {
            // The first chunk is the length (legacy) or the fixed header (2022).
            let first = credential.method.is2022 ? 11 : 2
            guard start.readableBytes >= credential.method.saltLength + first + ShadowsocksStream.tag else {
                waiting = true
                continue
            }
            var reader = SealedChunkReader(credential: credential)
            var copy = start
            reader.append(&copy)
            _ = reader.readSalt()
            if (try? reader.readChunk(length: first)) != nil { return .user(index) }
        }
        return waiting ? .needMoreData : .nobody
    }
}
