/// An invite to write to someone over the mail courier: their mail address
/// and their Raha identity, with the name they suggest.
///
///     raha-invite://ADDRESS?id=BASE64URL(identity, 64 bytes)#NAME
///
/// ADDRESS and NAME are percent-encoded. Anyone who has it can write to its
/// owner, who only reads envelopes from identities they added in turn.
public struct MailInvite: Hashable, Sendable {
    public static let scheme = "raha-invite://"

    public var address: String
    public var identity: PublicIdentity
    public var name: String?

    public init(address: String, identity: PublicIdentity, name: String?) throws {
        try Self.checkAddress(address)
        self.address = address
        self.identity = identity
        self.name = name.flatMap { $0.isEmpty ? nil : $0 }
    }

    public init(parsing text: String) throws {
        let trimmed = URIText.trimmingWhitespace(text)
        guard trimmed.lowercased().hasPrefix(Self.scheme) else {
            throw WireError.badKey("an invite starts with \(Self.scheme); this text does not (it may have been cut when copied)")
        }
        let (body, query, tag) = URIText.splitAfterScheme(trimmed.dropFirst(Self.scheme.count))
        let address = String(decoding: URIText.percentDecode(body, plusIsSpace: false), as: UTF8.self)
        var idText: Substring?
        for pair in (query ?? "").split(separator: "&") where pair.hasPrefix("id=") { idText = pair.dropFirst(3) }
        guard let idText, let bytes = Base64.decode(String(idText)), bytes.count == PublicIdentity.length else {
            throw WireError.badKey("the invite's id= must be the 64-byte identity in base64url; it is missing or damaged (was the invite cut when copied?)")
        }
        try self.init(address: address, identity: try PublicIdentity(bytes: bytes), name: tag)
    }

    public var text: String {
        Self.scheme + URIText.percentEncode(Array(address.utf8), keeping: { $0 == UInt8(ascii: "@") || $0 == UInt8(ascii: "+") })
            + "?id=" + Base64.encode(identity.bytes, urlSafe: true, padded: false)
            + (name.map { "#" + URIText.percentEncode(Array($0.utf8)) } ?? "")
    }

    /// A mail address as the courier uses it: local@domain, printable ASCII, no spaces or angle brackets.
    public static func checkAddress(_ address: String) throws {
        let parts = address.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[1].contains("."), !parts[1].hasPrefix("."), !parts[1].hasSuffix("."),
              address.utf8.allSatisfy({ (0x21..<0x7F).contains($0) && $0 != UInt8(ascii: "<") && $0 != UInt8(ascii: ">") && $0 != UInt8(ascii: "\"") }) else {
            throw WireError.badKey("\"\(address)\" is not a mail address of the form name@example.org")
        }
    }
}
