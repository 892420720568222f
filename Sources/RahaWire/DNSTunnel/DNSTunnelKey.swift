/// A DNS tunnel access key:
///
///     dns://ZONE?key=PUBKEY&resolver=udp%3A%2F%2F1.1.1.1%3A53&encoding=E&label=N&name=N&qps=N#tag
///
/// ZONE is the zone delegated to the bridge, which is its authoritative
/// server. PUBKEY is the bridge's X25519 public key in base64url without
/// padding (43 characters); 64 hex digits are accepted too. `resolver` says
/// which recursive resolver carries the queries: `udp://IP:PORT`,
/// `tcp://IP:PORT`, `dot://IP:PORT` (DNS over TLS, with `sni=NAME` for the
/// certificate's name) or `doh://HOST[:PORT]/PATH` (DNS over HTTPS); left out,
/// the system's resolvers. It is percent-encoded when printed; parsing takes
/// it encoded or raw. `encoding` (base32, hex or syllables), `label`,
/// `name` and `qps` are the query shaping
/// (`DNSTunnelShaping`), printed only when not the default.
public struct DNSTunnelKey: Hashable, Sendable {
    public enum Resolver: Hashable, Sendable {
        /// The system's resolvers (/etc/resolv.conf), the default.
        case system
        /// Plain DNS over UDP to an IP address, port default 53.
        case udp(Endpoint)
        /// Plain DNS over TCP to an IP address, port default 53.
        case tcp(Endpoint)
        /// DNS over TLS to an IP address, port default 853; `serverName` is the
        /// name to send and verify, nil for the address itself.
        case dot(Endpoint, serverName: String?)
        /// DNS over HTTPS: `https://host[:port]/path` (default path /dns-query).
        case doh(url: String)
    }

    public static let scheme = "dns://"
    public static let clientIDLength = 16
    static let plainDNSPort: UInt16 = 53
    static let dotPort: UInt16 = 853
    static let defaultDoHPath = "/dns-query"
    static let acceptedResolvers = "udp://IP:PORT, tcp://IP:PORT, dot://IP:PORT (with sni=NAME), doh://HOST[:PORT]/PATH or system"

    public var zone: DNSName
    /// The bridge's X25519 public key, 32 bytes.
    public var publicKey: [UInt8]
    public var resolver: Resolver
    public var shaping: DNSTunnelShaping
    /// Who is connecting, for a bridge that tells its clients apart (a share
    /// node's invitee): 16 bytes sent first inside the encrypted tunnel.
    public var clientID: [UInt8]?
    /// The #fragment name shown in apps.
    public var tag: String?

    /// Checks the parts: a zone that is not the root, has only letters,
    /// digits, hyphens and underscores in its labels and whose queries, as
    /// shaped, carry at least `DNSTunnelCodec.minimumUpstreamCapacity` bytes; a 32-byte key; udp/tcp/dot
    /// resolvers at an IP address and a non-zero port; a DoH URL of the form
    /// https://host[:port][/path], which is stored with its path (default
    /// /dns-query).
    public init(zone: DNSName, publicKey: [UInt8], resolver: Resolver = .system,
                shaping: DNSTunnelShaping = .default, clientID: [UInt8]? = nil, tag: String? = nil) throws {
        if let clientID, clientID.count != Self.clientIDLength {
            throw WireError.badKey("dns:// key: id= must be \(Self.clientIDLength) bytes in base64url (22 characters); this one has \(clientID.count) bytes")
        }
        self.clientID = clientID
        guard !zone.labels.isEmpty else {
            throw WireError.badKey("dns:// key: the zone is the root; it must be the zone delegated to the bridge, e.g. dns://t.example.com?key=…")
        }
        guard zone.labels.allSatisfy({ $0.allSatisfy(Self.isZoneCharacter) }) else {
            throw WireError.badKey("dns:// key: the zone \(zone) is not a valid DNS name: labels may have only letters, digits, - and _")
        }
        guard publicKey.count == 32 else {
            throw WireError.badKey("dns:// key: the bridge's X25519 public key must be 32 bytes; this one has \(publicKey.count)")
        }
        let capacity = DNSTunnelCodec.upstreamCapacity(zone: zone, shaping: shaping)
        guard capacity >= DNSTunnelCodec.minimumUpstreamCapacity else {
            throw WireError.badKey("dns:// key: a query under the \(DNSTunnelCodec.textLength(of: zone))-character zone \(zone) in \(shaping.encoding) with \(shaping.labelLength)-character labels and names of at most \(shaping.maxNameLength) characters carries \(capacity) bytes; the tunnel needs \(DNSTunnelCodec.minimumUpstreamCapacity) (its handshake goes in one query): allow longer names (name=, up to 253) or labels (label=), choose a denser encoding= (base32 carries the most), or use a shorter zone")
        }
        self.zone = zone
        self.publicKey = publicKey
        self.resolver = try Self.checked(resolver)
        self.shaping = shaping
        self.tag = tag
    }

