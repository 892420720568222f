import NIOConcurrencyHelpers
import NIOCore
import RahaWire

/// One stream of a multiplexed connection as a NIO `Channel`: its own
/// pipeline on the connection's event loop, reading and writing the
/// stream's plaintext as `ByteBuffer`s, so every handler written for a
/// socket (the glue, the proxy front, the bridge exit) works on it.
///
/// Created by a `MuxHandler` (never directly). Behaves like a TCP socket
/// with these specifics:
///
/// - Reads: data is delivered only against a `read()` (issued by `autoRead`
///   or by a handler such as the glue), at the end of the connection's read
///   burst or, for data already buffered, from the event loop (never from
///   inside `read()` itself). The peer is granted window only for bytes
///   delivered, so a stream whose reader stalls holds at most the initial
///   window and slows nobody else.
/// - Writes: DATA frames go out as the stream's send window allows; the
///   rest waits in the channel, which turns unwritable above its
///   write-buffer high-water mark, and also while the connection is not
///   writable.
/// - `close(mode: .output)`: FINISH after everything written so far.
/// - `close(mode: .all)`: RESET while the peer may still send (abort); once
///   the peer has finished, a graceful close instead: queued data and FINISH
///   are sent first (the channel stays active until then).
/// - Peer FINISH: `ChannelEvent.inputClosed` after all data before it was
///   read (or a close when `allowRemoteHalfClosure` is off). Peer RESET or
///   the connection ending: `MuxError` through `errorCaught`, then inactive.
/// - Once both directions have finished and the end was read, the channel
///   closes by itself (cleanly: no error), as an HTTP/2 stream channel does.
///
/// Options: `autoRead` (default on), `allowRemoteHalfClosure` (default on),
/// `writeBufferWaterMark`; other options are accepted and ignored when set,
/// unsupported when read.
public final class MuxStreamChannel: Channel, ChannelCore, @unchecked Sendable {
    // @unchecked Sendable: mutable state is touched only on the event loop,
    // except the flags behind `isActive` and `isWritable`, which are locked.

    /// The stream number on the connection (odd: opened by the client).
    public let streamID: UInt32
    public let parent: Channel?
    public let eventLoop: EventLoop
    public let allocator: ByteBufferAllocator
    public let localAddress: SocketAddress?
    public let remoteAddress: SocketAddress?
    private var _pipeline: ChannelPipeline!
    private let closePromise: EventLoopPromise<Void>

    public var pipeline: ChannelPipeline { _pipeline }
    public var closeFuture: EventLoopFuture<Void> { closePromise.futureResult }
    public var _channelCore: ChannelCore { self }

    private struct Flags {
        var isActive = false
        var isWritable = true
    }

    private let flags: NIOLockedValueBox<Flags>
    public var isActive: Bool { flags.withLockedValue { $0.isActive } }
    public var isWritable: Bool { flags.withLockedValue { $0.isWritable } }

    private enum State { case idle, active, closed }
    private enum Output { case open, finishing, finished }

    private var mux: MuxHandler?
    /// The destination the peer asked for (server role): fired as a `ProxyRequestEvent` on activation.
    private let request: Endpoint?
    private var state = State.idle
    /// Why the channel closed, when it was an error.
    private var closedError: Error?

    private var autoRead = true
    private var allowRemoteHalfClosure = true
    private var waterMark: ChannelOptions.Types.WriteBufferWaterMark

    // Inbound: slices of the connection's reads from this burst, and a
    // compact copy of what stayed unread across bursts (so a stalled stream
    // never pins whole read buffers of the connection).
    private var freshReads = CircularBuffer<ByteBuffer>()
    private var heldReads: ByteBuffer?
    private var unsatisfiedRead = false
    private var deliveryScheduled = false
    private var remoteFinished = false
    private var inputClosedDelivered = false
    var touchedInBurst = false

    // Outbound: written buffers not yet framed; the first `flushedCount` are flushed.
    private var pendingWrites = CircularBuffer<(ByteBuffer, EventLoopPromise<Void>?)>()
    private var flushedCount = 0
    private var bufferedBytes = 0
    private var bufferWritable = true
    private var parentWritable: Bool
    private var output = Output.open
    private var sentData = false
    private var finishPromises: [EventLoopPromise<Void>] = []
    /// A graceful `close()` waiting for the queued data and FINISH to go out.
    private var lingering = false
    private var closePromises: [EventLoopPromise<Void>] = []
    private var sending = false
    private var sendAgain = false

