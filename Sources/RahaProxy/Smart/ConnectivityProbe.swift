import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RahaTransport
import RahaWire

/// Why a probe or a stream through a transport failed, in words safe to log
/// and to show (never an address or a name).
public struct TransportFailure: PrivacySafeError, Sendable {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }

    /// "timed out after 6 s" (or "after 1.5 s").
    public static func timedOut(after deadline: TimeAmount) -> TransportFailure {
        TransportFailure("timed out after \(secondsText(deadline)) s")
    }

    /// The reason for any error, privacy-safe: refused, reset and timeouts in words.
    public static func reason(for error: Error) -> String {
        if let error = error as? IOError {
            switch error.errnoCode {
            case ECONNREFUSED: return "connection refused"
            case ECONNRESET: return "reset"
            case ETIMEDOUT: return "timed out"
            case ENETUNREACH, EHOSTUNREACH: return "no route"
            default: break
            }
        }
        return privacySafeReason(error)
    }
}

func secondsText(_ amount: TimeAmount) -> String {
    let milliseconds = amount.nanoseconds / 1_000_000
    let tenths = (milliseconds + 50) / 100
    return tenths % 10 == 0 ? "\(tenths / 10)" : "\(tenths / 10).\(tenths % 10)"
}

/// Completes with `future`'s result, or fails with "timed out after …" once
/// `deadline` passes; a value that arrives late is handed to `discard`.
func withDeadline<T: Sendable>(_ future: EventLoopFuture<T>, _ deadline: TimeAmount,
                               discard: @escaping @Sendable (T) -> Void) -> EventLoopFuture<T> {
    let eventLoop = future.eventLoop
    let promise = eventLoop.makePromise(of: T.self)
    let timer = eventLoop.scheduleTask(in: deadline) { promise.fail(TransportFailure.timedOut(after: deadline)) }
    future.whenComplete { result in
        timer.cancel()
        switch result {
        case .success(let value):
            // Either this wins, or the deadline already failed the promise and the value is late.
            promise.futureResult.whenFailure { _ in discard(value) }
            promise.succeed(value)
        case .failure(let error):
            promise.fail(error)
        }
    }
    return promise.futureResult
}

/// A plain-HTTP URL to fetch through a transport: `http://host[:port]/path`.
public struct ProbeURL: Sendable, Equatable {
    public var endpoint: Endpoint
    public var path: String
    /// The Host header: the host as written, with the port when not 80.
    public var hostHeader: String

    public static let androidConnectivityCheck = "http://connectivitycheck.gstatic.com/generate_204"

    public init(parsing text: String) throws {
        guard text.lowercased().hasPrefix("http://") else {
            throw TransportFailure("the probe URL must start with http:// (the tunnel carries the bytes; https is not needed), e.g. \(Self.androidConnectivityCheck)")
        }
        let rest = text.dropFirst("http://".count)
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard !authority.isEmpty else { throw TransportFailure("the probe URL has no host: expected http://HOST[:PORT]/PATH") }
        let tail = rest.dropFirst(authority.count).prefix { $0 != "#" }
        do { endpoint = try Endpoint(parsing: authority, defaultPort: 80) } catch {
            throw TransportFailure("the probe URL's host is not HOST[:PORT]: \(error)")
        }
        path = tail.isEmpty ? "/" : (tail.hasPrefix("/") ? String(tail) : "/" + tail)
        hostHeader = String(authority)
    }

    func request() -> String {
        "GET \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\n"
            + "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
            + "Accept: */*\r\nConnection: close\r\n\r\n"
    }
}

/// How much a download through a transport carried, and in how long.
public struct Throughput: Sendable, Equatable {
    public var bytes: Int
    public var seconds: Double
    public var bytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds : 0 }
}

/// A verified round trip through one transport: open a stream to the probe
/// URL's host through the dialer, send a GET, and wait for an HTTP status
/// line. Every step is under one deadline.
public struct ConnectivityProbe: Sendable {
    public var url: ProbeURL
    public var deadline: TimeAmount

    public init(url: ProbeURL, deadline: TimeAmount = .seconds(6)) {
        self.url = url
        self.deadline = deadline
    }

    /// The round-trip time from dialling to the status line, or a ``TransportFailure``.
    public func run(through dialer: StreamDialer, on eventLoop: EventLoop) -> EventLoopFuture<TimeAmount> {
        let started = NIODeadline.now()
        return fetch(url, through: dialer, on: eventLoop, deadline: deadline, mode: .statusLine).map { _ in
            NIODeadline.now() - started
        }
    }