    // MARK: Parsing

    public init(parsing text: String) throws {
        let trimmed = URIText.trimmingWhitespace(text)
        guard trimmed.lowercased().hasPrefix(Self.scheme) else {
            throw WireError.badKey("a DNS tunnel key starts with dns://: expected dns://ZONE?key=PUBLIC-KEY")
        }
        var (body, optionalQuery, tag) = URIText.splitAfterScheme(trimmed.dropFirst(Self.scheme.count))
        let query = optionalQuery ?? ""
        if body.hasSuffix("/") { body = body.dropLast() }
        let zoneText = String(decoding: URIText.percentDecode(body, plusIsSpace: false), as: UTF8.self)
        guard !zoneText.isEmpty else {
            throw WireError.badKey("dns:// key: the zone is missing: expected dns://ZONE?key=PUBLIC-KEY, with ZONE the zone delegated to the bridge")
        }
        let zone: DNSName
        do {
            zone = try DNSName(zoneText)
        } catch let error as WireError {
            throw WireError.badKey("dns:// key: the zone \"\(Self.excerpt(zoneText))\" is not a valid DNS name (\(error.reason))")
        }
        guard zone.labels.allSatisfy({ $0.allSatisfy(Self.isZoneCharacter) }) else {
            throw WireError.badKey("dns:// key: the zone \"\(Self.excerpt(zoneText))\" is not a valid DNS name: labels may have only letters, digits, - and _")
        }

        var parameters: [String: String] = [:]
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let eq = pair.firstIndex(of: "=") ?? pair.endIndex
            let name = String(decoding: URIText.percentDecode(pair[..<eq], plusIsSpace: true), as: UTF8.self).lowercased()
            let value = eq < pair.endIndex ? String(decoding: URIText.percentDecode(pair[pair.index(after: eq)...], plusIsSpace: false), as: UTF8.self) : ""
            if parameters[name] == nil { parameters[name] = value }
        }

        guard let keyText = parameters["key"], !keyText.isEmpty else {
            throw WireError.badKey("dns:// key: key= is missing; it must be the bridge's 32-byte X25519 public key in base64url (43 characters) or hex (64)")
        }
        guard let publicKey = Self.decodePublicKey(keyText) else {
            let count = keyText.count
            let got = count == 43 || count == 44 || count == 64 ? "got \(count) characters that are not valid base64url or hex" : "got \(count) characters"
            throw WireError.badKey("dns:// key: key= must be the bridge's 32-byte X25519 public key in base64url (43 characters) or hex (64); \(got)")
        }

        let sni = parameters["sni"].flatMap { $0.isEmpty ? nil : $0 }
        let resolver = try Self.parseResolver(parameters["resolver"] ?? "", sni: sni)

