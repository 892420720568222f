import Foundation
import NIOCore
import NIOPosix
import RahaTransport
import RahaWire

/// The web site a bridge shows to everything that is not an authenticated
/// client, when the operator named no `--fallback`: a small, ordinary static
/// site served like nginx serves one (keep-alive, HEAD, 404, 405, 400 for
/// garbage). It runs on loopback and the Trojan listeners splice probers to
/// it exactly as they would to an external site.
public enum StaticSite {
    /// Starts the site on 127.0.0.1 at a free port.
    public static func start(group: EventLoopGroup) async throws -> Channel {
        try await ServerBootstrap.rahaListener(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(StaticSiteHandler())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    static let lastModified = "Tue, 14 May 2024 09:12:37 GMT"
    static let etag = "\"66432a35-3f1\""

    static let index = """
    <!DOCTYPE html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Field Notes</title>
    <style>body{max-width:42rem;margin:3rem auto;padding:0 1rem;font:17px/1.6 Georgia,serif;color:#222}h1{font-weight:normal}a{color:#36c}footer{margin-top:3rem;color:#777;font-size:14px}</style>
    </head>
    <body>
    <h1>Field Notes</h1>
    <p>Photographs and short notes from walks, mostly in the mountains and along the coast. New entries appear when the weather allows.</p>
    <h2>Recent</h2>
    <ul>
    <li>Morning fog over the valley</li>
    <li>Late light on the eastern ridge</li>
    <li>Notes on an old film camera</li>
    </ul>
    <footer>&copy; 2024</footer>
    </body>
    </html>

    """

    static func errorPage(_ status: Int, _ reason: String) -> String {
        "<html>\r\n<head><title>\(status) \(reason)</title></head>\r\n<body>\r\n<center><h1>\(status) \(reason)</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    }

    static let dateFormatter: DateFormatter = {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter
    }()

    struct NotARequest: Error {}

    /// True when bytes can no longer begin a request line as nginx parses one: after
    /// any CR and LF, the method is A-Z, "_" or "-" up to its space. nginx answers 400
    /// as soon as another byte arrives there, instead of waiting for a line's end, and
    /// so does this site (a prober's short garbage gets the answer nginx would give).
    static func cannotStartARequest(_ bytes: ByteBufferView) -> Bool {
        let method = bytes.drop { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") }.prefix { $0 != UInt8(ascii: " ") }
        return !method.allSatisfy { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }

    /// The whole response to one request head (nil: not HTTP at all).
    static func response(to head: HTTPRequestHead?, now: Date = Date()) -> (bytes: String, keepAlive: Bool) {
        guard let head else { return (render(400, "Bad Request", body: errorPage(400, "Bad Request"), now: now, keepAlive: false), false) }
        let path = head.target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.target
        let keepAlive = head.isKeepAlive
        let status: (Int, String, String, [(String, String)])
        switch head.method {
        case "GET", "HEAD":
            if path == "/" || path == "/index.html" {
                status = (200, "OK", index, [("Last-Modified", lastModified), ("ETag", etag), ("Accept-Ranges", "bytes")])
            } else {
                status = (404, "Not Found", errorPage(404, "Not Found"), [])
            }
        default:
            status = (405, "Not Allowed", errorPage(405, "Not Allowed"), [])
        }
        var text = render(status.0, status.1, body: status.2, extra: status.3, now: now, keepAlive: keepAlive && status.0 != 405)
        // HEAD: the same head (Content-Length of the body it would get), no body.
        if head.method == "HEAD", let end = text.range(of: "\r\n\r\n") { text = String(text[..<end.upperBound]) }
        return (text, keepAlive && status.0 != 405)
    }

    private static func render(_ status: Int, _ reason: String, body: String, extra: [(String, String)] = [], now: Date, keepAlive: Bool) -> String {
        var lines = ["HTTP/1.1 \(status) \(reason)", "Server: nginx", "Date: \(dateFormatter.string(from: now))",
                     "Content-Type: text/html" + (status == 200 ? "; charset=utf-8" : ""), "Content-Length: \(body.utf8.count)"]
        lines.append("Connection: " + (keepAlive ? "keep-alive" : "close"))
        lines += extra.map { "\($0.0): \($0.1)" }
        return lines.joined(separator: "\r\n") + "\r\n\r\n" + body
    }
}

/// One connection to the static site: reads request heads, answers each,
/// closes on garbage, on `Connection: close` and on requests with a body.
final class StaticSiteHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var buffer = ByteBuffer()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer.writeBuffer(&bytes)
        while true {
            let head: HTTPRequestHead?
            do {
                guard let parsed = try HTTPRequestHead.read(from: &buffer, maxHeadBytes: 16384) else {
                    // Incomplete: wait for the rest, unless it cannot become a request (see below).
                    guard StaticSite.cannotStartARequest(buffer.readableBytesView) else { break }
                    throw StaticSite.NotARequest()
                }
                head = parsed
            } catch {
                head = nil
            }
            // Bodies are not for this site: answer, then close.
            let hasBody = head.map { $0.contains("Content-Length") && $0.value(of: "Content-Length") != "0" || $0.contains("Transfer-Encoding") } ?? false
            let (text, keepAlive) = StaticSite.response(to: head)
            let open = keepAlive && !hasBody
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: text))).whenComplete { _ in
                if !open { context.close(promise: nil) }
            }
            if !open {
                buffer.clear()
                context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
                return
            }
        }
        buffer.discardReadBytes()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { context.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}
