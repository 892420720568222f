/// What went wrong talking to a mail server, in a sentence that says what to do.
public struct MailError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// The server broke the protocol (a line that is no reply, a reply too long).
        case protocolViolation
        /// The server refused for now (4xx, or the connection dropped): try again later.
        case transient
        /// The server refused for good (5xx): retrying the same thing won't help.
        case permanent
        /// The account's name or password was refused.
        case authentication
        /// The server offers no TLS where the account requires it, or TLS failed.
        case security
    }

    public var kind: Kind
    public var reason: String

    public init(_ kind: Kind, _ reason: String) {
        self.kind = kind
        self.reason = reason
    }

    public static func protocolViolation(_ reason: String) -> MailError { MailError(.protocolViolation, reason) }

    /// Whether sending again later may succeed.
    public var isRetryable: Bool { kind == .transient || kind == .protocolViolation }

    public var description: String { reason }

    /// At most 60 printable characters of what a server sent, for messages.
    public static func excerpt(_ bytes: some Collection<UInt8>) -> String {
        let printable = bytes.prefix(60).map { (0x20..<0x7F).contains($0) ? Character(UnicodeScalar($0)) : "?" }
        return String(printable) + (bytes.count > 60 ? "…" : "")
    }
}
