import Crypto
import NIOCore

// WebSocket (RFC 6455) as the Trojan-over-WebSocket transport uses it, the way
// v2ray, Xray and v2rayNG do (`type=ws` in trojan:// keys): an HTTP/1.1
// upgrade on a secret path, then every write is one binary frame and the
// payload of all data frames is one byte stream. No extensions, no
// subprotocols (except Xray's early data, see `readRequest`).

// MARK: - Handshake

public enum WebSocketHandshake {
    /// The GUID that RFC 6455 section 1.3 appends to the key.
    public static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// The longest request head the server reads before deciding it is not
    /// for it (a browser's upgrade request is well under 2 KiB; Xray's early
    /// data of 2048 bytes takes about 2.8 KiB).
    public static let maxRequestHeadLength = 8192
    /// The longest response head the client reads.
    public static let maxResponseHeadLength = 16384

    /// The User-Agent the client sends: a current desktop Chrome, the most
    /// common browser, so that the request looks like any page's WebSocket.
    public static let userAgent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

    /// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64 of the SHA-1
    /// of the key followed by the GUID.
    public static func acceptValue(forKey key: String) -> String {
        let digest = Insecure.SHA1.hash(data: Array((key + guid).utf8))
        return Base64.encode(Array(digest))
    }

    /// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64.
    public static func makeKey() -> String {
        Base64.encode(SecureRandom.bytes(16))
    }

    /// The client's upgrade request, shaped like a browser's (Chrome's field
    /// order, without Origin and without offering compression). `path` is
    /// the request target (a query is kept); a missing leading slash is
    /// added, and bytes a request target cannot carry (spaces, controls,
    /// non-ASCII) are percent-encoded, as Go's clients do. `host` goes into
    /// the Host field as given (add the port when it is not the scheme's
    /// default).
    public static func clientRequest(path: String, host: String, key: String) -> ByteBuffer {
        var head = HTTPRequestHead(method: "GET", target: encodedTarget(path), headers: [
            (name: "Host", value: host),
            (name: "Connection", value: "Upgrade"),
            (name: "Pragma", value: "no-cache"),
            (name: "Cache-Control", value: "no-cache"),
            (name: "User-Agent", value: userAgent),
            (name: "Upgrade", value: "websocket"),
            (name: "Sec-WebSocket-Version", value: "13"),
            (name: "Accept-Encoding", value: "gzip, deflate, br, zstd"),
            (name: "Accept-Language", value: "en-US,en;q=0.9"),
            (name: "Sec-WebSocket-Key", value: key),
        ])
        head.version = .http1_1
        var out = ByteBuffer()
        head.serialize(into: &out)
        return out
    }

    // MARK: Server side

    /// Early data as Xray (and v2rayNG with an `?ed=` path) sends it: the
    /// first bytes of the stream, base64url in `Sec-WebSocket-Protocol`.
    /// The server must treat `bytes` as if they had arrived first on the
    /// stream, and echo `header` in its 101 answer.
    public struct EarlyData: Equatable, Sendable {
        public var bytes: [UInt8]
        public var header: String
        public init(bytes: [UInt8], header: String) {
            self.bytes = bytes
            self.header = header
        }
    }

    /// What the server makes of the first bytes of a connection.
    public enum RequestDecision: Equatable, Sendable {
        /// Not enough bytes yet to decide.
        case needMoreData
        /// A valid upgrade request for our path: answer with
        /// `serverResponse(accept: acceptValue(forKey: key))`, skip
        /// `headLength` bytes; what follows are frames.
        case upgrade(key: String, headLength: Int, earlyData: EarlyData?)
        /// Not for us (another method or path, a browser, a scanner, no
        /// WebSocket, not HTTP, a head longer than `maxRequestHeadLength`):
        /// hand every byte received to the fallback site.
        case reject
    }

