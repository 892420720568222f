import NIOCore

/// One end of a multiplexed connection, as a state machine: it turns what
/// the application does into frames to send, and frames received into
/// events, enforcing per-stream flow control so that one slow stream
/// cannot stall the others.
///
/// Flow control: every stream starts with `baseWindow` bytes of DATA
/// allowed each way; a receiver configured with a larger `initialWindow`
/// grants the difference with a WINDOW frame as the stream opens (so the
/// two ends need not agree on their windows), and grants more as its
/// application consumes what arrived. A sender never exceeds the window it
/// was granted; a receiver treats a peer that does as broken. So the memory
/// a connection may have to hold for the peer is at most `initialWindow`
/// per open stream.
public struct MuxSession {
    /// The window every stream starts with, both ways, before any WINDOW frame.
    public static let baseWindow = 64 * 1024

    public enum Role: Sendable { case client, server }

    public struct Configuration: Sendable {
        /// Bytes of DATA the peer may send on a stream before this end has
        /// consumed any (at least `MuxSession.baseWindow`).
        public var initialWindow: Int
        /// Largest DATA body; bigger writes are cut into several frames.
        public var maxDataBody: Int
        /// Streams open at once; more OPENs are answered with RESET.
        public var maxStreams: Int
        /// Streams over the connection's lifetime; then it goes away, so a
        /// long-lived connection does not become a fingerprint of its own.
        public var maxStreamsPerConnection: Int

        public init(initialWindow: Int = 256 * 1024, maxDataBody: Int = 16 * 1024, maxStreams: Int = 128, maxStreamsPerConnection: Int = 1000) {
            precondition(initialWindow >= MuxSession.baseWindow, "a mux window is at least \(MuxSession.baseWindow) bytes")
            self.initialWindow = initialWindow
            self.maxDataBody = maxDataBody
            self.maxStreams = maxStreams
            self.maxStreamsPerConnection = maxStreamsPerConnection
        }
    }

    public enum Event: Equatable, Sendable {
        /// The peer opened a stream (server side).
        case opened(stream: UInt32, destination: Endpoint)
        case data(stream: UInt32, ByteBuffer)
        /// The peer granted more window: buffered data may now be sent.
        case writable(stream: UInt32)
        /// The peer sends no more on the stream.
        case finished(stream: UInt32)
        case reset(stream: UInt32)
        /// The peer accepts no new streams.
        case goAway
    }

    private struct Stream {
        var sendWindow: Int
        /// Bytes the peer may still send before we grant more.
        var receiveWindow: Int
        /// Bytes delivered to the application and consumed, not yet granted back.
        var consumedUngranted = 0
        var localFinished = false
        var remoteFinished = false
    }

    public let role: Role
    public let configuration: Configuration
    private var streams: [UInt32: Stream] = [:]
    private var nextStream: UInt32
    private var opened = 0
    public private(set) var peerWentAway = false
    public private(set) var wentAway = false

    public init(role: Role, configuration: Configuration = Configuration()) {
        self.role = role
        self.configuration = configuration
        self.nextStream = role == .client ? 1 : 2
    }

    public var openStreams: Int { streams.count }

    /// True when no new stream should be opened on this connection.
    public var isDraining: Bool { peerWentAway || wentAway || opened >= configuration.maxStreamsPerConnection }

    // MARK: Outbound

    /// Opens a stream: the OPEN frame (and a WINDOW when this end allows
    /// more than the base window). Nil when this connection takes no more
    /// streams (open another).
    public mutating func openStream(to destination: Endpoint) -> (stream: UInt32, frames: [MuxFrame])? {
        guard !isDraining, streams.count < configuration.maxStreams else { return nil }
        let id = nextStream
        nextStream += 2
        opened += 1
        streams[id] = newStream()
        return (id, [.open(stream: id, to: destination)] + initialGrant(stream: id))
    }

    private func newStream() -> Stream {
        Stream(sendWindow: Self.baseWindow, receiveWindow: configuration.initialWindow)
    }

    /// The WINDOW frame that raises the peer's window from the base to ours.
    private func initialGrant(stream id: UInt32) -> [MuxFrame] {
        let extra = configuration.initialWindow - Self.baseWindow
        return extra > 0 ? [.window(stream: id, increment: UInt32(extra))] : []
    }