    init(parent: Channel, mux: MuxHandler, streamID: UInt32, request: Endpoint?,
         waterMark: ChannelOptions.Types.WriteBufferWaterMark, parentWritable: Bool) {
        self.streamID = streamID
        self.parent = parent
        self.eventLoop = parent.eventLoop
        self.allocator = parent.allocator
        self.localAddress = parent.localAddress
        self.remoteAddress = parent.remoteAddress
        self.closePromise = parent.eventLoop.makePromise()
        self.mux = mux
        self.request = request
        self.waterMark = waterMark
        self.parentWritable = parentWritable
        self.flags = NIOLockedValueBox(Flags(isActive: false, isWritable: parentWritable))
        self._pipeline = ChannelPipeline(channel: self)
    }

    public var description: String {
        "MuxStreamChannel(stream: \(streamID), active: \(isActive), writable: \(isWritable))"
    }

    /// Bytes received and not yet read by the pipeline (at most the initial window).
    var bufferedInboundBytes: Int {
        freshReads.reduce(heldReads?.readableBytes ?? 0) { $0 + $1.readableBytes }
    }

    // MARK: Set-up

    func configure(initializer: MuxHandler.StreamInitializer?, promise: EventLoopPromise<Channel>?) {
        guard let initializer else {
            activate()
            promise?.succeed(self)
            return
        }
        initializer(self).hop(to: eventLoop).whenComplete { result in
            switch result {
            case .success:
                self.activate()
                if self.state == .closed {
                    promise?.fail(self.closedError ?? ChannelError.ioOnClosedChannel)
                } else {
                    promise?.succeed(self)
                }
            case .failure(let error):
                self.abort(error: error)
                promise?.fail(error)
            }
        }
    }

    private func activate() {
        guard state == .idle else { return }
        state = .active
        flags.withLockedValue { $0.isActive = true }
        pipeline.fireChannelActive()
        if let request, state == .active {
            pipeline.fireUserInboundEventTriggered(ProxyRequestEvent(target: request))
        }
        guard state == .active else { return }
        if autoRead { pipeline.read() }
        if unsatisfiedRead && hasPendingInbound { scheduleDelivery() }
        sendPending()
    }

    // MARK: Channel

