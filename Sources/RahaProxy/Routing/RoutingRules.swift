import RahaWire

/// What to do with a connection.
public enum RouteAction: String, Sendable, CaseIterable {
    /// Straight to the destination, not through a bridge.
    case direct
    /// Through the tunnel (the default).
    case proxy
    /// Refused: SOCKS5 reply 0x02, HTTP 403.
    case block
}

/// Split-routing rules: which destinations go direct, through the tunnel, or nowhere.
///
/// Text format, one rule per line; `#` starts a comment; blank lines are ignored:
///
///     ACTION PATTERN
///     ACTION  = direct | proxy | block
///     PATTERN = DOMAIN | .DOMAIN | IPv4/LEN | IPv6/LEN | IP
///
/// - `example.com` and `.example.com` mean the same: that name and every
///   name under it (`www.example.com`), by whole labels (`myexample.com`
///   does not match). `ir` and `.ir` match the whole `.ir` zone and the
///   bare name `ir`. Names are compared case-insensitively, without a
///   trailing dot.
/// - `10.0.0.0/8`, `2001:db8::/32`; an address without `/LEN` is one host.
///   Bits beyond the prefix must be zero.
///
/// The first rule that matches wins; with none, `proxy`.
///
/// Domain rules match only destinations given as names, CIDR rules only
/// destinations given as IP literals. Nothing is resolved to decide a
/// route: a local DNS lookup would reveal every destination, tunnelled or
/// not, to the domestic resolver, which is exactly what the censor watches.
/// (A name that a rule sends `direct` is resolved locally when it is
/// dialled, since it goes direct anyway.)
///
/// Matching costs one dictionary lookup per label of the name, or one per
/// distinct prefix length for an address, however many rules there are.
public struct RoutingRules: Sendable {
    /// A parse error: the line number and what is wrong with it.
    public struct ParseError: Error, Hashable, Sendable, CustomStringConvertible {
        public var line: Int
        public var reason: String
        public var description: String { "line \(line): \(reason)" }
    }

    /// The outcome of matching: the action and the line of the rule that
    /// chose it (nil for the default).
    public struct Decision: Hashable, Sendable {
        public var action: RouteAction
        public var line: Int?
    }

    private struct Rule: Sendable {
        var action: RouteAction
        var line: Int
    }

    /// Suffix (lower-cased, no leading or trailing dot) → the first rule for it.
    private var domains: [String: Rule] = [:]
    /// Per address length (4, 16): prefix length → masked address → the first rule for it.
    private var networks: [Int: [Int: [[UInt8]: Rule]]] = [:]
    /// Prefix lengths present per address length, longest first.
    private var prefixLengths: [Int: [Int]] = [:]
    /// How many rules were read.
    public private(set) var count = 0

    /// No rules: everything through the tunnel.
    public init() {}

    public init(parsing text: String) throws {
        for (index, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let lineNumber = index + 1
            var line = rawLine
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if words.isEmpty { continue }
            guard words.count == 2 else {
                throw ParseError(line: lineNumber, reason: words.count == 1
                    ? "“\(words[0].prefix(40))” needs a pattern: expected ACTION PATTERN, e.g. direct .ir"
                    : "too many words: expected ACTION PATTERN, e.g. direct .ir")
            }
            guard let action = RouteAction(rawValue: words[0].lowercased()) else {
                throw ParseError(line: lineNumber, reason: "“\(words[0].prefix(20))” is not an action: use direct, proxy or block")
            }
            try add(action: action, pattern: words[1], line: lineNumber)
        }
        for (length, byPrefix) in networks {
            prefixLengths[length] = byPrefix.keys.sorted(by: >)
        }
    }

    private mutating func add(action: RouteAction, pattern: Substring, line: Int) throws {
        let rule = Rule(action: action, line: line)
        count += 1
        if let slash = pattern.firstIndex(of: "/") {
            let addressText = pattern[..<slash]
            guard let address = RoutingRules.parseAddress(addressText) else {
                throw ParseError(line: line, reason: "“\(addressText.prefix(45))” is not an IPv4 or IPv6 address: expected e.g. 10.0.0.0/8 or 2001:db8::/32")
            }
            let bits = address.count * 8
            guard let length = Int(pattern[pattern.index(after: slash)...]), (0...bits).contains(length) else {
                throw ParseError(line: line, reason: "the prefix length after / must be a number from 0 to \(bits)")
            }
            guard RoutingRules.mask(address, to: length) == address else {
                throw ParseError(line: line, reason: "\(pattern.prefix(50)) has bits set beyond its /\(length) prefix: did you mean \(RoutingRules.format(RoutingRules.mask(address, to: length)))/\(length)?")
            }
            addNetwork(address, length: length, rule: rule)
        } else if let address = RoutingRules.parseAddress(pattern) {
            addNetwork(address, length: address.count * 8, rule: rule)
        } else {
            var name = pattern.lowercased()[...]
            if name.hasPrefix(".") { name = name.dropFirst() }
            if name.hasSuffix(".") { name = name.dropLast() }
            guard !name.isEmpty, !name.contains(".."),
                  name.utf8.allSatisfy({ $0 >= 0x80 || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".")
                      || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
                throw ParseError(line: line, reason: "“\(pattern.prefix(60))” is neither a domain (example.com, .ir) nor an address range (10.0.0.0/8)")
            }
            let key = String(name)
            if domains[key] == nil { domains[key] = rule }
        }
    }

