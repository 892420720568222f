import NIOCore

// MARK: - Body framing

/// Measures one message body so that a forwarder can pass the bytes through
/// untouched and know where the next message starts.
///
/// Create one per message from its head, then hand it the bytes that follow
/// the head: `consume(_:)` says how many of them (from the reader index)
/// belong to this body, and `isComplete` turns true once the body has ended.
/// Bytes past the returned count are the next message. It keeps only
/// counters, never the body.
public struct HTTPBodyFramer: Sendable {
    public enum Framing: Hashable, Sendable {
        /// No body: the next message starts right after the head.
        case empty
        /// Exactly this many bytes.
        case contentLength(UInt64)
        /// Transfer-Encoding ending in chunked: chunks, the last chunk,
        /// trailer fields and an empty line.
        case chunked
        /// A response body that ends when the server closes the connection.
        case untilClose
        /// No more HTTP on this connection: after CONNECT (the request, or a
        /// 2xx response to it) or a 101 response, bytes are relayed as they
        /// are until either side closes.
        case tunnel
    }

    /// The longest chunk-size line (size and extensions) accepted.
    public static let maxChunkLineBytes = 4096
    /// The largest trailer section accepted.
    public static let maxTrailerBytes = 16384

    public let framing: Framing
    private var state: State

    private enum State: Sendable {
        case complete
        case remaining(UInt64)
        case open // untilClose, tunnel
        case chunk(ChunkState)
    }

    private enum ChunkState: Sendable {
        case size(UInt64, digits: Int, lineBytes: Int)
        case sizeSpace(UInt64, lineBytes: Int)
        case extensions(UInt64, lineBytes: Int)
        case sizeLF(UInt64)
        case data(UInt64)
        case dataCR
        case dataLF
        case trailerLineStart(trailerBytes: Int)
        case trailerName(trailerBytes: Int)
        case trailerValue(trailerBytes: Int)
        case trailerLF(trailerBytes: Int)
        case finalLF
    }

    public init(framing: Framing) {
        self.framing = framing
        switch framing {
        case .empty: state = .complete
        case .contentLength(let n): state = n == 0 ? .complete : .remaining(n)
        case .chunked: state = .chunk(.size(0, digits: 0, lineBytes: 0))
        case .untilClose, .tunnel: state = .open
        }
    }

    /// The framer for the body after a request head. Throws `.malformed`
    /// (answer 400) as RFC 9112 section 6.3 requires: Transfer-Encoding
    /// together with Content-Length, Transfer-Encoding whose last coding is
    /// not chunked or that applies chunked twice, Transfer-Encoding in an
    /// HTTP/1.0 request, and Content-Length values that differ or are not
    /// decimal numbers.
    public init(request head: HTTPRequestHead) throws {
        self.init(framing: try Self.framing(request: head))
    }

    /// The framer for the body after a response head to a request with
    /// `requestMethod`. Throws `.malformed` (answer 502) for the same
    /// framing faults as for requests, except that a Transfer-Encoding not
    /// ending in chunked means the body runs until close.
    public init(response head: HTTPResponseHead, requestMethod: String) throws {
        self.init(framing: try Self.framing(response: head, requestMethod: requestMethod))
    }

    /// CONNECT → `.tunnel` (bytes after its head are tunnel payload);
    /// then Transfer-Encoding → `.chunked`, Content-Length, or `.empty`.
    public static func framing(request head: HTTPRequestHead) throws -> Framing {
        if head.method == "CONNECT" { return .tunnel }
        if let chunked = try transferCoding(head, isRequest: true) {
            precondition(chunked)
            return .chunked
        }
        if let length = try contentLength(head) { return .contentLength(length) }
        return .empty
    }

    /// RFC 9112 section 6.3 in order: 101 → `.tunnel`; other 1xx →
    /// `.empty` (an interim response: read the next head for the same
    /// request); 2xx to CONNECT → `.tunnel`; HEAD, 204 and 304 → `.empty`;
    /// then Transfer-Encoding, Content-Length, or `.untilClose`.
    public static func framing(response head: HTTPResponseHead, requestMethod: String) throws -> Framing {
        if head.status == 101 { return .tunnel }
        if head.isInformational { return .empty }
        if requestMethod == "CONNECT" && (200..<300).contains(head.status) { return .tunnel }
        if requestMethod == "HEAD" || head.status == 204 || head.status == 304 { return .empty }
        if let chunked = try transferCoding(head, isRequest: false) {
            return chunked ? .chunked : .untilClose
        }
        if let length = try contentLength(head) { return .contentLength(length) }
        return .untilClose
    }

