import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import RahaWire

/// Opens proxied streams through one transport.
public protocol StreamDialer: Sendable {
    /// Opens a stream to `target`. The returned channel carries the
    /// stream's plaintext: what is written to it reaches the target, what
    /// it reads came from the target. Its pipeline has no glue yet.
    func dial(_ target: Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<Channel>

    /// Opens a UDP association: datagrams to any target and back.
    func associate(on eventLoop: EventLoop, receive: @escaping @Sendable (Endpoint, ByteBuffer) -> Void) -> EventLoopFuture<PacketAssociation>

    /// A label for logs and messages: the transport and bridge, never a destination.
    var label: String { get }
}

/// A UDP association through a transport.
public protocol PacketAssociation: Sendable {
    func send(_ payload: ByteBuffer, to target: Endpoint)
    func close()
}

/// Uses several dialers in order, moving on when one fails to connect, and
/// starting next time from the last one that worked.
public final class FailoverDialer: StreamDialer {
    public let dialers: [StreamDialer]
    private let preferred = NIOLockedValueBox(0)

    public init(_ dialers: [StreamDialer]) {
        precondition(!dialers.isEmpty, "at least one dialer")
        self.dialers = dialers
    }

    public var label: String { dialers.map(\.label).joined(separator: ", ") }

    private func order() -> [Int] {
        let start = preferred.withLockedValue { $0 }
        return (0..<dialers.count).map { (start + $0) % dialers.count }
    }

    public func dial(_ target: Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<Channel> {
        attempt(order()[...], on: eventLoop, lastError: nil) { dialer in dialer.dial(target, on: eventLoop) }
    }

    public func associate(on eventLoop: EventLoop, receive: @escaping @Sendable (Endpoint, ByteBuffer) -> Void) -> EventLoopFuture<PacketAssociation> {
        attempt(order()[...], on: eventLoop, lastError: nil) { dialer in dialer.associate(on: eventLoop, receive: receive) }
    }

    private func attempt<T>(_ indices: ArraySlice<Int>, on eventLoop: EventLoop, lastError: Error?,
                            _ open: @escaping (StreamDialer) -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        guard let index = indices.first else {
            return eventLoop.makeFailedFuture(lastError ?? ChannelError.connectPending)
        }
        return open(dialers[index]).map { value in
            self.preferred.withLockedValue { $0 = index }
            return value
        }.flatMapError { error in
            self.attempt(indices.dropFirst(), on: eventLoop, lastError: error, open)
        }
    }
}

/// A description of a connection failure that is safe to log: the kind of
/// failure and the error number, never an address or a name.
public func privacySafeReason(_ error: Error) -> String {
    if let error = error as? IOError { return "I/O error \(error.errnoCode)" }
    if let error = error as? ChannelError { return "channel error \(error)" }
    if let error = error as? WireError { return error.code.rawValue }
    if error is NIOSSLError || error is BoringSSLError {
        return "TLS handshake failed (certificate not trusted, not matching the pin, or not TLS)"
    }
    return String(describing: type(of: error))
}
