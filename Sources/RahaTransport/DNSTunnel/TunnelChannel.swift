import NIOConcurrencyHelpers
import NIOCore

/// A byte stream that no socket carries, as a NIO `Channel`: an engine (the
/// DNS tunnel's session) takes what the pipeline writes and hands it what
/// arrived, so the mux and every handler written for a socket run on it.
///
/// - Writes: flushed buffers go to the engine's `send` at once; their
///   promises succeed there, as a socket's do once the kernel took the bytes.
///   The engine says when it holds too much (`setWritable(false)`) and when
///   it drained (`setWritable(true)`).
/// - Reads: what the engine `deliver`s reaches the pipeline against a
///   `read()` (autoRead issues them); the rest waits here, and the engine
///   reads on only while `wantsInbound` (backpressure down to its window).
/// - Close from the pipeline: the engine's `close` (it ends its stream
///   after what was written), then the channel is inactive at once. Close
///   from the engine: `engineClosed(error:)`.
public final class TunnelChannel: Channel, ChannelCore, @unchecked Sendable {
    // @unchecked Sendable: mutable state is touched only on the event loop,
    // except the flags behind `isActive` and `isWritable`, which are locked.

    /// What the channel needs from the engine beneath it (called on the event loop).
    public struct Engine {
        public var send: (ByteBuffer) -> Void
        /// The pipeline read what was held: the engine may deliver more.
        public var readResumed: () -> Void
        public var close: () -> Void
        public init(send: @escaping (ByteBuffer) -> Void, readResumed: @escaping () -> Void, close: @escaping () -> Void) {
            self.send = send
            self.readResumed = readResumed
            self.close = close
        }
    }

    public let parent: Channel? = nil
    public let eventLoop: EventLoop
    public let allocator = ByteBufferAllocator()
    public let localAddress: SocketAddress?
    public let remoteAddress: SocketAddress?
    private var _pipeline: ChannelPipeline!
    private let closePromise: EventLoopPromise<Void>

    public var pipeline: ChannelPipeline { _pipeline }
    public var closeFuture: EventLoopFuture<Void> { closePromise.futureResult }
    public var _channelCore: ChannelCore { self }

    private struct Flags {
        var isActive = true
        var isWritable = true
    }
    private let flags = NIOLockedValueBox(Flags())
    public var isActive: Bool { flags.withLockedValue { $0.isActive } }
    public var isWritable: Bool { flags.withLockedValue { $0.isWritable } }

    private var engine: Engine?
    private var closed = false
    private var autoRead = true
    private var readPending = false
    private var held = CircularBuffer<ByteBuffer>()
    private var heldBytes = 0
    private var pendingWrites: [(ByteBuffer, EventLoopPromise<Void>?)] = []

    /// Bytes the pipeline has not read yet above which the engine should stop delivering.
    public static let inboundLimit = 64 * 1024

    public init(eventLoop: EventLoop, localAddress: SocketAddress? = nil, remoteAddress: SocketAddress? = nil) {
        self.eventLoop = eventLoop
        self.localAddress = localAddress
        self.remoteAddress = remoteAddress
        self.closePromise = eventLoop.makePromise()
        self._pipeline = ChannelPipeline(channel: self)
    }

    /// Attaches the engine and makes the channel active (call once the
    /// pipeline is set up, on the event loop).
    public func activate(engine: Engine) {
        eventLoop.preconditionInEventLoop()
        self.engine = engine
        pipeline.fireChannelActive()
        if autoRead { pipeline.read() }
    }

    public var description: String { "TunnelChannel(active: \(isActive))" }

    // MARK: Engine side

    /// Whether the engine should deliver more now.
    public var wantsInbound: Bool { !closed && heldBytes < Self.inboundLimit }

    /// Everything delivered has been read by the pipeline.
    public var isDrained: Bool { held.isEmpty }

    public func deliver(_ buffer: ByteBuffer) {
        guard !closed, buffer.readableBytes > 0 else { return }
        held.append(buffer)
        heldBytes += buffer.readableBytes
        deliverHeld()
    }

    public func setWritable(_ writable: Bool) {
        let changed = flags.withLockedValue { flags -> Bool in
            guard flags.isWritable != writable else { return false }
            flags.isWritable = writable
            return true
        }
        if changed && !closed { pipeline.fireChannelWritabilityChanged() }
    }

