/// Noise NK over a reliable byte stream, for both ends of a tunnel.
///
/// Every message, handshake or transport, goes on the wire as a two-byte
/// big-endian length followed by the message. The initiator's handshake
/// message is ready in `takeOutbound()` right after init; the responder's
/// reply once it has received that. Both handshake payloads are empty:
/// plaintext written before the handshake is done is held and sealed after,
/// in frames of at most `Noise.maxPlaintextLength` bytes.
///
/// Any error thrown by `receive` is final: the caller aborts the connection.
public struct NoiseStream: Sendable {
    public enum Role: Sendable {
        /// The client: it knows the bridge's 32-byte static public key.
        case initiator(responderStatic: [UInt8])
        /// The bridge: it holds the static key pair.
        case responder(NoiseKeyPair)
    }

    private enum Phase: Sendable {
        case initiatorAwaitingReply(NoiseNKInitiator)
        case responderAwaitingFirst(NoiseNKResponder)
        case established(NoiseSession)
        case failed(WireError)
    }

    /// The length prefix of every frame.
    static let lengthPrefix = 2
    /// The initiator's first frame with an empty payload: length, ephemeral key, tag.
    public static let firstMessageLength = lengthPrefix + Noise.keyLength + Noise.tagLength

    private var phase: Phase
    /// Framed bytes not yet taken.
    private var outbound: [UInt8] = []
    /// Plaintext not yet sealed.
    private var pending: [UInt8] = []
    /// Received bytes that do not yet make a whole frame (at most one frame's worth after `receive`).
    private var inbound: [UInt8] = []

    /// Throws WireError(.badKey) for an initiator whose responder key is not 32 bytes.
    public init(role: Role, prologue: [UInt8] = []) throws {
        switch role {
        case .initiator(let responderStatic):
            try self.init(initiator: NoiseNKInitiator(responderStatic: responderStatic, prologue: prologue))
        case .responder(let keyPair):
            self.init(responder: NoiseNKResponder(staticKey: keyPair, prologue: prologue))
        }
    }

    /// From a handshake state of the caller's making (tests choose the ephemeral key).
    init(initiator: NoiseNKInitiator) throws {
        var initiator = initiator
        let first = try initiator.writeMessage()
        phase = .initiatorAwaitingReply(initiator)
        Self.frame(first, into: &outbound)
    }

    init(responder: NoiseNKResponder) {
        phase = .responderAwaitingFirst(responder)
    }

    /// True once this end has its transport keys: for the initiator after the
    /// reply arrived, for the responder after it read the first message.
    public var isEstablished: Bool {
        if case .established = phase { return true }
        return false
    }

    /// Plaintext queued but not yet sealed, for backpressure.
    public var pendingPlaintextCount: Int { pending.count }

    /// Queue plaintext; sealed into frames once the handshake is done (held before).
    public mutating func write(_ plaintext: [UInt8]) {
        pending += plaintext
    }

    /// Framed bytes to put on the wire now: handshake messages and sealed frames.
    ///
    /// Should a key ever exhaust its nonces (2^64-1 frames), nothing more is
    /// sealed and the next `receive` throws that error.
    public mutating func takeOutbound() -> [UInt8] {
        if case .established(var session) = phase, !pending.isEmpty {
            phase = .failed(WireError.malformed("NoiseStream was left mid-update"))
            var start = 0
            do {
                while start < pending.count {
                    let end = min(pending.count, start + Noise.maxPlaintextLength)
                    Self.frame(try session.encrypt(Array(pending[start..<end])), into: &outbound)
                    start = end
                }
                phase = .established(session)
            } catch let error as WireError {
                phase = .failed(error)
            } catch {
                phase = .failed(WireError.malformed("Noise could not seal: \(error)"))
            }
            pending.removeFirst(start)
        }
        defer { outbound = [] }
        return outbound
    }

    /// Bytes from the peer (any split); returns the plaintext that became
    /// readable. Throws WireError on any failure (bad frame, bad tag, bad
    /// handshake): the caller then aborts the connection.
    public mutating func receive(_ bytes: [UInt8]) throws -> [UInt8] {
        if case .failed(let error) = phase { throw error }
        inbound += bytes
        var plaintext: [UInt8] = []
        var start = 0
        defer { inbound.removeFirst(start) }
        while inbound.count - start >= Self.lengthPrefix {
            let length = Int(inbound[start]) << 8 | Int(inbound[start + 1])
            guard inbound.count - start - Self.lengthPrefix >= length else { break }
            let message = Array(inbound[(start + Self.lengthPrefix)..<(start + Self.lengthPrefix + length)])
            start += Self.lengthPrefix + length
            do {
                try handle(message, plaintext: &plaintext)
            } catch let error as WireError {
                phase = .failed(error)
                throw error
            } catch {
                let wrapped = WireError.malformed("Noise failed: \(error)")
                phase = .failed(wrapped)
                throw wrapped
            }
        }
        return plaintext
    }

    private mutating func handle(_ message: [UInt8], plaintext: inout [UInt8]) throws {
        switch phase {
        case .failed(let error):
            throw error
        case .initiatorAwaitingReply(var initiator):
            let (payload, session) = try initiator.readMessage(message)
            try Self.checkEmpty(payload)
            phase = .established(session)
        case .responderAwaitingFirst(var responder):
            try Self.checkEmpty(try responder.readMessage(message))
            let (reply, session) = try responder.writeMessage()
            Self.frame(reply, into: &outbound)
            phase = .established(session)
        case .established(var session):
            phase = .failed(WireError.malformed("NoiseStream was left mid-update"))
            plaintext += try session.decrypt(message)
            phase = .established(session)
        }
    }

    /// Moves the sending nonce to the reserved 2^64-1, so the next seal fails: for tests of nonce exhaustion.
    mutating func exhaustSendNonceForTesting() {
        guard case .established(var session) = phase else { return }
        session.sender.nonce = UInt64.max
        phase = .established(session)
    }

    private static func checkEmpty(_ payload: [UInt8]) throws {
        guard payload.isEmpty else {
            throw WireError.malformed("a NoiseStream handshake message carries a \(payload.count)-byte payload, expected none: the peer speaks another version")
        }
    }

    private static func frame(_ message: [UInt8], into out: inout [UInt8]) {
        precondition(message.count <= Noise.maxMessageLength, "a Noise message is at most 65535 bytes")
        out.append(UInt8(message.count >> 8))
        out.append(UInt8(message.count & 0xff))
        out += message
    }
}