    private mutating func addNetwork(_ address: [UInt8], length: Int, rule: Rule) {
        if networks[address.count, default: [:]][length, default: [:]][address] == nil {
            networks[address.count, default: [:]][length, default: [:]][address] = rule
        }
    }

    /// The route for a destination host.
    public func route(_ host: Endpoint.Host) -> Decision {
        switch host {
        case .ipv4(let bytes), .ipv6(let bytes):
            return decision(matchNetwork(bytes))
        case .domain(let name):
            // A literal sent as a name (SOCKS5 lets clients do that) is still an address.
            if let address = RoutingRules.parseAddress(name[...]) { return decision(matchNetwork(address)) }
            return decision(matchDomain(name))
        }
    }

    private func decision(_ rule: Rule?) -> Decision {
        guard let rule else { return Decision(action: .proxy, line: nil) }
        return Decision(action: rule.action, line: rule.line)
    }

    private func matchDomain(_ name: String) -> Rule? {
        guard !domains.isEmpty else { return nil }
        var suffix = name.lowercased()[...]
        if suffix.hasSuffix(".") { suffix = suffix.dropLast() }
        var best: Rule?
        while !suffix.isEmpty {
            if let rule = domains[String(suffix)], best.map({ rule.line < $0.line }) ?? true { best = rule }
            guard let dot = suffix.firstIndex(of: ".") else { break }
            suffix = suffix[suffix.index(after: dot)...]
        }
        return best
    }

    private func matchNetwork(_ address: [UInt8]) -> Rule? {
        guard let byPrefix = networks[address.count], let lengths = prefixLengths[address.count] else { return nil }
        var best: Rule?
        for length in lengths {
            if let rule = byPrefix[length]?[RoutingRules.mask(address, to: length)], best.map({ rule.line < $0.line }) ?? true {
                best = rule
            }
        }
        return best
    }

    // MARK: Addresses

    private static func parseAddress(_ text: Substring) -> [UInt8]? {
        if let v4 = Endpoint.parseIPv4(text) { return v4 }
        if text.contains(":") { return Endpoint.parseIPv6(text) }
        return nil
    }

    private static func mask(_ address: [UInt8], to length: Int) -> [UInt8] {
        address.enumerated().map { index, byte in
            let keep = min(8, max(0, length - index * 8))
            return keep == 8 ? byte : byte & ~(UInt8(0xFF) >> keep)
        }
    }

    private static func format(_ address: [UInt8]) -> String {
        address.count == 4 ? address.map(String.init).joined(separator: ".") : Endpoint.formatIPv6(address)
    }

    // MARK: Built-in rule sets

    /// Rule sets that ship with Raha, by name (`raha connect --rules iran`).
    public static let builtIn: [String: String] = ["iran": iran]

    /// Iran: Iranian sites go direct (they are often slower or refused from
    /// abroad, and need no tunnel), everything else through the tunnel.
    ///
    /// Addresses on this machine and the local network also go direct: they
    /// never cross the censor, the bridge refuses them anyway (it is not an
    /// open proxy into its own network), and people expect a router's admin
    /// page or a local service to keep working with the proxy on.
    ///
    /// Iranian IP ranges are not included: they change, and a stale list
    /// would send foreign traffic direct. To add them, put `direct CIDR`
    /// lines (from a list you trust, e.g. the RIPE NCC delegations for IR)
    /// into a file, add `direct .ir` and any others from here, and run
    /// `raha connect --rules FILE`.
    public static let iran = """
        # Raha's built-in rules for Iran. First match wins; anything else goes through the tunnel.
        # This machine and the local network (never cross the censor).
        direct localhost
        direct 127.0.0.0/8
        direct 10.0.0.0/8
        direct 172.16.0.0/12
        direct 192.168.0.0/16
        direct 169.254.0.0/16
        direct ::1/128
        direct fc00::/7
        direct fe80::/10
        # Iran's country-code domains: .ir and .ایران (in DNS as xn--mgba3a4f16a).
        direct .ir
        direct .xn--mgba3a4f16a
        # Iranian IP ranges are not listed here (they change): supply them in your own
        # rules file as `direct CIDR` lines and pass --rules FILE.
        """
}
