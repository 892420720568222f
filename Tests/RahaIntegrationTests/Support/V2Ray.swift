import Foundation

/// Debian's v2ray (4.34, `v2ray -config FILE.json`) as a Trojan client or
/// server on 127.0.0.1, over TLS or WebSocket over TLS. Each instance has
/// its own JSON config in a temporary directory; returned once it accepts.
enum V2Ray {
    /// WebSocket settings: the request path and the Host header (nil: v2ray's default, the server address).
    struct WebSocket: Sendable {
        var path: String
        var host: String?
        init(path: String, host: String? = nil) { self.path = path; self.host = host }
    }

    /// v2ray as a Trojan client: a SOCKS5 inbound (no authentication; TCP
    /// only, or with `udp` UDP ASSOCIATE too, relayed on 127.0.0.1) on
    /// 127.0.0.1 and a Trojan outbound to 127.0.0.1:serverPort over TLS
    /// (SNI `serverName`), or WebSocket over TLS with `webSocket`.
    ///
    /// Certificates: `allowInsecure` skips verification; otherwise
    /// `trustedCertificate` (a PEM file) is added to the roots v2ray trusts
    /// (its `"usage": "verify"`), so a self-signed server can be verified.
    /// v2ray's TLS client offers ALPN h2, http/1.1 on plain TLS and
    /// http/1.1 alone under WebSocket, unless `alpn` says otherwise.
    /// Returns the process and the SOCKS5 port.
    static func trojanClient(serverPort: UInt16, password: String, serverName: String,
                             allowInsecure: Bool, trustedCertificate: String? = nil,
                             webSocket: WebSocket? = nil, alpn: [String]? = nil, udp: Bool = false) throws -> (ManagedProcess, UInt16) {
        let socksPort = try Ports.free()
        var tls: [String: Any] = ["serverName": serverName, "allowInsecure": allowInsecure]
        if let trustedCertificate {
            tls["certificates"] = [["usage": "verify", "certificateFile": trustedCertificate]]
        }
        if let alpn { tls["alpn"] = alpn }
        let config: [String: Any] = [
            "log": ["loglevel": "warning"],
            "inbounds": [[
                "listen": "127.0.0.1", "port": Int(socksPort), "protocol": "socks",
                "settings": (udp ? ["auth": "noauth", "udp": true, "ip": "127.0.0.1"] : ["auth": "noauth", "udp": false]) as [String: Any],
            ]],
            "outbounds": [[
                "protocol": "trojan",
                "settings": ["servers": [["address": "127.0.0.1", "port": Int(serverPort), "password": password]]],
                "streamSettings": streamSettings(tls: tls, webSocket: webSocket),
            ]],
        ]
        let process = try start("v2ray (Trojan client)", config)
        try Ports.waitUntilAccepting(socksPort, process: process)
        return (process, socksPort)
    }

    /// v2ray as a Trojan server: a Trojan inbound on 127.0.0.1 with one
    /// password, over TLS with `certificate` (nil: no TLS, e.g. behind
    /// nginx), or WebSocket at `webSocketPath`; a `freedom` outbound, which
    /// reaches 127.0.0.1 origins (TCP and UDP). Unauthenticated connections go to
    /// 127.0.0.1:fallbackPort when given. `alpn` is what the TLS server
    /// may select (v2ray's default: h2, http/1.1). Returns the process and the port.
    static func trojanServer(password: String, certificate: TestCertificate?, webSocketPath: String? = nil,
                             fallbackPort: UInt16? = nil, alpn: [String]? = nil) throws -> (ManagedProcess, UInt16) {
        let port = try Ports.free()
        var tls: [String: Any]?
        if let certificate {
            var settings: [String: Any] = [
                "certificates": [["certificateFile": certificate.certificateFile, "keyFile": certificate.keyFile]],
            ]
            if let alpn { settings["alpn"] = alpn }
            tls = settings
        }
        var settings: [String: Any] = ["clients": [["password": password]]]
        if let fallbackPort { settings["fallbacks"] = [["dest": Int(fallbackPort)]] }
        let config: [String: Any] = [
            "log": ["loglevel": "warning"],
            "inbounds": [[
                "listen": "127.0.0.1", "port": Int(port), "protocol": "trojan",
                "settings": settings,
                "streamSettings": streamSettings(tls: tls, webSocket: webSocketPath.map { WebSocket(path: $0) }),
            ]],
            "outbounds": [["protocol": "freedom"]],
        ]
        let process = try start("v2ray (Trojan server)", config)
        try Ports.waitUntilAccepting(port, process: process)
        return (process, port)
    }

    private static func streamSettings(tls: [String: Any]?, webSocket: WebSocket?) -> [String: Any] {
        var stream: [String: Any] = ["network": webSocket == nil ? "tcp" : "ws", "security": tls == nil ? "none" : "tls"]
        if let tls { stream["tlsSettings"] = tls }
        if let webSocket {
            var ws: [String: Any] = ["path": webSocket.path]
            if let host = webSocket.host { ws["headers"] = ["Host": host] }
            stream["wsSettings"] = ws
        }
        return stream
    }

    /// Writes the config to a fresh temporary directory and starts `v2ray -config FILE`.
    private static func start(_ name: String, _ config: [String: Any]) throws -> ManagedProcess {
        let v2ray = try Paths.tool("v2ray", package: "v2ray")
        let directory = try Paths.temporaryDirectory("v2ray")
        ProcessRegistry.shared.removeAtExit(directory.path)
        let file = directory.appendingPathComponent("config.json")
        let json = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        try json.write(to: file)
        do {
            return try ManagedProcess(name, v2ray, ["-config", file.path])
        } catch {
            throw TestFailure("cannot start \(v2ray) -config \(file.path): \(error)\nConfig:\n\(String(decoding: json, as: UTF8.self))")
        }
    }
}
