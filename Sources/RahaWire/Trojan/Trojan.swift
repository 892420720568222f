import CLibCrypto
import NIOCore

/// The Trojan protocol (trojan-gfw's protocol document), as pure code.
///
/// Inside TLS the client sends `hex(SHA-224(password))`, CRLF, a SOCKS5-like
/// request (CMD, ATYP, address, port), CRLF, then payload. A server that
/// cannot read a valid header for one of its users must hand every byte it
/// received to its fallback web site, so the header reader never consumes
/// anything until it has decided.
public enum Trojan {
    public enum Command: UInt8, Sendable {
        case connect = 0x01
        case udpAssociate = 0x03
    }

    public struct Request: Hashable, Sendable {
        public var command: Command
        public var destination: Endpoint
        public init(command: Command, destination: Endpoint) {
            self.command = command
            self.destination = destination
        }
    }

    /// The destination a Raha client names to ask a Raha bridge for a
    /// multiplexed connection (a reserved name that never resolves, RFC 2606).
    public static let muxDestination = Endpoint(host: .domain("mux.raha.invalid"), port: 1)

    /// Length of the hex SHA-224 of a password.
    public static let hashLength = 56
    /// The longest header: hash, CRLF, CMD, ATYP, a 255-byte name, port, CRLF.
    public static let maxHeaderLength = hashLength + 2 + 1 + 1 + 1 + 255 + 2 + 2

    /// `hex(SHA-224(password))` as the 56 ASCII bytes that go on the wire.
    public static func passwordHash(_ password: String) -> [UInt8] {
        let input = Array(password.utf8)
        var digest = [UInt8](repeating: 0, count: Int(SHA224_DIGEST_LENGTH))
        input.withUnsafeBufferPointer { p in
            digest.withUnsafeMutableBufferPointer { d in _ = SHA224(p.baseAddress, p.count, d.baseAddress) }
        }
        let hex = Array("0123456789abcdef".utf8)
        return digest.flatMap { [hex[Int($0 >> 4)], hex[Int($0 & 0x0f)]] }
    }

    /// Writes the client's header, followed by the first payload if any (so
    /// that the first TLS record carries both, as the protocol recommends).
    public static func writeHeader(passwordHash: [UInt8], request: Request, payload: ByteBufferView? = nil, to buffer: inout ByteBuffer) {
        precondition(passwordHash.count == hashLength)
        buffer.writeBytes(passwordHash)
        buffer.writeBytes([0x0d, 0x0a, request.command.rawValue])
        request.destination.write(to: &buffer)
        buffer.writeBytes([0x0d, 0x0a])
        if let payload { buffer.writeBytes(payload) }
    }

    /// What the bridge makes of the first bytes of a TLS stream.
    public enum HeaderDecision: Equatable, Sendable {
        /// Not enough bytes yet to decide; nothing was consumed.
        case needMoreData
        /// A valid header of user `user` (index into the hashes given): it
        /// was consumed, what follows is payload (or UDP frames).
        case authenticated(user: Int, request: Request)
        /// Not a Trojan client of ours: nothing was consumed; hand everything
        /// received, byte for byte, to the fallback site.
        case fallback
    }

    /// Decides on the header at the start of `buffer` for the given user hashes.
    /// Consumes the header only on `.authenticated`. Comparison of the hash is
    /// constant-time with respect to each user's hash.
    public static func readHeader(from buffer: inout ByteBuffer, userHashes: [[UInt8]]) -> HeaderDecision {
        var copy = buffer
        let available = copy.readableBytes
        // Every byte of the hash must be a lowercase or uppercase hex digit.
        let hashPart = copy.readableBytesView.prefix(hashLength)
        guard hashPart.allSatisfy(isHexDigit) else { return .fallback }
        guard available >= hashLength + 2 else { return .needMoreData }
        let hash = copy.readBytes(length: hashLength)!.map(lowercased)
        guard copy.readBytes(length: 2)! == [0x0d, 0x0a] else { return .fallback }
        var user: Int?
        for (index, candidate) in userHashes.enumerated() where constantTimeEquals(hash, candidate) {
            user = index
        }
        guard let user else { return .fallback }
        guard let rawCommand = copy.readInteger(as: UInt8.self) else { return .needMoreData }
        guard let command = Command(rawValue: rawCommand) else { return .fallback }
        let destination: Endpoint
        do {
            guard let d = try Endpoint.read(from: &copy) else { return .needMoreData }
            destination = d
        } catch {
            return .fallback
        }
        guard let crlf = copy.readBytes(length: 2) else { return .needMoreData }
        guard crlf == [0x0d, 0x0a] else { return .fallback }
        buffer = copy
        return .authenticated(user: user, request: Request(command: command, destination: destination))
    }