        func number(_ name: String, _ what: String, _ range: ClosedRange<Int>) throws -> Int? {
            guard let text = parameters[name], !text.isEmpty else { return nil }
            guard let value = Int(text), range.contains(value) else {
                throw WireError.badKey("dns:// key: \(name)= is \(what) and must be a number from \(range.lowerBound) to \(range.upperBound); got \"\(Self.excerpt(text))\"")
            }
            return value
        }
        let label = try number("label", "the data label length in characters", DNSTunnelShaping.labelLengthRange)
        let nameLength = try number("name", "the longest query name in characters (zone included)", DNSTunnelShaping.maxNameLengthRange)
        let qps = try number("qps", "the cap on queries per second", DNSTunnelShaping.queriesPerSecondRange)
        var encoding = DNSTunnelShaping.default.encoding
        if let text = parameters["encoding"], !text.isEmpty {
            guard let named = DNSTunnelEncoding(rawValue: text.lowercased()) else {
                throw WireError.badKey("dns:// key: encoding= is how query names spell the data and must be \(DNSTunnelEncoding.allCases.map(\.rawValue).joined(separator: ", ")); got \"\(Self.excerpt(text))\"")
            }
            encoding = named
        }
        let shaping = try DNSTunnelShaping(encoding: encoding, labelLength: label ?? DNSTunnelShaping.default.labelLength,
                                           maxNameLength: nameLength ?? DNSTunnelShaping.default.maxNameLength,
                                           queriesPerSecond: qps)
        var clientID: [UInt8]?
        if let text = parameters["id"], !text.isEmpty {
            guard let bytes = Base64.decode(text) else {
                throw WireError.badKey("dns:// key: id= must be \(Self.clientIDLength) bytes in base64url (22 characters); got \"\(Self.excerpt(text))\"")
            }
            clientID = bytes
        }
        try self.init(zone: zone, publicKey: publicKey, resolver: resolver, shaping: shaping, clientID: clientID, tag: tag)
    }

    // MARK: Output

    /// The canonical form: parameters in a fixed order, the resolver
    /// percent-encoded, shaping only where it differs from the default.
    public var text: String {
        var out = Self.scheme + URIText.percentEncode(Array(Self.zoneText(zone).utf8))
        var query: [(String, String)] = [("key", Base64.encode(publicKey, urlSafe: true, padded: false))]
        if let clientID { query.append(("id", Base64.encode(clientID, urlSafe: true, padded: false))) }
        switch resolver {
        case .system:
            break
        case .udp(let endpoint):
            query.append(("resolver", "udp://" + endpoint.description))
        case .tcp(let endpoint):
            query.append(("resolver", "tcp://" + endpoint.description))
        case .dot(let endpoint, let serverName):
            query.append(("resolver", "dot://" + endpoint.description))
            if let serverName { query.append(("sni", serverName)) }
        case .doh(let url):
            query.append(("resolver", "doh://" + url.dropFirst("https://".count)))
        }
        let standard = DNSTunnelShaping.default
        if shaping.encoding != standard.encoding { query.append(("encoding", shaping.encoding.rawValue)) }
        if shaping.labelLength != standard.labelLength { query.append(("label", String(shaping.labelLength))) }
        if shaping.maxNameLength != standard.maxNameLength { query.append(("name", String(shaping.maxNameLength))) }
        if let qps = shaping.queriesPerSecond { query.append(("qps", String(qps))) }
        out += "?" + query.map { "\($0.0)=\(URIText.percentEncode(Array($0.1.utf8)))" }.joined(separator: "&")
        if let tag { out += "#" + URIText.percentEncode(Array(tag.utf8)) }
        return out
    }

    // MARK: Helpers

    static func isZoneCharacter(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
            || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
    }

    /// The zone without its final dot (its labels need no escapes).
    static func zoneText(_ zone: DNSName) -> String {
        String(zone.description.dropLast())
    }

    static func decodePublicKey(_ text: String) -> [UInt8]? {
        if text.utf8.count == 64 { return Hex.decode(text) }
        let symbols = text.utf8
        guard symbols.count == 43 || (symbols.count == 44 && text.hasSuffix("=")),
              let bytes = Base64.decode(text), bytes.count == 32 else { return nil }
        return bytes
    }

    static func parseResolver(_ text: String, sni: String?) throws -> Resolver {
        if text.isEmpty || text.lowercased() == "system" {
            if sni != nil { throw WireError.badKey("dns:// key: sni= names the certificate of a dot:// resolver, but the key has no resolver=dot://IP:PORT") }
            return .system
        }
        guard let separator = text.range(of: "://") else {
            throw WireError.badKey("dns:// key: resolver=\(excerpt(text)) has no scheme; accepted are \(acceptedResolvers)")
        }
        let scheme = text[..<separator.lowerBound].lowercased()
        let rest = text[separator.upperBound...]
        if sni != nil, scheme != "dot" {
            throw WireError.badKey("dns:// key: sni= names the certificate of a dot:// resolver; it does not apply to \(scheme)://")
        }
        func ipEndpoint(_ defaultPort: UInt16) throws -> Endpoint {
            var address = rest
            if address.hasSuffix("/") { address = address.dropLast() }
            let endpoint: Endpoint
            do {
                endpoint = try Endpoint(parsing: address, defaultPort: defaultPort)
            } catch let error as WireError {
                throw WireError.badKey("dns:// key: the resolver address \"\(excerpt(String(address)))\" is not usable (\(error.reason)): expected \(scheme)://IP:PORT")
            }
            return endpoint
        }
        switch scheme {
        case "udp": return try checked(.udp(ipEndpoint(plainDNSPort)))
        case "tcp": return try checked(.tcp(ipEndpoint(plainDNSPort)))
        case "dot", "tls": return try checked(.dot(ipEndpoint(dotPort), serverName: sni))
        case "doh", "https": return try checked(.doh(url: "https://" + rest))
        default:
            throw WireError.badKey("dns:// key: resolver scheme \(excerpt(scheme)):// is not supported; accepted are \(acceptedResolvers)")
        }
    }

    /// The resolver if usable, a DoH URL in canonical form.
    static func checked(_ resolver: Resolver) throws -> Resolver {
        func requireIP(_ endpoint: Endpoint, _ scheme: String) throws {
            if case .domain(let name) = endpoint.host {
                throw WireError.badKey("dns:// key: the \(scheme):// resolver must be an IP address, not the name \"\(excerpt(name))\": names cannot be looked up before the tunnel exists (that is what it is for)")
            }
            guard endpoint.port != 0 else {
                throw WireError.badKey("dns:// key: the \(scheme):// resolver's port is 0; expected 1 to 65535")
            }
        }
        switch resolver {
        case .system:
            return .system
        case .udp(let endpoint):
            try requireIP(endpoint, "udp")
            return resolver
        case .tcp(let endpoint):
            try requireIP(endpoint, "tcp")
            return resolver
        case .dot(let endpoint, let serverName):
            try requireIP(endpoint, "dot")
            if let serverName, serverName.isEmpty || !Endpoint.isPlausibleDomain(serverName) {
                throw WireError.badKey("dns:// key: sni=\(excerpt(serverName)) is not a host name for the dot:// resolver's certificate")
            }
            return resolver
        case .doh(let url):
            return .doh(url: try canonicalDoHURL(url))
        }
    }

    /// `https://host[:port]/path`, the path /dns-query when none is given.
    static func canonicalDoHURL(_ url: String) throws -> String {
        let prefix = "https://"
        guard url.lowercased().hasPrefix(prefix) else {
            throw WireError.badKey("dns:// key: the DoH resolver \"\(excerpt(url))\" is not an https:// URL: expected doh://HOST[:PORT]/PATH")
        }
        let rest = url.dropFirst(prefix.count)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        var path = rest[slash...]
        if path.isEmpty || path == "/" { path = Substring(defaultDoHPath) }
        do {
            _ = try Endpoint(parsing: authority, defaultPort: 443)
        } catch let error as WireError {
            throw WireError.badKey("dns:// key: the DoH resolver's host \"\(excerpt(String(authority)))\" is not usable (\(error.reason)): expected doh://HOST[:PORT]/PATH")
        }
        guard !path.contains(where: { $0 == "#" || $0.isWhitespace }) else {
            throw WireError.badKey("dns:// key: the DoH resolver's path \"\(excerpt(String(path)))\" has a space or #: expected doh://HOST[:PORT]/PATH")
        }
        return prefix + authority + path
    }

    static func excerpt(_ text: String) -> String {
        let characters = text.unicodeScalars.prefix(64).map { $0.isASCII && $0.value >= 0x20 && $0 != "\"" ? Character($0) : "?" }
        return String(characters) + (text.unicodeScalars.count > 64 ? "…" : "")
    }
}
