import NIOCore

/// The frames of Raha's stream multiplexer (many proxied streams over one
/// TLS connection between two Raha ends).
///
///     frame := kind (u8) | stream (u32) | length (u16) | body (length bytes)
///
/// Stream 0 is the connection itself (padding, go-away). A client opens odd
/// stream numbers; flow control is per stream, in bytes, with WINDOW frames
/// granting more. PADDING frames carry random bytes that are ignored, so
/// record sizes need not follow the traffic.
public struct MuxFrame: Hashable, Sendable {
    public enum Kind: UInt8, Sendable {
        /// Opens a stream to the destination in the body (SOCKS address form).
        case open = 0
        case data = 1
        /// Grants the peer `u32` more bytes of DATA on the stream.
        case window = 2
        /// The sender will send no more DATA on the stream (half-close).
        case finish = 3
        /// Aborts the stream in both directions; the body may hold a reason code (u8).
        case reset = 4
        /// Ignored by the receiver.
        case padding = 5
        /// No new streams on this connection; existing ones finish.
        case goAway = 6
    }

    public static let headerLength = 7
    public static let maxBody = Int(UInt16.max)

    public var kind: Kind
    public var stream: UInt32
    public var body: ByteBuffer

    public init(kind: Kind, stream: UInt32, body: ByteBuffer = ByteBuffer()) {
        precondition(body.readableBytes <= Self.maxBody, "a mux frame body is at most 65535 bytes")
        self.kind = kind
        self.stream = stream
        self.body = body
    }

    public static func open(stream: UInt32, to destination: Endpoint) -> MuxFrame {
        var body = ByteBuffer()
        destination.write(to: &body)
        return MuxFrame(kind: .open, stream: stream, body: body)
    }

    public static func window(stream: UInt32, increment: UInt32) -> MuxFrame {
        var body = ByteBuffer()
        body.writeInteger(increment)
        return MuxFrame(kind: .window, stream: stream, body: body)
    }

    /// The destination of an OPEN frame.
    public func destination() throws -> Endpoint {
        var body = self.body
        guard kind == .open, let endpoint = try Endpoint.read(from: &body), body.readableBytes == 0 else {
            throw WireError.malformed("an OPEN frame must hold exactly one address")
        }
        return endpoint
    }

    /// The increment of a WINDOW frame.
    public func windowIncrement() throws -> UInt32 {
        guard kind == .window, body.readableBytes == 4, let value = body.getInteger(at: body.readerIndex, as: UInt32.self), value > 0 else {
            throw WireError.malformed("a WINDOW frame must hold one non-zero 32-bit increment")
        }
        return value
    }

    public func write(to buffer: inout ByteBuffer) {
        buffer.writeInteger(kind.rawValue)
        buffer.writeInteger(stream)
        buffer.writeInteger(UInt16(body.readableBytes))
        buffer.writeImmutableBuffer(body)
    }

    /// Reads one frame; nil (nothing consumed) until it has all arrived.
    /// Throws for an unknown kind, a frame on the wrong stream, or a body
    /// that does not fit its kind; the connection must then be closed.
    public static func read(from buffer: inout ByteBuffer) throws -> MuxFrame? {
        guard buffer.readableBytes >= headerLength else { return nil }
        let start = buffer.readerIndex
        let rawKind = buffer.getInteger(at: start, as: UInt8.self)!
        let stream = buffer.getInteger(at: start + 1, as: UInt32.self)!
        let length = Int(buffer.getInteger(at: start + 5, as: UInt16.self)!)
        guard let kind = Kind(rawValue: rawKind) else {
            throw WireError.malformed("unknown mux frame kind \(rawKind)")
        }
        switch kind {
        case .padding, .goAway:
            guard stream == 0 else { throw WireError.malformed("a \(kind) frame belongs to stream 0") }
        default:
            guard stream != 0 else { throw WireError.malformed("a \(kind) frame needs a stream number") }
        }
        switch kind {
        case .window: guard length == 4 else { throw WireError.malformed("a WINDOW frame body is 4 bytes, not \(length)") }
        case .finish, .goAway: guard length == 0 else { throw WireError.malformed("a \(kind) frame has no body") }
        case .reset: guard length <= 1 else { throw WireError.malformed("a RESET frame body is at most a reason byte") }
        case .open: guard length >= 5 else { throw WireError.malformed("an OPEN frame body is an address") }
        case .data, .padding: break
        }
        guard buffer.readableBytes >= headerLength + length else { return nil }
        buffer.moveReaderIndex(forwardBy: headerLength)
        let body = buffer.readSlice(length: length)!
        return MuxFrame(kind: kind, stream: stream, body: body)
    }
}