    /// The engine's stream ended (cleanly with nil) or failed.
    public func engineClosed(error: Error?) {
        finishClosing(error: error, tellEngine: false)
    }

    private func deliverHeld() {
        guard readPending, !held.isEmpty, !closed else { return }
        readPending = false
        while let buffer = held.popFirst(), !closed {
            heldBytes -= buffer.readableBytes
            pipeline.fireChannelRead(buffer)
        }
        guard !closed else { return }
        pipeline.fireChannelReadComplete()
        if autoRead && !closed { pipeline.read() }
        if !closed { engine?.readResumed() }
    }

    // MARK: Channel

    public func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) -> EventLoopFuture<Void> {
        if eventLoop.inEventLoop {
            setOption0(option, value: value)
            return eventLoop.makeSucceededVoidFuture()
        }
        return eventLoop.submit { self.setOption0(option, value: value) }
    }

    public func getOption<Option: ChannelOption>(_ option: Option) -> EventLoopFuture<Option.Value> {
        if eventLoop.inEventLoop { return eventLoop.makeCompletedFuture { try self.getOption0(option) } }
        return eventLoop.submit { try self.getOption0(option) }
    }

    private func setOption0<Option: ChannelOption>(_ option: Option, value: Option.Value) {
        if option is ChannelOptions.Types.AutoReadOption {
            autoRead = value as! Bool
            if autoRead && !closed { pipeline.read() }
        }
        // Socket options have no meaning here.
    }

    private func getOption0<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
        if option is ChannelOptions.Types.AutoReadOption { return autoRead as! Option.Value }
        throw ChannelError.operationUnsupported
    }

    // MARK: ChannelCore

    public func localAddress0() throws -> SocketAddress {
        guard let localAddress else { throw ChannelError.operationUnsupported }
        return localAddress
    }

    public func remoteAddress0() throws -> SocketAddress {
        guard let remoteAddress else { throw ChannelError.operationUnsupported }
        return remoteAddress
    }

    public func register0(promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    public func bind0(to: SocketAddress, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    public func connect0(to: SocketAddress, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }

    public func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !closed else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        if let buffer = tryUnwrapData(data, as: ByteBuffer.self) {
            pendingWrites.append((buffer, promise))
        } else if let io = tryUnwrapData(data, as: IOData.self), case .byteBuffer(let buffer) = io {
            pendingWrites.append((buffer, promise))
        } else {
            promise?.fail(ChannelError.operationUnsupported)
        }
    }

    public func flush0() {
        let writes = pendingWrites
        pendingWrites.removeAll()
        for (buffer, promise) in writes {
            guard !closed, let engine else {
                promise?.fail(ChannelError.ioOnClosedChannel)
                continue
            }
            if buffer.readableBytes > 0 { engine.send(buffer) }
            promise?.succeed()
        }
    }

    public func read0() {
        guard !closed else { return }
        readPending = true
        if !held.isEmpty { eventLoop.execute { self.deliverHeld() } }
    }

    public func close0(error: Error, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard !closed else {
            promise?.fail(ChannelError.alreadyClosed)
            return
        }
        guard mode == .all else {
            promise?.fail(ChannelError.operationUnsupported)
            return
        }
        flush0()
        finishClosing(error: nil, tellEngine: true)
        promise?.succeed()
    }

    public func triggerUserOutboundEvent0(_ event: Any, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    public func channelRead0(_ data: NIOAny) {}
    public func errorCaught0(error: Error) {}

    private func finishClosing(error: Error?, tellEngine: Bool) {
        guard !closed else { return }
        closed = true
        flags.withLockedValue { $0.isActive = false }
        held.removeAll()
        heldBytes = 0
        let writes = pendingWrites
        pendingWrites.removeAll()
        for (_, promise) in writes { promise?.fail(error ?? ChannelError.ioOnClosedChannel) }
        let engine = self.engine
        self.engine = nil
        if tellEngine { engine?.close() }
        if let error { pipeline.fireErrorCaught(error) }
        pipeline.fireChannelInactive()
        eventLoop.execute {
            self.removeHandlers(pipeline: self.pipeline)
            self.closePromise.succeed()
        }
    }
}
