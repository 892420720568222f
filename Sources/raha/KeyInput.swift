import Foundation
import NIOPosix
import RahaProxy
import RahaTransport
import RahaWire

/// An access key Raha can dial, parsed.
enum AccessKey {
    case shadowsocks(ShadowsocksKey)
    case trojan(TrojanKey)
    case dns(DNSTunnelKey)

    init(_ text: String) throws {
        switch AccessBundle.scheme(of: text) {
        case "ss": self = .shadowsocks(try ShadowsocksKey(parsing: text))
        case "trojan": self = .trojan(try TrojanKey(parsing: text))
        case "dns": self = .dns(try DNSTunnelKey(parsing: text))
        default: throw UsageFailure("not an access key Raha knows: expected ss://…, trojan://… or dns://…")
        }
    }
}

/// Expands what `raha connect` (and `raha key bundle|show`) are given into
/// individual access-key strings, in order, without duplicates. Each input is:
///
/// - an access key (`ss://…`, `trojan://…`);
/// - a bundle (`raha:1.…`), which stands for its members;
/// - an `https://` or `http://` URL, or an Outline dynamic key `ssconf://…`
///   (fetched over https), answering with a SIP008 JSON document or key lines;
/// - a path to a file holding the same.
///
/// Key lines: one access key or bundle per line; blank lines and lines
/// starting with `#` are skipped. Documents never name further files or URLs.
/// Messages name a URL without its path and query (they may hold secrets).
func expandAccessKeys(_ inputs: [String]) async throws -> [String] {
    var keys: [String] = []
    var seen = Set<String>()
    for (index, input) in inputs.enumerated() {
        let what = "access key \(index + 1): "
        let expanded: [String]
        do {
            expanded = try await expand(input)
        } catch {
            throw UsageFailure(what + "\(error)")
        }
        for key in expanded where seen.insert(key).inserted {
            keys.append(key)
        }
    }
    return keys
}

private func expand(_ input: String) async throws -> [String] {
    let text = input.trimmingCharacters(in: .whitespacesAndNewlines)
    if let keys = try keysInLine(text) { return keys }
    if WebURL.isWebURL(text) {
        let url = try WebURL(parsing: text)
        let body = try await WebFetcher().get(url, group: MultiThreadedEventLoopGroup.singleton)
        return try keysInDocument(body, source: "online config \(url.redacted)")
    }
    guard FileManager.default.fileExists(atPath: text) else {
        throw UsageFailure("not an access key (ss://…, trojan://…), a bundle (raha:…), an https:// address, or a file that exists")
    }
    guard let data = FileManager.default.contents(atPath: text) else {
        throw UsageFailure("cannot read the file \(text)")
    }
    guard data.count <= WebFetcher().maxBodyBytes else {
        throw UsageFailure("the file \(text) is larger than \(WebFetcher().maxBodyBytes / 1024) KiB: is it really a key list or SIP008 document?")
    }
    return try keysInDocument(Array(data), source: "the file \(text)")
}

/// The keys in one access key or bundle; nil when `text` is neither.
private func keysInLine(_ text: String) throws -> [String]? {
    if AccessBundle.isBundle(text) {
        return try AccessBundle(parsing: text, validate: { _ = try AccessKey($0) }).members
    }
    if let scheme = AccessBundle.scheme(of: text), ["ss", "trojan", "dns"].contains(scheme) {
        _ = try AccessKey(text)
        return [text]
    }
    return nil
}

/// A SIP008 document or key lines.
private func keysInDocument(_ bytes: [UInt8], source: String) throws -> [String] {
    if SIP008.looksLikeJSON(bytes) {
        do { return try SIP008.decode(bytes).map(\.uri) } catch { throw UsageFailure("\(source): \(error)") }
    }
    guard let text = String(bytes: bytes, encoding: .utf8) else {
        throw UsageFailure("\(source): not SIP008 JSON and not text")
    }
    var keys: [String] = []
    for (index, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
        let line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
        if line.isEmpty || line.hasPrefix("#") { continue }
        do {
            guard let found = try keysInLine(line) else {
                throw UsageFailure("not an access key or bundle (expected one ss://…, trojan://… or raha:… per line, or SIP008 JSON)")
            }
            keys += found
        } catch {
            throw UsageFailure("\(source) line \(index + 1): \(error)")
        }
    }
    guard !keys.isEmpty else { throw UsageFailure("\(source) holds no access keys") }
    return keys
}

/// `--rules`: a built-in rule set by name, else a rules file. Errors are usage errors with the line number.
func loadRoutingRules(_ spec: String?) throws -> RoutingRules? {
    guard let spec else { return nil }
    if let builtIn = RoutingRules.builtIn[spec.lowercased()] {
        return try RoutingRules(parsing: builtIn)
    }
    guard let data = FileManager.default.contents(atPath: spec) else {
        throw UsageFailure("--rules \(spec): no such file and no built-in rule set (\(RoutingRules.builtIn.keys.sorted().joined(separator: ", ")))")
    }
    do {
        return try RoutingRules(parsing: String(decoding: data, as: UTF8.self))
    } catch {
        throw UsageFailure("--rules \(spec): \(error)")
    }
}