    /// True once the whole body has been measured (at once for `.empty`;
    /// never for `.untilClose` and `.tunnel`).
    public var isComplete: Bool {
        if case .complete = state { return true }
        return false
    }

    /// Measures the readable bytes of `buffer` without moving its reader
    /// index and returns how many of them, from the start, belong to this
    /// body. Returns 0 once complete. Throws `.malformed` for bad chunked
    /// syntax and `.tooLarge` for an oversized chunk size, chunk line or
    /// trailer section; the framer should then be dropped and the
    /// connection closed.
    public mutating func consume(_ buffer: ByteBuffer) throws -> Int {
        switch state {
        case .complete:
            return 0
        case .open:
            return buffer.readableBytes
        case .remaining(let n):
            let take = Int(clamping: Swift.min(n, UInt64(buffer.readableBytes)))
            let left = n - UInt64(take)
            state = left == 0 ? .complete : .remaining(left)
            return take
        case .chunk(let chunkState):
            var chunkState = chunkState
            let (used, done) = try buffer.withUnsafeReadableBytes { bytes in
                try Self.advance(&chunkState, over: bytes)
            }
            state = done ? .complete : .chunk(chunkState)
            return used
        }
    }

    /// `consume(_:)` that also moves the reader index past the body bytes
    /// and returns them as a slice.
    public mutating func readBody(from buffer: inout ByteBuffer) throws -> ByteBuffer {
        let count = try consume(buffer)
        return buffer.readSlice(length: count)!
    }

    /// Call when the peer has closed. Throws `.malformed` if the body was
    /// cut short; `.untilClose` and `.tunnel` bodies end here normally.
    public func endOfInput() throws {
        switch state {
        case .complete, .open:
            return
        case .remaining(let n):
            throw WireError.malformed("the connection closed \(n) bytes before the end of a Content-Length body")
        case .chunk:
            throw WireError.malformed("the connection closed in the middle of a chunked body")
        }
    }

    // MARK: Framing fields

    /// nil without Transfer-Encoding; true when it ends in chunked; false
    /// (responses only) when it does not.
    private static func transferCoding(_ head: some HTTPMessageHead, isRequest: Bool) throws -> Bool? {
        guard head.contains("Transfer-Encoding") else { return nil }
        let side = isRequest ? "request" : "response"
        guard head.version != .http1_0 else {
            throw WireError.malformed("an HTTP/1.0 \(side) carries Transfer-Encoding, which HTTP/1.0 does not have: its length cannot be trusted")
        }
        guard !head.contains("Content-Length") else {
            throw WireError.malformed("the \(side) has both Transfer-Encoding and Content-Length, which could smuggle a second message: send only one")
        }
        let codings = head.tokens(of: "Transfer-Encoding").map { coding -> String in
            // A coding may carry parameters ("gzip;q=1" is not valid here, but
            // be exact about the name).
            asciiLowercased(trimOWS(coding.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""))
        }
        guard !codings.isEmpty else {
            throw WireError.malformed("the \(side) has an empty Transfer-Encoding")
        }
        let chunkedCount = codings.filter { $0 == "chunked" }.count
        if codings.last == "chunked" {
            guard chunkedCount == 1 else {
                throw WireError.malformed("the \(side) applies chunked more than once in Transfer-Encoding")
            }
            return true
        }
        guard !isRequest else {
            throw WireError.malformed("the request's Transfer-Encoding does not end in chunked, so its length cannot be known")
        }
        guard chunkedCount == 0 else {
            throw WireError.malformed("the response's Transfer-Encoding applies chunked before another coding")
        }
        return false
    }

    private static func contentLength(_ head: some HTTPMessageHead) throws -> UInt64? {
        let values = head.values(of: "Content-Length")
        guard !values.isEmpty else { return nil }
        var length: UInt64?
        for value in values {
            for element in value.split(separator: ",", omittingEmptySubsequences: false) {
                let text = trimOWS(element)
                guard !text.isEmpty, text.utf8.count <= 19, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                      let n = UInt64(text) else {
                    throw WireError.malformed("Content-Length “\(excerpt(value))” is not a decimal number of bytes")
                }
                if let length, length != n {
                    throw WireError.malformed("the message has conflicting Content-Length values, which could smuggle a second message")
                }
                length = n
            }
        }
        return length
    }

    // MARK: Chunked

