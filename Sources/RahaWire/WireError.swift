/// An error from wire code: a stable code that programs can match on, and a
/// sentence for people that says what was wrong and, where it helps, what to do.
///
/// The sentence never contains secrets or peer-supplied bytes beyond short,
/// sanitised excerpts, so it is safe to log.
public struct WireError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, RawRepresentable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The bytes do not follow the format.
        public static let malformed = Code(rawValue: "malformed")
        /// A well-formed request for something this implementation does not do.
        public static let unsupported = Code(rawValue: "unsupported")
        /// A length or count is beyond what the format or this implementation allows.
        public static let tooLarge = Code(rawValue: "too-large")
        /// Authentication failed: wrong key, tampered or garbage bytes.
        public static let authentication = Code(rawValue: "authentication")
        /// A replayed salt, nonce or packet.
        public static let replay = Code(rawValue: "replay")
        /// A timestamp outside the accepted window.
        public static let clock = Code(rawValue: "clock")
        /// An access key or other configuration text that cannot be used.
        public static let badKey = Code(rawValue: "bad-key")
        /// The peer ended or refused a handshake (TLS, WebSocket upgrade).
        public static let handshake = Code(rawValue: "handshake")
        /// The peer understood the request and turned it down (an HTTP
        /// status instead of the protocol switch that was asked for).
        public static let refused = Code(rawValue: "refused")
    }

    public var code: Code
    public var reason: String

    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { reason }

    public static func malformed(_ reason: String) -> WireError { WireError(.malformed, reason) }
    public static func unsupported(_ reason: String) -> WireError { WireError(.unsupported, reason) }
    public static func tooLarge(_ reason: String) -> WireError { WireError(.tooLarge, reason) }
    public static func badKey(_ reason: String) -> WireError { WireError(.badKey, reason) }
    public static func handshakeFailed(_ reason: String) -> WireError { WireError(.handshake, reason) }
}
