/// A Trojan access key in the de facto share-link form that v2rayNG,
/// Hiddify, Shadowrocket and Xray use:
///
///     trojan://PASSWORD@HOST:PORT?security=tls&sni=NAME&type=ws&path=/PATH&host=HOST#label
///
/// HOST:PORT is where to connect; `sni` is the name sent in the TLS
/// ClientHello and `host` the WebSocket Host header, so a key can connect
/// to one address while naming another (domain fronting through a CDN).
/// Raha adds two parameters of its own, ignored by other apps: `pin`, the
/// SHA-256 of the bridge's certificate (hex, colons allowed), which lets a
/// self-signed bridge be verified without a CA; and `fragment=MIN-MAX`,
/// which splits the ClientHello into TCP segments of MIN to MAX bytes; and
/// `mux=1`, which says the server is a Raha bridge that multiplexes many
/// streams over one connection (other Trojan servers do not).
public struct TrojanKey: Hashable, Sendable {
    public enum Transport: Hashable, Sendable {
        /// Trojan directly inside TLS.
        case tls
        /// Trojan inside WebSocket inside TLS: passes through nginx or a CDN.
        case webSocket(path: String, host: String?)
    }

    public var password: String
    public var server: Endpoint
    public var transport: Transport
    /// TLS on the connection (`security=tls`, the default). Off (`security=none`)
    /// only makes sense for a bridge's WebSocket listener behind a TLS-terminating
    /// reverse proxy or CDN, or a client talking to one on a trusted hop.
    public var tls: Bool
    /// The TLS server name; nil means the server's host name (or none for an IP).
    public var sni: String?
    /// Skip certificate verification (the de facto `allowInsecure=1`). A pin still applies.
    public var allowInsecure: Bool
    /// SHA-256 of the bridge's certificate (DER), 32 bytes.
    public var pinnedCertificateSHA256: [UInt8]?
    /// ALPN protocols to offer, in order.
    public var alpn: [String]
    /// ClientHello fragmentation: TCP segment sizes, in bytes.
    public var fragment: ClosedRange<Int>?
    /// The server is a Raha bridge: streams share connections (`mux=1`).
    public var mux: Bool
    public var tag: String?

    public init(password: String, server: Endpoint, transport: Transport = .tls, tls: Bool = true, sni: String? = nil, allowInsecure: Bool = false,
                pinnedCertificateSHA256: [UInt8]? = nil, alpn: [String] = [], fragment: ClosedRange<Int>? = nil, mux: Bool = false, tag: String? = nil) throws {
        guard !password.isEmpty else { throw WireError.badKey("the Trojan password is empty") }
        if let pin = pinnedCertificateSHA256, pin.count != 32 {
            throw WireError.badKey("the certificate pin must be a SHA-256 (32 bytes), this one has \(pin.count)")
        }
        if let fragment, fragment.lowerBound < 1 {
            throw WireError.badKey("fragment sizes start at 1 byte: expected fragment=MIN-MAX, e.g. fragment=10-40")
        }
        if !tls, transport == .tls {
            throw WireError.badKey("security=none without WebSocket would send the password and every byte in the clear: use security=tls, or security=none&type=ws only for the hop behind a TLS front")
        }
        if case .webSocket(let path, _) = transport, !path.hasPrefix("/") {
            throw WireError.badKey("the WebSocket path must start with /: expected path=/SECRET-PATH")
        }
        self.password = password
        self.server = server
        self.transport = transport
        self.tls = tls
        self.sni = sni
        self.allowInsecure = allowInsecure
        self.pinnedCertificateSHA256 = pinnedCertificateSHA256
        self.alpn = alpn
        self.fragment = fragment
        self.mux = mux
        self.tag = tag
    }

    /// The name to send in the ClientHello: `sni`, else the server's name (never an IP literal).
    public var serverName: String? {
        if let sni, !sni.isEmpty { return sni }
        if case .domain(let name) = server.host { return name }
        return nil
    }

    // MARK: Parsing

    public init(parsing text: String) throws {
        let trimmed = URIText.trimmingWhitespace(text)
        let scheme = "trojan://"
        guard trimmed.lowercased().hasPrefix(scheme) else {
            throw WireError.badKey("a Trojan key starts with trojan://: expected trojan://PASSWORD@HOST:PORT?sni=NAME")
        }
        let (body, optionalQuery, tag) = URIText.splitAfterScheme(trimmed.dropFirst(scheme.count))
        let query = optionalQuery ?? ""
        guard let at = body.lastIndex(of: "@") else {
            throw WireError.badKey("the Trojan key has no @ between password and server: expected trojan://PASSWORD@HOST:PORT")
        }
        let password = String(decoding: URIText.percentDecode(body[..<at], plusIsSpace: false), as: UTF8.self)
        var hostPort = body[body.index(after: at)...]
        if hostPort.hasSuffix("/") { hostPort = hostPort.dropLast() }
        let server: Endpoint
        do {
            server = try Endpoint(parsing: String(decoding: URIText.percentDecode(hostPort, plusIsSpace: false), as: UTF8.self))
        } catch let error as WireError {
            let reason = error.reason.contains(password) ? "the server address is not host:port" : error.reason
            throw WireError.badKey("the Trojan key's server is not usable (\(reason)): expected trojan://PASSWORD@HOST:PORT")
        }

        var parameters: [String: String] = [:]
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let eq = pair.firstIndex(of: "=") ?? pair.endIndex
            let name = String(decoding: URIText.percentDecode(pair[..<eq], plusIsSpace: true), as: UTF8.self).lowercased()
            let value = eq < pair.endIndex ? String(decoding: URIText.percentDecode(pair[pair.index(after: eq)...], plusIsSpace: true), as: UTF8.self) : ""
            if parameters[name] == nil { parameters[name] = value }
        }

