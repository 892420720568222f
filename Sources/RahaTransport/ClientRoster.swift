import NIOConcurrencyHelpers
import RahaWire

/// The clients a bridge listener accepts, each under an ID. A plain bridge
/// has one client per listener; a share node has its circle, which changes
/// while the listeners run: codecs read the roster afresh for every new
/// connection and datagram.
public final class ClientRoster: Sendable {
    public struct Client: Sendable {
        public let id: String
        public let shadowsocks: ShadowsocksCredential?
        /// SHA-224 of the Trojan password, as hex digits (what the header carries).
        public let trojanHash: [UInt8]?
        /// What the client sends first inside a DNS tunnel (`DNSTunnelKey.clientID`).
        public let dnsID: [UInt8]?

        public init(id: String, shadowsocks: ShadowsocksCredential? = nil, trojanPassword: String? = nil, dnsID: [UInt8]? = nil) {
            self.id = id
            self.shadowsocks = shadowsocks
            self.trojanHash = trojanPassword.map(Trojan.passwordHash)
            self.dnsID = dnsID
        }
    }

    private let box: NIOLockedValueBox<(shadowsocks: [Client], trojan: [Client], dns: [Client])>

    public init(_ clients: [Client] = []) {
        box = NIOLockedValueBox(Self.split(clients))
    }

    /// A roster of one Shadowsocks client (a plain bridge's listener).
    public convenience init(shadowsocks credential: ShadowsocksCredential) {
        self.init([Client(id: "", shadowsocks: credential)])
    }

    /// A roster of Trojan clients, one per password (a plain bridge's listener).
    public convenience init(trojanPasswords: [String]) {
        self.init(trojanPasswords.map { Client(id: "", trojanPassword: $0) })
    }

    public func replace(with clients: [Client]) {
        let split = Self.split(clients)
        box.withLockedValue { $0 = split }
    }

    /// The clients with a Shadowsocks credential, in roster order.
    public var shadowsocks: [Client] { box.withLockedValue { $0.shadowsocks } }
    /// The clients with a Trojan password, in roster order.
    public var trojan: [Client] { box.withLockedValue { $0.trojan } }
    /// The clients with a DNS tunnel ID, in roster order.
    public var dns: [Client] { box.withLockedValue { $0.dns } }

    private static func split(_ clients: [Client]) -> (shadowsocks: [Client], trojan: [Client], dns: [Client]) {
        (clients.filter { $0.shadowsocks != nil }, clients.filter { $0.trojanHash != nil }, clients.filter { $0.dnsID != nil })
    }
}

/// Fired by a bridge-side codec, before the request event, once it knows
/// which client of its roster opened the connection.
public struct ClientAuthenticatedEvent: Sendable {
    public let clientID: String
    public init(clientID: String) { self.clientID = clientID }
}
