/// Several access keys in one compact, versioned URI, for one QR code or one paste.
///
/// Grammar (version 1):
///
///     bundle  = "raha:" version "." payload
///     version = "1"
///     payload = BASE64URL-NOPAD( RAW-DEFLATE( member *( LF member ) ) )
///     member  = an access key URI (ss://…, trojan://…), one line, not itself a bundle
///
/// - The scheme is case-insensitive and `raha://` is accepted too (some QR
///   apps add the slashes); `uri` always writes `raha:`. Whitespace around
///   the whole text is ignored.
/// - BASE64URL-NOPAD is RFC 4648 §5 without `=`; RAW-DEFLATE is RFC 1951
///   with no zlib or gzip wrapper. The decompressed text is UTF-8, at most
///   `maxDecompressedSize` bytes, with at least one member; members are
///   separated by single line feeds (a CR before the LF is tolerated on
///   input), blank members are refused.
/// - An unknown version is refused with a message naming it, so that a newer
///   format never gets misread.
///
/// RahaWire does not know transports: which member schemes are usable is
/// the caller's business, checked through the `validate` closure. Error
/// messages name a bad member by position and scheme only, never its text.
public struct AccessBundle: Hashable, Sendable {
    public static let currentVersion = 1
    /// The most decompressed bytes a bundle may hold (a guard against zip bombs).
    public static let maxDecompressedSize = 64 * 1024

    /// The member access keys, in order.
    public let members: [String]

    /// A bundle of `members`, each trimmed; each must be a one-line URI
    /// (`scheme://…`) that `validate` accepts, and none may be a bundle.
    public init(members: [String], validate: (String) throws -> Void = { _ in }) throws {
        guard !members.isEmpty else {
            throw WireError.badKey("a bundle needs at least one access key")
        }
        var trimmed: [String] = []
        for (index, member) in members.enumerated() {
            let text = String(URIText.trimmingWhitespace(member))
            try AccessBundle.check(member: text, at: index + 1, validate: validate)
            trimmed.append(text)
        }
        let size = trimmed.reduce(trimmed.count - 1) { $0 + $1.utf8.count }
        guard size <= AccessBundle.maxDecompressedSize else {
            throw WireError.tooLarge("the bundle's keys come to \(size) bytes, more than the \(AccessBundle.maxDecompressedSize) a bundle may hold: split them into several bundles")
        }
        self.members = trimmed
    }

    /// Parses `raha:1.…`; `validate` is called on every member (its error is
    /// reported with the member's position and scheme).
    public init(parsing text: String, validate: (String) throws -> Void = { _ in }) throws {
        var body = URIText.trimmingWhitespace(text)
        guard let rest = AccessBundle.droppingScheme(body) else {
            throw WireError.badKey("a bundle starts with raha: — expected raha:1.DATA")
        }
        body = rest
        guard let dot = body.firstIndex(of: ".") else {
            throw WireError.badKey("the bundle has no version: expected raha:1.DATA")
        }
        let versionText = body[..<dot]
        guard let version = Int(versionText), version >= 1 else {
            throw WireError.badKey("the bundle version “\(versionText.prefix(8))” is not a number: expected raha:1.DATA")
        }
        guard version == AccessBundle.currentVersion else {
            throw WireError(.unsupported, "this is a version \(version) bundle, but this Raha reads only version \(AccessBundle.currentVersion): update Raha, or ask for the keys one by one")
        }
        let payload = body[body.index(after: dot)...]
        guard !payload.contains("="), let compressed = Base64.decode(payload),
              !payload.contains("+"), !payload.contains("/") else {
            throw WireError.badKey("the bundle's data is not unpadded base64url: it may have been cut off or changed while copying")
        }
        let bytes: [UInt8]
        do {
            bytes = try Deflate.inflate(compressed, maxSize: AccessBundle.maxDecompressedSize)
        } catch let error as WireError {
            if error.code == .tooLarge {
                throw WireError.tooLarge("the bundle expands to more than \(AccessBundle.maxDecompressedSize) bytes, more than any bundle may hold")
            }
            throw WireError.badKey("the bundle's data does not decompress (\(error.reason)): it may have been cut off or changed while copying")
        }
        guard let decoded = String(validatingUTF8Bytes: bytes) else {
            throw WireError.badKey("the bundle's keys are not UTF-8 text")
        }
        // Split on any line break ("\r\n" is one Character, so not on "\n" alone).
        let lines = decoded.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).map(String.init)
        try self.init(members: lines, validate: validate)
    }

    /// The bundle as `raha:1.…`.
    public var uri: String {
        let compressed = Deflate.deflate(Array(members.joined(separator: "\n").utf8))
        return "raha:\(AccessBundle.currentVersion)." + Base64.encode(compressed, urlSafe: true, padded: false)
    }

    /// Whether `text` claims to be a bundle (starts with `raha:`), valid or not.
    public static func isBundle(_ text: String) -> Bool {
        droppingScheme(URIText.trimmingWhitespace(text)) != nil
    }

    /// The lower-cased URI scheme of an access key (`ss`, `trojan`, `dns`), or nil
    /// when it has none. Safe for messages: it never includes the rest.
    public static func scheme(of text: String) -> String? {
        let trimmed = URIText.trimmingWhitespace(text)
        guard let colon = trimmed.firstIndex(of: ":") else { return nil }
        let scheme = trimmed[..<colon]
        guard let first = scheme.first, first.isASCII, first.isLetter, scheme.count <= 16,
              scheme.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+-.".contains($0)) }) else { return nil }
        return scheme.lowercased()
    }

    // MARK: Helpers

    private static func droppingScheme(_ text: Substring) -> Substring? {
        guard text.count >= 5, text.prefix(5).lowercased() == "raha:" else { return nil }
        var rest = text.dropFirst(5)
        if rest.hasPrefix("//") { rest = rest.dropFirst(2) }
        return rest
    }

    private static func check(member: String, at position: Int, validate: (String) throws -> Void) throws {
        guard !member.isEmpty else {
            throw WireError.badKey("bundle member \(position) is empty: a bundle holds one access key per line")
        }
        guard !member.contains(where: { $0 == "\n" || $0 == "\r" }) else {
            throw WireError.badKey("bundle member \(position) spans several lines: give each access key separately")
        }
        if isBundle(member) {
            throw WireError.badKey("bundle member \(position) is itself a bundle: give its keys instead")
        }
        guard let scheme = scheme(of: member), member.dropFirst(scheme.count + 1).hasPrefix("//") else {
            throw WireError.badKey("bundle member \(position) is not an access key URI: expected ss://…, trojan://… or dns://…")
        }
        do {
            try validate(member)
        } catch {
            throw WireError.badKey("bundle member \(position) (\(scheme)://): \(error)")
        }
    }
}
