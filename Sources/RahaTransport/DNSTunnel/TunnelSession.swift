import NIOCore
import RahaWire

/// One end of a DNS tunnel session, both roles: a `TunnelChannel` whose
/// bytes are sealed by a `NoiseStream` and carried reliably by an
/// `ARQConnection`. The client and server drivers move ARQ segments in DNS
/// messages; this object moves bytes between the three layers and says when
/// the session is over. Used only on its event loop.
public final class TunnelSession {
    public let channel: TunnelChannel
    public private(set) var arq: ARQConnection
    private var noise: NoiseStream
    /// Sealed bytes the ARQ send buffer had no room for yet.
    private var wire: [UInt8] = []
    private var failure: Error?
    /// Called when there may be something new to send (the driver sends queries or answers held ones).
    public var wake: () -> Void = {}

    /// Plaintext written but not yet in the ARQ send buffer above which the channel turns unwritable.
    static let writeHighWater = 64 * 1024

    public init(channel: TunnelChannel, arq: ARQConnection, noise: NoiseStream) {
        self.channel = channel
        self.arq = arq
        self.noise = noise
    }

    /// Attaches the channel (its pipeline already set up) and starts.
    public func start() {
        channel.activate(engine: TunnelChannel.Engine(
            send: { [weak self] buffer in
                guard let self else { return }
                self.noise.write(Array(buffer.readableBytesView))
                self.pump()
                self.wake()
            },
            readResumed: { [weak self] in
                guard let self else { return }
                self.pump()
                self.wake()
            },
            close: { [weak self] in
                guard let self else { return }
                self.pump()
                self.arq.close()
                self.wake()
            }))
        pump()
    }

    /// The Noise prologue: binds a session to its zone, so a key for one
    /// zone never completes a handshake with another zone's server.
    public static func prologue(zone: DNSName) -> [UInt8] {
        Array("raha-dns-1 \(zone.description.lowercased())".utf8)
    }

    /// The monotonic clock the ARQ runs on.
    public static func now() -> Duration {
        .nanoseconds(Int64(NIODeadline.now().uptimeNanoseconds))
    }

    /// Hands a segment from the peer to the ARQ and moves what it released.
    public func receive(_ segment: ARQSegment, now: Duration) {
        arq.receive(segment, now: now)
        pump()
    }

    /// The next segment to send in a query (client), or nil for none now.
    public func nextSegment(now: Duration, budget: Int) -> ARQSegment? {
        pump()
        return arq.nextSegment(now: now, budget: budget)
    }

    /// A poll whether or not one is due (client), or nil once reset.
    public func poll(now: Duration, budget: Int) -> ARQSegment? {
        arq.poll(now: now, budget: budget)
    }

    /// The segment for an answer (server).
    public func answer(now: Duration, budget: Int) -> ARQSegment {
        pump()
        return arq.answer(now: now, budget: budget)
    }

    /// The Noise handshake completed: the peer proved it holds the bridge's key.
    public var isEstablished: Bool { noise.isEstablished }

    /// True once both streams ended (or the session failed) and nothing more is owed.
    public var isFinished: Bool {
        switch arq.state {
        case .closed, .reset: return true
        case .open, .closing: return false
        }
    }

    /// Aborts both ways (the next segment tells the peer).
    public func abort(_ error: Error) {
        failure = failure ?? error
        arq.reset()
        channel.engineClosed(error: error)
    }

    /// Moves bytes: sealed output into the ARQ, arrived bytes through Noise
    /// into the channel; closes the channel when the session ended.
    public func pump() {
        guard failure == nil else { return }
        moveSealed()
        channel.setWritable(noise.pendingPlaintextCount + wire.count < Self.writeHighWater)
        while channel.wantsInbound {
            let bytes = arq.readable()
            guard !bytes.isEmpty else { break }
            do {
                let plaintext = try noise.receive(bytes)
                if !plaintext.isEmpty {
                    var buffer = channel.allocator.buffer(capacity: plaintext.count)
                    buffer.writeBytes(plaintext)
                    channel.deliver(buffer)
                }
            } catch {
                abort(error)
                return
            }
            moveSealed() // Noise may owe a handshake reply now
        }
        if arq.state == .reset {
            channel.engineClosed(error: DNSTunnelError.sessionReset)
        } else if arq.peerClosed && channel.wantsInbound && channel.isDrained {
            // The peer ended its stream: the channel (and the mux on it) is done.
            channel.engineClosed(error: nil)
            arq.close()
        }
    }

    /// Sealed output into the ARQ's send buffer, as much as it takes.
    private func moveSealed() {
        wire += noise.takeOutbound()
        guard !wire.isEmpty else { return }
        let taken = arq.send(wire)
        if taken > 0 { wire.removeFirst(taken) }
    }
}

/// Why a DNS tunnel session failed, in words safe to show and log (no
/// address, no name but the zone's).
public struct DNSTunnelError: PrivacySafeError {
    public let description: String
    public init(_ description: String) { self.description = description }

    public static let sessionReset = DNSTunnelError("the DNS tunnel session was reset (the bridge restarted, or too many queries went unanswered)")
    public static let refused = DNSTunnelError("the zone's server answered, but not as the bridge of this key: the key's public key or zone is wrong, or the zone is not delegated to the bridge")
}