    /// The largest datagram payload Raha puts in one UDP frame. The length
    /// field could say 65535, but v2ray (4.34 and later) reads at most 8192
    /// bytes per frame and closes the connection on a longer one; a larger datagram is
    /// dropped instead, like any UDP loss. Frames received may be longer.
    public static let maxUDPPayload = 8192

    /// The longest UDP frame: ATYP, a 255-byte name, port, length, CRLF, and 65535 bytes.
    public static let maxUDPFrameLength = 1 + 1 + 255 + 2 + 2 + 2 + Int(UInt16.max)

    /// One UDP datagram inside a Trojan stream:
    /// ATYP, address, port, length (u16), CRLF, payload.
    public struct UDPFrame: Hashable, Sendable {
        public var endpoint: Endpoint
        public var payload: ByteBuffer

        public init(endpoint: Endpoint, payload: ByteBuffer) {
            self.endpoint = endpoint
            self.payload = payload
        }

        public func write(to buffer: inout ByteBuffer) {
            precondition(payload.readableBytes <= Int(UInt16.max))
            endpoint.write(to: &buffer)
            buffer.writeInteger(UInt16(payload.readableBytes))
            buffer.writeBytes([0x0d, 0x0a])
            buffer.writeImmutableBuffer(payload)
        }

        /// Reads one frame; nil (nothing consumed) until it has all arrived.
        public static func read(from buffer: inout ByteBuffer) throws -> UDPFrame? {
            var copy = buffer
            guard let endpoint = try Endpoint.read(from: &copy),
                  let length = copy.readInteger(as: UInt16.self),
                  let crlf = copy.readBytes(length: 2) else { return nil }
            guard crlf == [0x0d, 0x0a] else { throw WireError.malformed("a Trojan UDP frame lacks the CRLF after its length") }
            guard let payload = copy.readSlice(length: Int(length)) else { return nil }
            buffer = copy
            return UDPFrame(endpoint: endpoint, payload: payload)
        }
    }

    /// Cuts a Trojan UDP stream into frames: append what arrives, then take
    /// frames while `next()` returns them. It holds at most one incomplete
    /// frame (under `maxUDPFrameLength` bytes) plus the last bytes appended.
    public struct UDPFrameCutter: Sendable {
        private var buffer = ByteBuffer()

        public init() {}

        /// Bytes received but not yet part of a whole frame.
        public var bufferedBytes: Int { buffer.readableBytes }

        public mutating func append(_ bytes: ByteBuffer) {
            if buffer.readableBytes == 0 {
                buffer = bytes
            } else {
                var bytes = bytes
                buffer.writeBuffer(&bytes)
            }
        }

        /// The next whole frame, or nil until more bytes arrive. Throws on a
        /// malformed frame (unknown address type, no CRLF after the length):
        /// the stream cannot be resynchronised, so the connection should end.
        public mutating func next() throws -> UDPFrame? {
            if let frame = try UDPFrame.read(from: &buffer) { return frame }
            if buffer.readableBytes == 0 {
                buffer = ByteBuffer() // let go of the storage the frames were cut from
            } else if buffer.readerIndex > 0 {
                buffer.discardReadBytes()
            }
            return nil
        }
    }

    private static func isHexDigit(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66) || (b >= 0x41 && b <= 0x46)
    }

    private static func lowercased(_ b: UInt8) -> UInt8 { b >= 0x41 && b <= 0x46 ? b + 0x20 : b }
}