        let tls: Bool
        switch parameters["security"]?.lowercased() ?? "tls" {
        case "tls", "": tls = true
        case "none": tls = false
        case let other:
            throw WireError.badKey("security=\(other) is not supported: use security=tls (or security=none for a WebSocket listener behind a TLS reverse proxy)")
        }
        let transport: Transport
        switch parameters["type"]?.lowercased() ?? "tcp" {
        case "tcp", "": transport = .tls
        case "ws":
            let path = parameters["path"].flatMap { $0.isEmpty ? nil : $0 } ?? "/"
            transport = .webSocket(path: path, host: parameters["host"].flatMap { $0.isEmpty ? nil : $0 })
        case let other:
            throw WireError.badKey("type=\(other) is not supported: use type=tcp (plain TLS) or type=ws (WebSocket)")
        }
        let insecure = ["1", "true"].contains(parameters["allowinsecure"]?.lowercased() ?? parameters["insecure"]?.lowercased() ?? "")
        let mux = ["1", "true"].contains(parameters["mux"]?.lowercased() ?? "")
        var pin: [UInt8]?
        if let text = parameters["pin"], !text.isEmpty {
            let digits = text.lowercased().filter { $0 != ":" }
            guard digits.count == 64, let bytes = Hex.decode(digits) else {
                throw WireError.badKey("pin= must be the certificate's SHA-256 in hex (64 digits, colons allowed)")
            }
            pin = bytes
        }
        var fragment: ClosedRange<Int>?
        if let text = parameters["fragment"], !text.isEmpty {
            let parts = text.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(parts.count), let low = Int(parts[0]), let high = Int(parts.last!), low <= high else {
                throw WireError.badKey("fragment= must be MIN-MAX bytes per TCP segment, e.g. fragment=10-40")
            }
            fragment = low...high
        }
        let alpn = (parameters["alpn"] ?? "").split(separator: ",").map { String($0) }
        let sni = (parameters["sni"] ?? parameters["peer"]).flatMap { $0.isEmpty ? nil : $0 }
        try self.init(password: password, server: server, transport: transport, tls: tls, sni: sni, allowInsecure: insecure,
                      pinnedCertificateSHA256: pin, alpn: alpn, fragment: fragment, mux: mux, tag: tag)
    }

    // MARK: Output

    /// The share-link text, parameters in a fixed order.
    public var uri: String {
        var out = "trojan://" + URIText.percentEncode(Array(password.utf8)) + "@" + server.description
        var query: [(String, String)] = [("security", tls ? "tls" : "none")]
        if let sni { query.append(("sni", sni)) }
        switch transport {
        case .tls:
            query.append(("type", "tcp"))
        case .webSocket(let path, let host):
            query.append(("type", "ws"))
            query.append(("path", path))
            if let host { query.append(("host", host)) }
        }
        if !alpn.isEmpty { query.append(("alpn", alpn.joined(separator: ","))) }
        if allowInsecure { query.append(("allowInsecure", "1")) }
        if let pin = pinnedCertificateSHA256 { query.append(("pin", Hex.encode(pin))) }
        if let fragment { query.append(("fragment", "\(fragment.lowerBound)-\(fragment.upperBound)")) }
        if mux { query.append(("mux", "1")) }
        out += "?" + query.map { "\($0.0)=\(URIText.percentEncode(Array($0.1.utf8), keeping: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ",") }))" }.joined(separator: "&")
        if let tag { out += "#" + URIText.percentEncode(Array(tag.utf8)) }
        return out
    }

    /// A fresh key with a random password (128 bits, URL-safe), and for
    /// WebSocket a random secret path.
    public static func generate(server: Endpoint, sni: String? = nil, webSocket: Bool = false, tag: String? = nil) -> TrojanKey {
        let password = Base64.encode(SecureRandom.bytes(16), urlSafe: true, padded: false)
        let transport: Transport = webSocket ? .webSocket(path: "/" + Base64.encode(SecureRandom.bytes(9), urlSafe: true, padded: false), host: nil) : .tls
        // Cannot throw: the password is non-empty and the path starts with "/".
        return try! TrojanKey(password: password, server: server, transport: transport, sni: sni, tag: tag)
    }
}