    /// Runs the chunked-body automaton over `bytes`; returns how many bytes
    /// it used and whether the body ended.
    private static func advance(_ state: inout ChunkState, over bytes: UnsafeRawBufferPointer) throws -> (Int, Bool) {
        var i = 0
        let count = bytes.count
        while i < count {
            if case .data(let left) = state {
                let take = Int(clamping: Swift.min(left, UInt64(count - i)))
                i += take
                state = left == UInt64(take) ? .dataCR : .data(left - UInt64(take))
                continue
            }
            let b = bytes[i]
            i += 1
            switch state {
            case .size(let size, let digits, let lineBytes):
                if let v = hexValue(b) {
                    guard size <= (UInt64.max >> 4) else {
                        throw WireError.tooLarge("a chunk size does not fit in 64 bits")
                    }
                    state = .size(size << 4 | UInt64(v), digits: digits + 1, lineBytes: try lineLimit(lineBytes))
                } else if digits == 0 {
                    throw WireError.malformed("a chunk does not start with its size in hexadecimal")
                } else if b == cr {
                    state = .sizeLF(size)
                } else if b == UInt8(ascii: ";") {
                    state = .extensions(size, lineBytes: try lineLimit(lineBytes))
                } else if b == sp || b == htab {
                    state = .sizeSpace(size, lineBytes: try lineLimit(lineBytes))
                } else {
                    throw WireError.malformed("unexpected byte \(b) after a chunk size")
                }
            case .sizeSpace(let size, let lineBytes):
                if b == sp || b == htab {
                    state = .sizeSpace(size, lineBytes: try lineLimit(lineBytes))
                } else if b == UInt8(ascii: ";") {
                    state = .extensions(size, lineBytes: try lineLimit(lineBytes))
                } else if b == cr {
                    state = .sizeLF(size)
                } else {
                    throw WireError.malformed("unexpected byte \(b) after a chunk size")
                }
            case .extensions(let size, let lineBytes):
                if b == cr {
                    state = .sizeLF(size)
                } else if isFieldValueByte(b) {
                    state = .extensions(size, lineBytes: try lineLimit(lineBytes))
                } else {
                    throw WireError.malformed("a chunk extension contains control byte \(b)")
                }
            case .sizeLF(let size):
                guard b == lf else { throw bareCR("chunk size line") }
                state = size == 0 ? .trailerLineStart(trailerBytes: 0) : .data(size)
            case .data:
                break // handled above
            case .dataCR:
                guard b == cr else { throw WireError.malformed("chunk data is longer than its size says (no CRLF after it)") }
                state = .dataLF
            case .dataLF:
                guard b == lf else { throw bareCR("chunk data") }
                state = .size(0, digits: 0, lineBytes: 0)
            case .trailerLineStart(let used):
                if b == cr {
                    state = .finalLF
                } else if isTChar(b) {
                    state = .trailerName(trailerBytes: try trailerLimit(used))
                } else if b == sp || b == htab {
                    throw WireError.malformed("a trailer field is folded over lines (obs-fold), which is not accepted")
                } else {
                    throw WireError.malformed("a trailer field line does not start with a field name")
                }
            case .trailerName(let used):
                if isTChar(b) {
                    state = .trailerName(trailerBytes: try trailerLimit(used))
                } else if b == UInt8(ascii: ":") {
                    state = .trailerValue(trailerBytes: try trailerLimit(used))
                } else {
                    throw WireError.malformed("a trailer field name contains byte \(b) or has no colon")
                }
            case .trailerValue(let used):
                if b == cr {
                    state = .trailerLF(trailerBytes: try trailerLimit(used))
                } else if isFieldValueByte(b) {
                    state = .trailerValue(trailerBytes: try trailerLimit(used))
                } else {
                    throw WireError.malformed("a trailer field value contains control byte \(b)")
                }
            case .trailerLF(let used):
                guard b == lf else { throw bareCR("trailer field") }
                state = .trailerLineStart(trailerBytes: try trailerLimit(used))
            case .finalLF:
                guard b == lf else { throw bareCR("end of the chunked body") }
                return (i, true)
            }
        }
        return (i, false)
    }

    private static func lineLimit(_ used: Int) throws -> Int {
        guard used < maxChunkLineBytes else {
            throw WireError.tooLarge("a chunk-size line is longer than \(maxChunkLineBytes) bytes")
        }
        return used + 1
    }

    private static func trailerLimit(_ used: Int) throws -> Int {
        guard used < maxTrailerBytes else {
            throw WireError.tooLarge("the trailer fields of a chunked body exceed \(maxTrailerBytes) bytes")
        }
        return used + 1
    }

    private static func bareCR(_ place: String) -> WireError {
        WireError.malformed("a CR in the \(place) is not followed by LF")
    }
}