    /// Decides on the request at the start of `buffer` without consuming
    /// anything.
    ///
    /// Accepts only `GET <path>[?query] HTTP/1.1` whose path part equals
    /// `path` exactly, as sent or percent-decoded (the query, such as
    /// v2ray's `?ed=2048`, is ignored on both sides; the comparison is
    /// constant-time for equal lengths), with
    /// `Upgrade: websocket`, `Connection: upgrade` (as a token, any case),
    /// `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key` of 16 bytes in
    /// base64. Rejects as early as it can: a first byte that cannot start
    /// `GET `, a bad request line as soon as it is complete, a control byte
    /// as soon as it arrives.
    ///
    /// A `Sec-WebSocket-Protocol` that decodes as base64 (either alphabet,
    /// padding optional) to at least one byte is Xray's early data.
    public static func readRequest(from buffer: ByteBuffer, path: String) -> RequestDecision {
        let expectedPath = Array(pathPart(normalizedTarget(path)).utf8)
        let readable = buffer.readableBytesView
        // Only GET is ever accepted: decide on the first bytes.
        let get = Array("GET ".utf8)
        guard readable.prefix(get.count).elementsEqual(get.prefix(readable.count)) else { return .reject }

        // The request line, as soon as it is complete.
        let window = readable.prefix(maxRequestHeadLength)
        if let cr = window.firstIndex(of: UInt8(ascii: "\r")) {
            do {
                let line = try parseRequestLine(Array(readable[readable.startIndex..<cr]))
                let requested = pathPart(line.target)
                let raw = Array(requested.utf8)
                // Both comparisons run, whatever the first one found.
                let rawMatches = constantTimeEquals(raw, expectedPath)
                let decodedMatches = constantTimeEquals(percentDecoded(raw) ?? raw, expectedPath)
                guard line.version == .http1_1, rawMatches || decodedMatches else { return .reject }
            } catch {
                return .reject
            }
        }

        var copy = buffer
        let head: HTTPRequestHead
        do {
            guard let h = try HTTPRequestHead.read(from: &copy, maxHeadBytes: maxRequestHeadLength) else {
                return .needMoreData
            }
            head = h
        } catch {
            return .reject
        }
        guard head.tokens(of: "Upgrade").contains("websocket"),
              head.tokens(of: "Connection").contains("upgrade"),
              head.values(of: "Sec-WebSocket-Version").map({ trimOWS(Substring($0)) }) == ["13"],
              head.values(of: "Sec-WebSocket-Key").count == 1,
              let key = head.value(of: "Sec-WebSocket-Key").map({ trimOWS(Substring($0)) }),
              Base64.decode(key)?.count == 16
        else { return .reject }

        var earlyData: EarlyData?
        if let header = head.value(of: "Sec-WebSocket-Protocol"), let bytes = Base64.decode(header), !bytes.isEmpty {
            earlyData = EarlyData(bytes: bytes, header: header)
        }
        return .upgrade(key: key, headLength: buffer.readableBytes - copy.readableBytes, earlyData: earlyData)
    }

    /// The server's 101 answer (the fields and order Go's WebSocket servers
    /// use, v2ray among them). `subprotocol` echoes early data's header.
    public static func serverResponse(accept: String, subprotocol: String? = nil) -> ByteBuffer {
        var head = HTTPResponseHead(status: 101, reason: "Switching Protocols", headers: [
            (name: "Upgrade", value: "websocket"),
            (name: "Connection", value: "Upgrade"),
            (name: "Sec-WebSocket-Accept", value: accept),
        ])
        if let subprotocol { head.headers.append((name: "Sec-WebSocket-Protocol", value: subprotocol)) }
        var out = ByteBuffer()
        head.serialize(into: &out)
        return out
    }

    // MARK: Client side

    /// What the client makes of the server's answer.
    public enum ResponseDecision: Equatable, Sendable {
        case needMoreData
        /// Upgraded: the head was consumed; any bytes left are frames.
        case accepted
        /// Anything else, with a sentence that quotes the status line.
        case rejected(WireError)
    }