    /// Downloads `url` through the dialer for at most `maxBytes` of body or
    /// until `deadline`, whichever comes first, and reports what came.
    /// Fails only when no status line arrived.
    public static func measureThroughput(of url: ProbeURL, through dialer: StreamDialer, on eventLoop: EventLoop,
                                         maxBytes: Int, deadline: TimeAmount) -> EventLoopFuture<Throughput> {
        let started = NIODeadline.now()
        return fetch(url, through: dialer, on: eventLoop, deadline: deadline, mode: .body(maxBytes: maxBytes))
            .map { bytes in Throughput(bytes: bytes, seconds: Double((NIODeadline.now() - started).nanoseconds) / 1e9) }
    }
}

private enum FetchMode {
    case statusLine
    case body(maxBytes: Int)
}

/// How far a response has come; shared by the reader and the deadline timer.
private final class FetchProgress: Sendable {
    private let box = NIOLockedValueBox((sawStatus: false, bodyBytes: 0))
    var value: (sawStatus: Bool, bodyBytes: Int) { box.withLockedValue { $0 } }
    func update(sawStatus: Bool, bodyBytes: Int) { box.withLockedValue { $0 = (sawStatus, bodyBytes) } }
}

/// Dials, sends the GET, and completes with the body bytes read (0 for a
/// status-line probe). All under `deadline`; the stream is always closed.
private func fetch(_ url: ProbeURL, through dialer: StreamDialer, on eventLoop: EventLoop,
                   deadline: TimeAmount, mode: FetchMode) -> EventLoopFuture<Int> {
    let promise = eventLoop.makePromise(of: Int.self)
    let progress = FetchProgress()
    let timer = eventLoop.scheduleTask(in: deadline) {
        let now = progress.value
        if case .body = mode, now.sawStatus {
            promise.succeed(now.bodyBytes) // a deadline ends a download, it does not fail it
        } else {
            promise.fail(TransportFailure.timedOut(after: deadline))
        }
    }
    promise.futureResult.whenComplete { _ in timer.cancel() }
    dialer.dial(url.endpoint, on: eventLoop).whenComplete { result in
        switch result {
        case .failure(let error):
            promise.fail(TransportFailure(TransportFailure.reason(for: error)))
        case .success(let channel):
            promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
            channel.eventLoop.flatSubmit {
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HTTPProbeReader(mode: mode, promise: promise, progress: progress))
                }.flatMap { channel.writeAndFlush(ByteBuffer(string: url.request())) }
            }.whenFailure { error in promise.fail(TransportFailure(TransportFailure.reason(for: error))) }
        }
    }
    return promise.futureResult
}

/// Reads an HTTP response far enough: the status line, or the body up to a limit.
private final class HTTPProbeReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let mode: FetchMode
    private let promise: EventLoopPromise<Int>
    private let progress: FetchProgress
    private var head = ByteBuffer()
    private var sawStatus = false
    private var sawHeaders = false
    private var bodyBytes = 0

    init(mode: FetchMode, promise: EventLoopPromise<Int>, progress: FetchProgress) {
        self.mode = mode
        self.promise = promise
        self.progress = progress
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if !sawHeaders {
            head.writeBuffer(&bytes)
            let text = String(buffer: head)
            if !sawStatus, text.contains("\r\n") {
                guard text.hasPrefix("HTTP/1.") else {
                    promise.fail(TransportFailure("the answer was not HTTP (something in the path speaks another protocol)"))
                    return
                }
                sawStatus = true
                if case .statusLine = mode { promise.succeed(0); return }
            }
            guard let end = text.utf8.firstRange(of: "\r\n\r\n".utf8) else { return }
            sawHeaders = true
            bodyBytes = text.utf8.distance(from: end.upperBound, to: text.utf8.endIndex)
        } else {
            bodyBytes += bytes.readableBytes
        }
        progress.update(sawStatus: sawStatus, bodyBytes: bodyBytes)
        if case .body(let maxBytes) = mode, bodyBytes >= maxBytes { promise.succeed(bodyBytes) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .body = mode, sawStatus {
            promise.succeed(bodyBytes)
        } else {
            promise.fail(TransportFailure(head.readableBytes == 0 ? "closed without an answer" : "closed before an HTTP status line"))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if case .body = mode, sawStatus {
            promise.succeed(bodyBytes)
        } else {
            promise.fail(TransportFailure(TransportFailure.reason(for: error)))
        }
        context.close(promise: nil)
    }
}
