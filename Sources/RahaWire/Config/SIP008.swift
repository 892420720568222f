import Foundation

/// Shadowsocks' online configuration format (SIP008): a JSON document an
/// operator publishes at a URL so that clients can fetch fresh servers.
///
///     {"version": 1,
///      "servers": [{"id": "…", "remarks": "…", "server": "host", "server_port": 8388,
///                   "password": "…", "method": "chacha20-ietf-poly1305",
///                   "plugin": "…", "plugin_opts": "…"}],
///      …}
///
/// Unknown fields are ignored, as SIP008 asks. A server that needs a plugin
/// is refused (Raha has no SIP003 plugins), as is a method Raha does not
/// speak; the message names the server by its remarks and position, never
/// its password.
public enum SIP008 {
    /// The servers of a SIP008 document, in order, as Shadowsocks keys
    /// (each tagged with its `remarks`).
    public static func decode(_ json: [UInt8]) throws -> [ShadowsocksKey] {
        let document: Document
        do {
            document = try JSONDecoder().decode(Document.self, from: Data(json))
        } catch let error as DecodingError {
            throw WireError.badKey("not SIP008 JSON: \(describe(error))")
        } catch {
            throw WireError.badKey("not SIP008 JSON: it does not parse as JSON")
        }
        if let version = document.version, version != 1 {
            throw WireError(.unsupported, "this is a version \(version) SIP008 document, but Raha reads version 1")
        }
        guard !document.servers.isEmpty else {
            throw WireError.badKey("the SIP008 document lists no servers")
        }
        return try document.servers.enumerated().map { index, server in
            let name = "server \(index + 1)" + (server.remarks.map { " (“\($0.prefix(60))”)" } ?? "")
            do {
                return try server.key()
            } catch {
                throw WireError.badKey("SIP008 \(name): \(error)")
            }
        }
    }

    /// Whether `bytes` look like a JSON object (first non-blank byte `{`):
    /// tells a SIP008 document from a list of keys.
    public static func looksLikeJSON(_ bytes: [UInt8]) -> Bool {
        bytes.first { !(($0 == 0x20) || ($0 == 0x09) || ($0 == 0x0A) || ($0 == 0x0D) || ($0 == 0xEF) || ($0 == 0xBB) || ($0 == 0xBF)) } == UInt8(ascii: "{")
    }

    private struct Document: Decodable {
        var version: Int?
        var servers: [Server]
    }

    private struct Server: Decodable {
        var remarks: String?
        var server: String
        var server_port: UInt16
        var password: String
        var method: String
        var plugin: String?
        var plugin_opts: String?

        func key() throws -> ShadowsocksKey {
            if let plugin, !plugin.isEmpty {
                throw WireError.badKey("it needs the plugin “\(plugin.prefix(40))”, and Raha has no SIP003 plugins: ask for a server without one")
            }
            let method = try ShadowsocksMethod(name: method)
            let endpoint: Endpoint
            do {
                endpoint = try Endpoint(parsing: server.contains(":") && !server.hasPrefix("[") ? "[\(server)]" : server, defaultPort: server_port)
            } catch {
                throw WireError.badKey("its server address is not usable: \(error)")
            }
            return try ShadowsocksKey(method: method, password: password,
                                      server: Endpoint(host: endpoint.host, port: server_port), tag: remarks)
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let parts = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }
            return parts.isEmpty ? "the document" : parts.joined().replacingOccurrences(of: ".[", with: "[")
                .trimmingCharacters(in: CharacterSet(charactersIn: "."))
        }
        switch error {
        case .keyNotFound(let key, let context):
            let at = context.codingPath.isEmpty ? "the document" : path(context)
            return "\(at) has no “\(key.stringValue)”"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return "\(path(context)) has the wrong type"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "it does not parse as JSON" : "\(path(context)) is not valid"
        @unknown default:
            return "it does not match the format"
        }
    }
}