    /// Reads the server's answer to the upgrade request. Consumes the head
    /// only when accepted.
    public static func readResponse(from buffer: inout ByteBuffer, expectedAccept: String) -> ResponseDecision {
        var copy = buffer
        let head: HTTPResponseHead
        do {
            guard let h = try HTTPResponseHead.read(from: &copy, maxHeadBytes: maxResponseHeadLength) else {
                return .needMoreData
            }
            head = h
        } catch let error as WireError {
            return .rejected(.malformed("the WebSocket server did not answer in HTTP (\(error.reason)): check that the address, port and TLS setting point at a WebSocket endpoint"))
        } catch {
            return .rejected(.malformed("the WebSocket server did not answer in HTTP: check the address, port and TLS setting"))
        }
        let statusLine = excerpt("\(head.version) \(head.status) \(head.reason)")
        guard head.status == 101 else {
            return .rejected(WireError(.refused, "the server answered “\(statusLine)” instead of switching to WebSocket: check the path and host in the access key"))
        }
        guard head.tokens(of: "Upgrade").contains("websocket"), head.tokens(of: "Connection").contains("upgrade") else {
            return .rejected(.malformed("the server answered “\(statusLine)” without Upgrade: websocket and Connection: upgrade; a proxy in between may be dropping them (nginx needs proxy_set_header Upgrade and Connection)"))
        }
        guard let accept = head.value(of: "Sec-WebSocket-Accept"), trimOWS(Substring(accept)) == expectedAccept else {
            return .rejected(.malformed("the server switched to WebSocket with a wrong or missing Sec-WebSocket-Accept: it is not answering this request; check the address and path"))
        }
        buffer = copy
        return .accepted
    }

    // MARK: Helpers

    /// The target with a leading slash.
    static func normalizedTarget(_ path: String) -> String {
        path.hasPrefix("/") ? path : "/" + path
    }