    public func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) -> EventLoopFuture<Void> {
        if eventLoop.inEventLoop {
            do {
                try setOption0(option, value: value)
                return eventLoop.makeSucceededVoidFuture()
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
        }
        return eventLoop.submit { try self.setOption0(option, value: value) }
    }

    public func getOption<Option: ChannelOption>(_ option: Option) -> EventLoopFuture<Option.Value> {
        if eventLoop.inEventLoop {
            do {
                return eventLoop.makeSucceededFuture(try getOption0(option))
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
        }
        return eventLoop.submit { try self.getOption0(option) }
    }

    private func setOption0<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
        eventLoop.preconditionInEventLoop()
        switch option {
        case _ as ChannelOptions.Types.AutoReadOption:
            let wasOn = autoRead
            autoRead = value as! Bool
            if autoRead && !wasOn && state == .active { pipeline.read() }
        case _ as ChannelOptions.Types.AllowRemoteHalfClosureOption:
            allowRemoteHalfClosure = value as! Bool
        case _ as ChannelOptions.Types.WriteBufferWaterMarkOption:
            waterMark = value as! ChannelOptions.Types.WriteBufferWaterMark
            updateWritability()
        default:
            break // socket options have no meaning on a stream
        }
    }

    private func getOption0<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
        eventLoop.preconditionInEventLoop()
        switch option {
        case _ as ChannelOptions.Types.AutoReadOption:
            return autoRead as! Option.Value
        case _ as ChannelOptions.Types.AllowRemoteHalfClosureOption:
            return allowRemoteHalfClosure as! Option.Value
        case _ as ChannelOptions.Types.WriteBufferWaterMarkOption:
            return waterMark as! Option.Value
        default:
            throw ChannelError.operationUnsupported
        }
    }

    private struct SynchronousOptions: NIOSynchronousChannelOptions {
        let channel: MuxStreamChannel
        func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
            try channel.setOption0(option, value: value)
        }
        func getOption<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
            try channel.getOption0(option)
        }
    }

    public var syncOptions: NIOSynchronousChannelOptions? { SynchronousOptions(channel: self) }

    // MARK: ChannelCore

    public func localAddress0() throws -> SocketAddress {
        guard let address = localAddress else { throw ChannelError.operationUnsupported }
        return address
    }

    public func remoteAddress0() throws -> SocketAddress {
        guard let address = remoteAddress else { throw ChannelError.operationUnsupported }
        return address
    }

    public func register0(promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    public func bind0(to: SocketAddress, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    public func connect0(to: SocketAddress, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    public func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard state != .closed else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        guard output == .open else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        let buffer: ByteBuffer
        if let bytes = tryUnwrapData(data, as: ByteBuffer.self) {
            buffer = bytes
        } else if let io = tryUnwrapData(data, as: IOData.self), case .byteBuffer(let bytes) = io {
            buffer = bytes
        } else {
            promise?.fail(ChannelError.operationUnsupported)
            return
        }
        pendingWrites.append((buffer, promise))
        bufferedBytes += buffer.readableBytes
        updateWritability()
    }

    public func flush0() {
        flushedCount = pendingWrites.count
        sendPending()
    }

    public func read0() {
        guard state != .closed, !unsatisfiedRead else { return }
        unsatisfiedRead = true
        if hasPendingInbound {
            scheduleDelivery()
        } else if !remoteFinished {
            mux?.readFromParent()
        }
    }

    /// Data already here is delivered from the event loop, not from inside
    /// `read()`: as on a socket, a handler that asks for a read (say while
    /// being added, before the handler in front of it has left) does not get
    /// the data while it is still in the middle of what it was doing.
    private func scheduleDelivery() {
        guard !deliveryScheduled else { return }
        deliveryScheduled = true
        eventLoop.execute {
            self.deliveryScheduled = false
            self.tryToRead()
        }
    }

    public func close0(error: Error, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard state != .closed else {
            promise?.fail(ChannelError.alreadyClosed)
            return
        }
        switch mode {
        case .input:
            promise?.fail(ChannelError.operationUnsupported)
        case .output:
            guard output == .open else {
                promise?.fail(ChannelError.outputClosed)
                return
            }
            output = .finishing
            if let promise { finishPromises.append(promise) }
            flushedCount = pendingWrites.count
            sendPending()
        case .all:
            if remoteFinished && state == .active && output != .finished {
                // The peer is done: send what is queued and FINISH, then close.
                if let promise { closePromises.append(promise) }
                guard !lingering else { return }
                lingering = true
                if output == .open { output = .finishing }
                flushedCount = pendingWrites.count
                sendPending()
            } else {
                mux?.sendReset(stream: streamID) // nothing when both ways already finished
                if let promise { closePromises.append(promise) }
                finishClosing(error: nil)
            }
        }
    }

    public func triggerUserOutboundEvent0(_ event: Any, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    public func channelRead0(_ data: NIOAny) {
        // The end of the pipeline: nothing to do with unread data.
    }

    public func errorCaught0(error: Error) {
        // The end of the pipeline: errors that no handler took are dropped.
    }

    // MARK: Reading

    private var hasPendingInbound: Bool {
        !freshReads.isEmpty || (heldReads?.readableBytes ?? 0) > 0 || (remoteFinished && !inputClosedDelivered)
    }

    private func tryToRead() {
        guard unsatisfiedRead, state == .active, hasPendingInbound else { return }
        unsatisfiedRead = false
        var buffers: [ByteBuffer] = []
        if let held = heldReads, held.readableBytes > 0 { buffers.append(held) }
        heldReads = nil
        buffers.append(contentsOf: freshReads)
        freshReads.removeAll(keepingCapacity: true)

        var delivered = 0
        for buffer in buffers where state == .active {
            delivered += buffer.readableBytes
            pipeline.fireChannelRead(buffer)
        }
        if !buffers.isEmpty && state == .active {
            pipeline.fireChannelReadComplete()
        }
        if delivered > 0, let mux {
            mux.consumed(stream: streamID, bytes: delivered)
            mux.flushOutbound()
        }
        guard state == .active else { return }
        if remoteFinished && !inputClosedDelivered && !hasData {
            inputClosedDelivered = true
            if allowRemoteHalfClosure {
                pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
                if state == .active && output == .finished { finishClosing(error: nil) }
            } else {
                close0(error: ChannelError.eof, mode: .all, promise: nil)
            }
            return
        }
        if autoRead { pipeline.read() }
    }

    private var hasData: Bool { !freshReads.isEmpty || (heldReads?.readableBytes ?? 0) > 0 }

    // MARK: Writing

    private func sendPending() {
        guard state == .active else { return }
        if sending {
            sendAgain = true
            return
        }
        sending = true
        defer { sending = false }
        repeat {
            sendAgain = false
            sendOnce()
        } while sendAgain && state == .active
    }

    private func sendOnce() {
        guard let mux else { return }
        var sent = false
        while flushedCount > 0, mux.sendWindow(stream: streamID) > 0 || pendingWrites.first!.0.readableBytes == 0 {
            var (buffer, promise) = pendingWrites.removeFirst()
            let before = buffer.readableBytes
            if before > 0 {
                mux.sendData(stream: streamID, &buffer, first: !sentData)
                sentData = true
                sent = true
            }
            bufferedBytes -= before - buffer.readableBytes
            if buffer.readableBytes > 0 {
                pendingWrites.prepend((buffer, promise))
                break
            }
            flushedCount -= 1
            if let promise { mux.completeWithNextWrite(promise) }
        }
        if output == .finishing && pendingWrites.isEmpty {
            output = .finished
            mux.sendFinish(stream: streamID)
            for promise in finishPromises { mux.completeWithNextWrite(promise) }
            finishPromises.removeAll()
            sent = true
        }
        if sent { mux.flushOutbound() }
        guard state == .active else { return }
        updateWritability()
        guard state == .active, output == .finished else { return }
        if lingering || inputClosedDelivered { finishClosing(error: nil) }
    }

    private func updateWritability() {
        if bufferedBytes > waterMark.high {
            bufferWritable = false
        } else if bufferedBytes < waterMark.low {
            bufferWritable = true
        }
        let writable = bufferWritable && parentWritable
        let changed = flags.withLockedValue { flags -> Bool in
            guard flags.isWritable != writable else { return false }
            flags.isWritable = writable
            return true
        }
        if changed && state == .active { pipeline.fireChannelWritabilityChanged() }
    }

    // MARK: Called by the MuxHandler

    func receiveData(_ buffer: ByteBuffer) {
        guard state != .closed else { return }
        freshReads.append(buffer)
    }

    func receiveFinish() {
        remoteFinished = true
    }

    /// End of the connection's read burst: deliver if a read is waiting, and
    /// keep what stays unread in one compact buffer of its own.
    func parentReadComplete() {
        touchedInBurst = false
        tryToRead()
        guard state != .closed, !freshReads.isEmpty else { return }
        var held = heldReads ?? allocator.buffer(capacity: freshReads.reduce(0) { $0 + $1.readableBytes })
        for var buffer in freshReads { held.writeBuffer(&buffer) }
        freshReads.removeAll(keepingCapacity: true)
        heldReads = held
    }

    func windowOpened() {
        sendPending()
    }

    func receiveReset() {
        abort(error: MuxError.streamReset)
    }

    func parentWritabilityChanged(_ writable: Bool) {
        parentWritable = writable
        updateWritability()
    }

    /// The connection closed or failed: the stream is over, without frames.
    func connectionFailed(error: Error) {
        mux = nil
        abort(error: error)
    }

    // MARK: Closing

    /// Closes after an error: RESET when the stream is still open on the connection.
    private func abort(error: Error) {
        guard state != .closed else { return }
        mux?.sendReset(stream: streamID)
        finishClosing(error: error)
    }

    private func finishClosing(error: Error?) {
        guard state != .closed else { return }
        let wasActive = state == .active
        state = .closed
        closedError = error
        flags.withLockedValue { $0.isActive = false }
        freshReads.removeAll()
        heldReads = nil
        let writeError = error ?? ChannelError.ioOnClosedChannel
        let writes = pendingWrites
        pendingWrites.removeAll()
        flushedCount = 0
        bufferedBytes = 0
        for (_, promise) in writes { promise?.fail(writeError) }
        let finishes = finishPromises
        finishPromises.removeAll()
        for promise in finishes { promise.fail(writeError) }

        let mux = self.mux
        self.mux = nil
        mux?.streamClosed(self)

        let closes = closePromises
        closePromises.removeAll()
        for promise in closes { promise.succeed() }
        if let error { pipeline.fireErrorCaught(error) }
        if wasActive { pipeline.fireChannelInactive() }
        eventLoop.execute {
            self.removeHandlers(pipeline: self.pipeline)
            self.closePromise.succeed()
        }
    }
}
