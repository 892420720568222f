#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Foundation
import NIOCore
import NIOPosix

/// The share node's control socket: `raha share invite|list|revoke|limit`
/// send one request (a line of JSON) and read one reply, so changes reach
/// the running node at once. The socket lives in the data directory (mode
/// 0700), so only the sharer's account can use it.
public enum ShareControl {
    public static let socketName = "control.sock"
    static let maxRequest = 64 * 1024

    public static func socketPath(in directory: DataDirectory) -> String { directory.path + "/" + socketName }

    /// Serves `ledger`'s requests on the data directory's control socket.
    public static func serve(_ ledger: ShareLedger, in directory: DataDirectory, group: EventLoopGroup) async throws -> Channel {
        let path = socketPath(in: directory)
        let channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RequestHandler(ledger: ledger))
                }
            }
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
        chmod(path, 0o600)
        return channel
    }

    private final class RequestHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let ledger: ShareLedger
        var request = ByteBuffer()

        init(ledger: ShareLedger) { self.ledger = ledger }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            request.writeBuffer(&bytes)
            guard let newline = request.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
                if request.readableBytes > ShareControl.maxRequest { context.close(promise: nil) }
                return
            }
            let line = request.readableBytesView[request.readerIndex..<newline]
            let reply: ShareReply
            if let decoded = try? JSONDecoder().decode(ShareRequest.self, from: Data(line)) {
                reply = ledger.handle(decoded)
            } else {
                reply = .failure("the share node did not understand the request: is `raha` the same version as the running `raha share`?")
            }
            var out = ByteBuffer(data: (try? JSONEncoder().encode(reply)) ?? Data())
            out.writeString("\n")
            context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in context.close(promise: nil) }
        }
    }

    /// Sends `request` to the node running in `directory`; nil when none is running there.
    public static func send(_ request: ShareRequest, in directory: DataDirectory) throws -> ShareReply? {
        let path = socketPath(in: directory)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { return nil } // no socket, or a stale one: not running
        var line = try JSONEncoder().encode(request)
        line.append(UInt8(ascii: "\n"))
        let sent = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard sent == line.count else { throw DataDirectory.StorageError(description: "the running share node closed its control socket: try again") }
        var reply = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            reply += chunk[0..<n]
        }
        do {
            return try JSONDecoder().decode(ShareReply.self, from: Data(reply))
        } catch {
            throw DataDirectory.StorageError(description: "the running share node sent no readable answer (is it the same version of raha?)")
        }
    }
}
