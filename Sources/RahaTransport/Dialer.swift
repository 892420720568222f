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

/// Whether a connection failed in its TLS handshake or certificate check.
public func isTLSFailure(_ error: Error) -> Bool {
    error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError
}

/// An error whose description is safe to show and log as it is: it names
/// no destination, no client address and no secret.
public protocol PrivacySafeError: Error, CustomStringConvertible {}

/// A description of a connection failure that is safe to log: the kind of
/// failure and the error number, never an address or a name.
public func privacySafeReason(_ error: Error) -> String {
    if let error = error as? PrivacySafeError { return error.description }
    if let error = error as? IOError { return "I/O error \(error.errnoCode)" }
    if let error = error as? ChannelError { return "channel error \(error)" }
    if let error = error as? WireError { return error.code.rawValue }
    if isTLSFailure(error) {
        return "TLS handshake failed (certificate not trusted, not matching the pin, or not TLS)"
    }
    return String(describing: type(of: error))
}