    /// DATA frames for as much of `data` as the stream's window allows; what
    /// is left stays in `data` until a `.writable` event.
    public mutating func send(stream id: UInt32, _ data: inout ByteBuffer) -> [MuxFrame] {
        guard var stream = streams[id], !stream.localFinished else {
            data.moveReaderIndex(to: data.writerIndex)
            return []
        }
        var frames: [MuxFrame] = []
        while data.readableBytes > 0 && stream.sendWindow > 0 {
            let n = min(data.readableBytes, stream.sendWindow, configuration.maxDataBody)
            frames.append(MuxFrame(kind: .data, stream: id, body: data.readSlice(length: n)!))
            stream.sendWindow -= n
        }
        streams[id] = stream
        return frames
    }

    /// Bytes of the stream the application has taken; grants the peer more
    /// window once half of it has been used.
    public mutating func consumed(stream id: UInt32, bytes: Int) -> [MuxFrame] {
        guard var stream = streams[id] else { return [] }
        stream.consumedUngranted += bytes
        var frames: [MuxFrame] = []
        if stream.consumedUngranted >= configuration.initialWindow / 2 && !stream.remoteFinished {
            frames.append(.window(stream: id, increment: UInt32(stream.consumedUngranted)))
            stream.receiveWindow += stream.consumedUngranted
            stream.consumedUngranted = 0
        }
        streams[id] = stream
        return frames
    }

    public mutating func finish(stream id: UInt32) -> [MuxFrame] {
        guard var stream = streams[id], !stream.localFinished else { return [] }
        stream.localFinished = true
        streams[id] = stream.remoteFinished ? nil : stream
        return [MuxFrame(kind: .finish, stream: id)]
    }

    public mutating func reset(stream id: UInt32) -> [MuxFrame] {
        guard streams.removeValue(forKey: id) != nil else { return [] }
        return [MuxFrame(kind: .reset, stream: id)]
    }

    public mutating func goAway() -> [MuxFrame] {
        guard !wentAway else { return [] }
        wentAway = true
        return [MuxFrame(kind: .goAway, stream: 0)]
    }

    // MARK: Inbound

    /// Handles one frame from the peer. Returns the events for the
    /// application and any frames to send back. Throws when the peer broke
    /// the protocol; the connection must then be closed.
    public mutating func receive(_ frame: MuxFrame) throws -> (events: [Event], replies: [MuxFrame]) {
        let id = frame.stream
        switch frame.kind {
        case .padding:
            return ([], [])
        case .goAway:
            peerWentAway = true
            return ([.goAway], [])
        case .open:
            let peerParity: UInt32 = role == .client ? 0 : 1
            guard id % 2 == peerParity else { throw WireError.malformed("the peer opened stream \(id), which is ours to number") }
            guard streams[id] == nil else { throw WireError.malformed("the peer opened stream \(id) twice") }
            let destination = try frame.destination()
            guard streams.count < configuration.maxStreams, !wentAway else {
                return ([], [MuxFrame(kind: .reset, stream: id)])
            }
            streams[id] = newStream()
            opened += 1
            return ([.opened(stream: id, destination: destination)], initialGrant(stream: id))
        case .data:
            guard var stream = streams[id] else { return ([], []) } // late data for a stream we reset
            guard !stream.remoteFinished else { throw WireError.malformed("DATA after FINISH on stream \(id)") }
            guard frame.body.readableBytes <= stream.receiveWindow else {
                throw WireError.malformed("the peer sent \(frame.body.readableBytes) bytes on stream \(id) with only \(stream.receiveWindow) granted")
            }
            stream.receiveWindow -= frame.body.readableBytes
            streams[id] = stream
            return ([.data(stream: id, frame.body)], [])
        case .window:
            let increment = Int(try frame.windowIncrement())
            guard var stream = streams[id] else { return ([], []) }
            guard stream.sendWindow + increment <= Int(UInt32.max) else { throw WireError.malformed("window overflow on stream \(id)") }
            let wasBlocked = stream.sendWindow == 0
            stream.sendWindow += increment
            streams[id] = stream
            return (wasBlocked ? [.writable(stream: id)] : [], [])
        case .finish:
            guard var stream = streams[id] else { return ([], []) }
            stream.remoteFinished = true
            streams[id] = stream.localFinished ? nil : stream
            return ([.finished(stream: id)], [])
        case .reset:
            guard streams.removeValue(forKey: id) != nil else { return ([], []) }
            return ([.reset(stream: id)], [])
        }
    }

    /// Bytes the stream may still send now.
    public func sendWindow(stream id: UInt32) -> Int { streams[id]?.sendWindow ?? 0 }
}