    /// The target with a leading slash and every byte that a request target
    /// cannot carry percent-encoded.
    static func encodedTarget(_ path: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        let unsafe = Array(#""<>\^`{|}"#.utf8)
        var out: [UInt8] = []
        for b in normalizedTarget(path).utf8 {
            if b <= 0x20 || b >= 0x7F || unsafe.contains(b) {
                out += [UInt8(ascii: "%"), hex[Int(b >> 4)], hex[Int(b & 0x0F)]]
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes with %XX sequences decoded; nil when a % is not followed
    /// by two hex digits.
    static func percentDecoded(_ bytes: [UInt8]) -> [UInt8]? {
        guard bytes.contains(UInt8(ascii: "%")) else { return bytes }
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%") {
                guard i + 2 < bytes.count, let high = hexValue(bytes[i + 1]), let low = hexValue(bytes[i + 2]) else { return nil }
                out.append(high << 4 | low)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return out
    }

    /// The target up to its query.
    static func pathPart(_ target: String) -> Substring {
        let t = Substring(target)
        return t.firstIndex(of: "?").map { t[..<$0] } ?? t
    }
}

// MARK: - Frames

public enum WebSocketOpcode: UInt8, Sendable, CaseIterable {
    case continuation = 0x0
    case text = 0x1
    case binary = 0x2
    case close = 0x8
    case ping = 0x9
    case pong = 0xA

    public var isControl: Bool { rawValue & 0x8 != 0 }
}

/// The frame writer and masking (RFC 6455 section 5).
public enum WebSocketFrame {
    /// FIN and opcode, length up to 8 bytes, mask key.
    public static let maxHeaderLength = 14
    /// The most a control frame (close, ping, pong) may carry.
    public static let maxControlPayload = 125

    /// Close codes this implementation sends (RFC 6455 section 7.4.1).
    public static let normalClosure: UInt16 = 1000
    public static let protocolError: UInt16 = 1002

    /// The size of the header `writeHeader` writes.
    public static func headerLength(payloadLength: Int, masked: Bool) -> Int {
        let lengthBytes = payloadLength < 126 ? 0 : (payloadLength <= 0xFFFF ? 2 : 8)
        return 2 + lengthBytes + (masked ? 4 : 0)
    }

    /// Writes a frame header: FIN, no reserved bits, the opcode, the length
    /// in its shortest form, and the mask key (big-endian: 0x37fa213d is
    /// the key bytes 37 fa 21 3d) when given.
    public static func writeHeader(opcode: WebSocketOpcode, fin: Bool = true, length: Int, maskKey: UInt32? = nil,
                                   to buffer: inout ByteBuffer) {
        precondition(length >= 0)
        precondition(!opcode.isControl || (fin && length <= maxControlPayload), "control frames are final and carry at most 125 bytes")
        buffer.writeInteger((fin ? 0x80 : 0) | opcode.rawValue)
        let maskBit: UInt8 = maskKey == nil ? 0 : 0x80
        if length < 126 {
            buffer.writeInteger(maskBit | UInt8(length))
        } else if length <= 0xFFFF {
            buffer.writeInteger(maskBit | 126)
            buffer.writeInteger(UInt16(length))
        } else {
            buffer.writeInteger(maskBit | 127)
            buffer.writeInteger(UInt64(length))
        }
        if let maskKey { buffer.writeInteger(maskKey) }
    }

    /// Writes a whole frame: header and payload, masked when a key is given.
    public static func write(opcode: WebSocketOpcode, fin: Bool = true, payload: ByteBufferView, maskKey: UInt32? = nil,
                             to buffer: inout ByteBuffer) {
        writeHeader(opcode: opcode, fin: fin, length: payload.count, maskKey: maskKey, to: &buffer)
        let start = buffer.writerIndex - buffer.readerIndex
        buffer.writeBytes(payload)
        if let maskKey {
            buffer.withUnsafeMutableReadableBytes { raw in
                mask(UnsafeMutableRawBufferPointer(rebasing: raw[start...]), key: maskKey)
            }
        }
    }

    /// XORs the readable bytes of `buffer` with the mask key, in place.
    /// `phase` is the offset of the first byte within the frame's payload
    /// (modulo 4), for payloads masked in pieces. Masking twice unmasks.
    public static func mask(_ buffer: inout ByteBuffer, key: UInt32, phase: Int = 0) {
        buffer.withUnsafeMutableReadableBytes { mask($0, key: key, phase: phase) }
    }

    /// XORs `bytes` with the mask key, eight bytes at a time.
    public static func mask(_ bytes: UnsafeMutableRawBufferPointer, key: UInt32, phase: Int = 0) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        let keyBytes: (UInt8, UInt8, UInt8, UInt8) = (UInt8(key >> 24), UInt8(truncatingIfNeeded: key >> 16),
                                                      UInt8(truncatingIfNeeded: key >> 8), UInt8(truncatingIfNeeded: key))
        // The key repeated over eight bytes of memory, starting at `phase`.
        var word: UInt64 = 0
        withUnsafeMutableBytes(of: &word) { w in
            withUnsafeBytes(of: keyBytes) { k in
                for j in 0..<8 { w[j] = k[(j + phase) & 3] }
            }
        }
        let count = bytes.count
        var i = 0
        while i + 32 <= count {
            base.storeBytes(of: base.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ word, toByteOffset: i, as: UInt64.self)
            base.storeBytes(of: base.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self) ^ word, toByteOffset: i + 8, as: UInt64.self)
            base.storeBytes(of: base.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self) ^ word, toByteOffset: i + 16, as: UInt64.self)
            base.storeBytes(of: base.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self) ^ word, toByteOffset: i + 24, as: UInt64.self)
            i += 32
        }
        while i + 8 <= count {
            base.storeBytes(of: base.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ word, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        withUnsafeBytes(of: word) { w in
            // i is a multiple of 8, so byte i of the rest lines up with byte i % 8 of the word.
            while i < count {
                bytes[i] ^= w[i & 7]
                i += 1
            }
        }
    }

    /// The payload of a Close frame: the code, then the reason in UTF-8
    /// (cut to fit 125 bytes).
    public static func closePayload(code: UInt16, reason: String = "") -> ByteBuffer {
        var out = ByteBuffer()
        out.writeInteger(code)
        out.writeBytes(Array(reason.utf8.prefix(maxControlPayload - 2)))
        return out
    }
}

/// The streaming frame reader: payload bytes of data frames are handed on
/// as they arrive, without waiting for a whole frame, so memory does not
/// depend on frame sizes. Masked payload is unmasked in place. Control
/// frames are handed on whole (they are at most 125 bytes).
///
/// Data frames (binary, text, continuation) are one byte stream: message
/// boundaries and the text/binary distinction are not reported (text is not
/// checked for UTF-8). Fragmentation rules are checked. After a Close frame
/// every later byte is ignored. After an error the reader stays failed.
public struct WebSocketFrameReader: Sendable {
    public enum Event: Equatable, Sendable {
        /// The next piece of the byte stream (never empty).
        case data(ByteBuffer)
        case ping(ByteBuffer)
        case pong(ByteBuffer)
        /// A Close frame: its code (nil when it carried none) and reason.
        case close(code: UInt16?, reason: String)
    }

    private enum State: Sendable {
        /// Collecting a frame header (bytes so far in `header`).
        case header
        /// Inside a data frame's payload.
        case data(remaining: UInt64, maskKey: UInt32?, phase: Int)
        /// Collecting a control frame's payload (bytes so far in `control`).
        case control(opcode: WebSocketOpcode, length: Int, maskKey: UInt32?)
        case closed
        case failed(WireError)
    }

    /// Server side: a client must mask every frame (RFC 6455 section 5.1).
    /// A client's reader accepts both, and unmasks what is masked.
    public let requireMasked: Bool
    private var state: State = .header
    private var header: [UInt8] = []
    private var control = ByteBuffer()
    /// A fragmented data message has started and not yet ended.
    private var inMessage = false

    public init(requireMasked: Bool) {
        self.requireMasked = requireMasked
        header.reserveCapacity(WebSocketFrame.maxHeaderLength)
    }

    /// True once a Close frame was read.
    public var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    /// Reads everything in `buffer` (it is always consumed entirely: bytes
    /// of an incomplete header or control frame are kept inside) and
    /// returns what it held, in order. Data payload is unmasked in place in
    /// `buffer`'s storage and returned as slices of it. Throws a `WireError`
    /// on a protocol violation; the reader then stays failed.
    public mutating func read(_ buffer: inout ByteBuffer) throws -> [Event] {
        if case .failed(let error) = state { throw error }
        // First pass: walk the frames, unmask data payload in place and note
        // where it is. Slices are only taken afterwards, so that the storage
        // is copied at most once (when it is shared) rather than per frame.
        var pieces: [Piece] = []
        let start = buffer.readerIndex
        let end = buffer.writerIndex
        var offset = start
        do {
            while offset < end {
                switch state {
                case .failed, .closed:
                    offset = end
                case .header:
                    offset = try readHeader(buffer, at: offset, end: end)
                    if case .control(let opcode, 0, let maskKey) = state {
                        // An empty control frame is complete with its header.
                        pieces.append(.event(try finishControl(opcode: opcode, maskKey: maskKey)))
                    }
                case .data(let remaining, let maskKey, let phase):
                    let n = Int(min(remaining, UInt64(end - offset)))
                    if let maskKey {
                        let relative = offset - start
                        buffer.withUnsafeMutableReadableBytes { raw in
                            WebSocketFrame.mask(UnsafeMutableRawBufferPointer(rebasing: raw[relative..<(relative + n)]),
                                                key: maskKey, phase: phase)
                        }
                    }
                    pieces.append(.data(offset: offset, length: n))
                    offset += n
                    let left = remaining - UInt64(n)
                    state = left == 0 ? .header : .data(remaining: left, maskKey: maskKey, phase: (phase + n) & 3)
                case .control(let opcode, let length, let maskKey):
                    let n = min(length - control.readableBytes, end - offset)
                    control.writeImmutableBuffer(buffer.getSlice(at: offset, length: n)!)
                    offset += n
                    if control.readableBytes == length {
                        pieces.append(.event(try finishControl(opcode: opcode, maskKey: maskKey)))
                    }
                }
            }
        } catch let error as WireError {
            state = .failed(error)
            throw error
        }
        let events = pieces.compactMap { piece -> Event? in
            switch piece {
            case .data(let offset, let length):
                return length == 0 ? nil : .data(buffer.getSlice(at: offset, length: length)!)
            case .event(let event):
                return event
            }
        }
        buffer.moveReaderIndex(to: end)
        return events
    }

    private enum Piece {
        case data(offset: Int, length: Int)
        case event(Event)
    }

    /// Consumes header bytes from `offset`; returns the new offset. Moves to
    /// the payload state once the header is complete.
    private mutating func readHeader(_ buffer: ByteBuffer, at offset: Int, end: Int) throws -> Int {
        var offset = offset
        // The header's length is known from its second byte.
        while header.count < 2 && offset < end {
            header.append(buffer.getInteger(at: offset, as: UInt8.self)!)
            offset += 1
        }
        guard header.count >= 2 else { return offset }
        let b1 = header[1]
        let lengthBytes = b1 & 0x7F == 127 ? 8 : (b1 & 0x7F == 126 ? 2 : 0)
        let total = 2 + lengthBytes + (b1 & 0x80 != 0 ? 4 : 0)
        if header.count == 2 { try checkFirstBytes(header[0], b1) }
        let take = min(total - header.count, end - offset)
        if take > 0 {
            header.append(contentsOf: buffer.viewBytes(at: offset, length: take)!)
            offset += take
        }
        guard header.count == total else { return offset }

        let b0 = header[0]
        let opcode = WebSocketOpcode(rawValue: b0 & 0x0F)! // checked by checkFirstBytes
        var length: UInt64 = UInt64(b1 & 0x7F)
        if lengthBytes > 0 {
            length = 0
            for i in 0..<lengthBytes { length = length << 8 | UInt64(header[2 + i]) }
            if length & (1 << 63) != 0 {
                throw WireError.malformed("a WebSocket frame's 64-bit length has its top bit set, which RFC 6455 forbids: the peer is not speaking WebSocket")
            }
        }
        var maskKey: UInt32?
        if b1 & 0x80 != 0 {
            let k = header[(2 + lengthBytes)...]
            maskKey = k.reduce(0) { $0 << 8 | UInt32($1) }
        }
        header.removeAll(keepingCapacity: true)

        if opcode.isControl {
            guard length <= UInt64(WebSocketFrame.maxControlPayload) else {
                throw WireError.tooLarge("a WebSocket \(opcode) frame carries \(length) bytes; control frames carry at most 125: the peer is not speaking WebSocket correctly")
            }
            control.clear()
            state = .control(opcode: opcode, length: Int(length), maskKey: maskKey)
            return offset
        }
        switch opcode {
        case .continuation:
            guard inMessage else {
                throw WireError.malformed("a WebSocket continuation frame arrived with no fragmented message to continue")
            }
        default:
            guard !inMessage else {
                throw WireError.malformed("a new WebSocket data frame arrived before the fragmented message before it ended")
            }
        }
        inMessage = b0 & 0x80 == 0
        state = length == 0 ? .header : .data(remaining: length, maskKey: maskKey, phase: 0)
        return offset
    }

    private func checkFirstBytes(_ b0: UInt8, _ b1: UInt8) throws {
        if b0 & 0x70 != 0 {
            throw WireError.malformed("a WebSocket frame sets reserved bits (RSV 0x\(String(b0 & 0x70, radix: 16))) though no extension was agreed: turn off compression (permessage-deflate) in the peer")
        }
        guard let opcode = WebSocketOpcode(rawValue: b0 & 0x0F) else {
            throw WireError.malformed("a WebSocket frame uses reserved opcode \(b0 & 0x0F): the peer is not speaking WebSocket")
        }
        if opcode.isControl && b0 & 0x80 == 0 {
            throw WireError.malformed("a WebSocket \(opcode) frame is fragmented (FIN not set); control frames must not be")
        }
        if requireMasked && b1 & 0x80 == 0 {
            throw WireError.malformed("the client sent an unmasked WebSocket frame; a client must mask every frame (RFC 6455 section 5.1)")
        }
    }

    private mutating func finishControl(opcode: WebSocketOpcode, maskKey: UInt32?) throws -> Event {
        if let maskKey { WebSocketFrame.mask(&control, key: maskKey) }
        let payload = control
        control = ByteBuffer()
        state = .header
        switch opcode {
        case .ping:
            return .ping(payload)
        case .pong:
            return .pong(payload)
        default:
            var payload = payload
            guard payload.readableBytes != 1 else {
                throw WireError.malformed("a WebSocket Close frame carries one byte; it must carry nothing or a two-byte code")
            }
            let code = payload.readInteger(as: UInt16.self)
            state = .closed
            return .close(code: code, reason: String(decoding: payload.readableBytesView, as: UTF8.self))
        }
    }
}
