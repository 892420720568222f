import NIOCore
import NIOEmbedded
import Testing
@testable import RahaTransport

/// Counts the reads that reach the socket end of a pipeline, and records
/// half-closes (which EmbeddedChannel itself cannot do) instead of passing them on.
final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = NIOAny
    var reads = 0
    var outputClosed = false
    /// Holds the output's close, as a socket does while writes are queued.
    var holdOutputClose = false
    var heldOutputClose: EventLoopPromise<Void>?
    func read(context: ChannelHandlerContext) {
        reads += 1
        context.read()
    }
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .output {
            outputClosed = true
            if holdOutputClose { heldOutputClose = promise } else { promise?.succeed() }
        } else {
            context.close(mode: mode, promise: promise)
        }
    }
}

@Suite struct GlueHandlerTests {
    func joined() throws -> (EmbeddedChannel, ReadCounter, EmbeddedChannel, ReadCounter) {
        let loop = EmbeddedEventLoop()
        let a = EmbeddedChannel(loop: loop), b = EmbeddedChannel(loop: loop)
        let ca = ReadCounter(), cb = ReadCounter()
        try a.pipeline.syncOperations.addHandler(ca)
        try b.pipeline.syncOperations.addHandler(cb)
        try a.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try b.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
        try GlueHandler.join(a, b).wait()
        return (a, ca, b, cb)
    }

    @Test func bytesCrossBothWays() throws {
        let (a, _, b, _) = try joined()
        try a.writeInbound(ByteBuffer(string: "to b"))
        #expect(try b.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "to b"))
        try b.writeInbound(ByteBuffer(string: "to a"))
        #expect(try a.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "to a"))
    }

    @Test func readsStopWhileThePartnerCannotWrite() throws {
        let (a, readsA, b, _) = try joined()
        let before = readsA.reads
        b.isWritable = false
        b.pipeline.fireChannelWritabilityChanged()
        a.read()
        a.read()
        #expect(readsA.reads == before, "no read from A while B's buffer is full")
        b.isWritable = true
        b.pipeline.fireChannelWritabilityChanged()
        #expect(readsA.reads == before + 1, "one pending read resumes")
        a.read()
        #expect(readsA.reads == before + 2)
    }

    @Test func halfCloseIsPassedOnAndBothCloseAtTheEnd() throws {
        let (a, closesA, b, closesB) = try joined()
        a.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(closesB.outputClosed, "A's end of input becomes B's end of output")
        #expect(!closesA.outputClosed)
        #expect(b.isActive, "B can still send to A")
        try b.writeInbound(ByteBuffer(string: "late answer"))
        #expect(try a.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "late answer"))
        b.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(!a.isActive && !b.isActive)
    }

    @Test func queuedBytesGoOutBeforeTheFullClose() throws {
        let (a, closesA, b, _) = try joined()
        closesA.holdOutputClose = true
        // A's client ended first; then B's last bytes and its end arrive.
        a.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        try b.writeInbound(ByteBuffer(string: "last"))
        b.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(!b.isActive, "B is done both ways")
        #expect(closesA.outputClosed)
        #expect(a.isActive, "A closes only once its output has closed behind the queued bytes")
        closesA.heldOutputClose?.succeed()
        #expect(!a.isActive)
        #expect(try a.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "last"))
    }

    @Test func closingOneClosesTheOther() throws {
        let (a, _, b, _) = try joined()
        try a.close().wait()
        #expect(!b.isActive)
    }
}
