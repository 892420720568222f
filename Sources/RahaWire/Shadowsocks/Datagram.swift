import Crypto
import CryptoExtras
import Foundation
import NIOCore

/// One proxied UDP datagram after decryption: who it is for (client to
/// server) or from (server to client), and its payload.
public struct ShadowsocksDatagram: Equatable, Sendable {
    public var endpoint: Endpoint
    public var payload: [UInt8]
    /// 2022: the sender's session and packet IDs. Legacy: nil.
    public var sessionID: UInt64?
    public var packetID: UInt64?
    /// 2022 server-to-client: the client session the packet answers.
    public var clientSessionID: UInt64?
    /// Legacy: the packet's salt, for the replay filter. 2022: nil.
    public var salt: [UInt8]?

    public init(endpoint: Endpoint, payload: [UInt8]) {
        self.endpoint = endpoint
        self.payload = payload
    }
}

/// Shadowsocks UDP packet formats: legacy AEAD (one salt per packet, nonce
/// zero) and SIP022 (session ID and packet ID, block-cipher-protected
/// separate header for AES, XChaCha20-Poly1305 for ChaCha).
public enum ShadowsocksUDP {
    public enum Direction: UInt8, Sendable { case clientToServer = 0, serverToClient = 1 }

    /// Seals one datagram.
    ///
    /// For 2022 methods `sessionID`/`packetID` are the sender's, and
    /// `clientSessionID` is required when the server sends.
    public static func seal(
        _ datagram: ShadowsocksDatagram, direction: Direction, credential: ShadowsocksCredential,
        sessionID: UInt64 = 0, packetID: UInt64 = 0, clientSessionID: UInt64 = 0, now: UInt64,
        subkeyCache: inout SubkeyCache
    ) -> [UInt8] {
        let method = credential.method
        var address = ByteBuffer()
        datagram.endpoint.write(to: &address)
        guard method.is2022 else {
            var salt = [UInt8](repeating: 0, count: method.saltLength)
            SecureRandom.fill(&salt)
            var cipher = AEADStreamCipher(method: method, key: credential.subkey(salt: salt))
            var out = ByteBuffer(bytes: salt)
            cipher.seal(Array(address.readableBytesView) + datagram.payload, into: &out)
            return Array(out.readableBytesView)
        }
        var body: [UInt8] = [direction.rawValue]
        body += ShadowsocksServerSession.bytes(of: now)
        if direction == .serverToClient { body += ShadowsocksServerSession.bytes(of: clientSessionID) }
        body += [0, 0] // no padding: datagram sizes already vary with their payload
        body += address.readableBytesView
        body += datagram.payload
        let separate = ShadowsocksServerSession.bytes(of: sessionID) + ShadowsocksServerSession.bytes(of: packetID)
        // The `try!`s below cannot fail: key, nonce and block sizes are fixed by the method,
        // and ShadowsocksCredential checked the key's length.
        if method.isChaCha {
            var nonce = [UInt8](repeating: 0, count: 24)
            SecureRandom.fill(&nonce)
            let sealed = try! XChaCha20Poly1305.seal(separate + body, key: credential.masterKey, nonce: nonce)
            return nonce + sealed
        }
        var header = separate
        try! AES.permute(&header, key: SymmetricKey(data: credential.masterKey))
        let key = subkeyCache.key(for: sessionID, credential: credential)
        let box = try! AES.GCM.seal(body, using: key, nonce: AES.GCM.Nonce(data: separate[4..<16]))
        return header + Array(box.ciphertext) + Array(box.tag)
    }

    /// Opens one datagram; throws `.authentication` for anything that is not
    /// a valid packet of this key, and `.clock` for a stale 2022 timestamp.
    /// Replay checks (salt filter, packet-ID window) are the caller's.
    public static func open(
        _ packet: [UInt8], direction: Direction, credential: ShadowsocksCredential, now: UInt64,
        subkeyCache: inout SubkeyCache
    ) throws -> ShadowsocksDatagram {
        let method = credential.method
        let tag = AEADStreamCipher.tagLength
        let body: [UInt8]
        var sessionID: UInt64?
        var packetID: UInt64?
        if !method.is2022 {
            guard packet.count >= method.saltLength + tag else { throw Self.notAPacket }
            let salt = Array(packet[..<method.saltLength])
            var cipher = AEADStreamCipher(method: method, key: credential.subkey(salt: salt))
            var plain = ByteBuffer(bytes: try cipher.open(ByteBuffer(bytes: packet[method.saltLength...]).readableBytesView))
            guard let endpoint = try? Endpoint.read(from: &plain) else { throw Self.notAPacket }
            var d = ShadowsocksDatagram(endpoint: endpoint, payload: Array(plain.readableBytesView))
            d.salt = salt
            return d
        }
        if method.isChaCha {
            guard packet.count >= 24 + 16 + tag else { throw Self.notAPacket }
            let nonce = Array(packet[..<24])
            let plain: [UInt8]
            do { plain = try XChaCha20Poly1305.open(Array(packet[24...]), key: credential.masterKey, nonce: nonce) } catch { throw Self.notAPacket }
            sessionID = ShadowsocksServerSession.readUInt64(plain, at: 0)
            packetID = ShadowsocksServerSession.readUInt64(plain, at: 8)
            body = Array(plain[16...])
        } else {
            guard packet.count >= 16 + tag else { throw Self.notAPacket }
            var header = Array(packet[..<16])
            try AES.inversePermute(&header, key: SymmetricKey(data: credential.masterKey))
            let sid = ShadowsocksServerSession.readUInt64(header, at: 0)
            sessionID = sid
            packetID = ShadowsocksServerSession.readUInt64(header, at: 8)
            let key = subkeyCache.key(for: sid, credential: credential)
            do {
                let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: header[4..<16]), ciphertext: packet[16..<(packet.count - tag)], tag: packet[(packet.count - tag)...])
                body = Array(try AES.GCM.open(box, using: key))
            } catch { throw Self.notAPacket }
        }
        var buf = ByteBuffer(bytes: body)
        guard let type = buf.readInteger(as: UInt8.self), type == direction.rawValue,
              let timestamp = buf.readInteger(as: UInt64.self) else { throw Self.notAPacket }
        try ShadowsocksServerSession.checkClock(timestamp, now: now)
        var clientSessionID: UInt64?
        if direction == .serverToClient {
            guard let c = buf.readInteger(as: UInt64.self) else { throw Self.notAPacket }
            clientSessionID = c
        }
        guard let padding = buf.readInteger(as: UInt16.self), buf.readableBytes >= Int(padding) else { throw Self.notAPacket }
        buf.moveReaderIndex(forwardBy: Int(padding))
        guard let endpoint = try? Endpoint.read(from: &buf) else { throw Self.notAPacket }
        var d = ShadowsocksDatagram(endpoint: endpoint, payload: Array(buf.readableBytesView))
        d.sessionID = sessionID
        d.packetID = packetID
        d.clientSessionID = clientSessionID
        return d
    }

    static let notAPacket = WireError(.authentication, "not a valid packet for this key")

    /// 2022 AES methods derive a subkey per session ID; deriving it per packet
    /// would cost a BLAKE3 call each time, so sessions keep a small cache.
    public struct SubkeyCache {
        private var entries: [UInt64: SymmetricKey] = [:]
        private let capacity: Int
        public init(capacity: Int = 64) { self.capacity = capacity }

        mutating func key(for sessionID: UInt64, credential: ShadowsocksCredential) -> SymmetricKey {
            if let k = entries[sessionID] { return k }
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            let k = credential.subkey(salt: ShadowsocksServerSession.bytes(of: sessionID))
            entries[sessionID] = k
            return k
        }
    }
}

/// SIP022's sliding-window replay filter for packet IDs.
public struct PacketWindow: Sendable {
    public static let size: UInt64 = 1024
    private var highest: UInt64?
    private var bits = [UInt64](repeating: 0, count: Int(PacketWindow.size / 64))

    public init() {}

    /// Accepts a packet ID once; refuses repeats and IDs older than the window.
    public mutating func accept(_ id: UInt64) -> Bool {
        guard let top = highest else {
            highest = id
            set(id)
            return true
        }
        if id > top {
            let advance = id - top
            if advance >= Self.size {
                for i in bits.indices { bits[i] = 0 }
            } else {
                var i = top + 1
                while i <= id { clear(i); i += 1 }
            }
            highest = id
            set(id)
            return true
        }
        guard top - id < Self.size, !isSet(id) else { return false }
        set(id)
        return true
    }

    private func slot(_ id: UInt64) -> (Int, UInt64) {
        let n = id % Self.size
        return (Int(n / 64), 1 << (n % 64))
    }
    private mutating func set(_ id: UInt64) { let (w, b) = slot(id); bits[w] |= b }
    private mutating func clear(_ id: UInt64) { let (w, b) = slot(id); bits[w] &= ~b }
    private func isSet(_ id: UInt64) -> Bool { let (w, b) = slot(id); return bits[w] & b != 0 }
}

/// Remembers salts so that a recorded connection or packet cannot be replayed.
///
/// Two exact sets in turn (no false positives, as SIP022 requires): a salt
/// is remembered at least `retention` seconds and while fewer than
/// `capacity` newer salts have arrived; memory stays bounded at two sets.
public struct SaltReplayFilter: Sendable {
    private struct Key: Hashable { var a: UInt64, b: UInt64, c: UInt64, d: UInt64 }
    private var current = Set<Key>()
    private var previous = Set<Key>()
    private var currentStarted: UInt64
    public let capacity: Int
    public let retention: UInt64

    public init(capacity: Int = 200_000, retention: UInt64 = 60, now: UInt64 = 0) {
        self.capacity = capacity
        self.retention = retention
        self.currentStarted = now
    }

    /// Returns true if the salt is new (and remembers it), false for a replay.
    public mutating func insert(_ salt: [UInt8], now: UInt64) -> Bool {
        let key = Self.key(salt)
        if current.contains(key) || previous.contains(key) { return false }
        if current.count >= capacity || now >= currentStarted + retention {
            previous = current
            current = []
            currentStarted = now
        }
        current.insert(key)
        return true
    }

    private static func key(_ salt: [UInt8]) -> Key {
        var words = [UInt64](repeating: 0, count: 4)
        for (i, byte) in salt.prefix(32).enumerated() { words[i / 8] |= UInt64(byte) << (8 * UInt64(i % 8)) }
        return Key(a: words[0], b: words[1], c: words[2], d: words[3] ^ UInt64(salt.count))
    }
}
