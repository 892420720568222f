import Foundation
import RahaText
import RahaWire

// Text people paste or scan (access keys, bundles, invites, online configs)
// and pages the text browser renders.

extension FuzzTarget {
    /// Every kind of access key and what else a user may paste: what parses
    /// gives a URI that parses back to the same key.
    static let accessKey = FuzzTarget("access-key", "ss://, trojan://, dns:// keys, raha: bundles, SIP008, invites, URLs, quantities", seeds: { Seeds.accessKey }) { data in
        let text = String(decoding: data, as: UTF8.self)
        if let key = try? ShadowsocksKey(parsing: text) {
            check((try? ShadowsocksKey(parsing: key.uri)) == key, "an ss:// key did not parse back from \(key.uri)")
        }
        if let key = try? TrojanKey(parsing: text) {
            check((try? TrojanKey(parsing: key.uri)) == key, "a trojan:// key did not parse back from \(key.uri)")
        }
        if let key = try? DNSTunnelKey(parsing: text) {
            check((try? DNSTunnelKey(parsing: key.text)) == key, "a dns:// key did not parse back from \(key.text)")
        }
        if let bundle = try? AccessBundle(parsing: text) {
            check((try? AccessBundle(parsing: bundle.uri)) == bundle, "a bundle did not parse back")
        }
        if let invite = try? MailInvite(parsing: text) {
            check((try? MailInvite(parsing: invite.text)) == invite, "a mail invite did not parse back")
        }
        _ = try? SIP008.decode(data)
        _ = try? Deflate.inflate(data, maxSize: AccessBundle.maxDecompressedSize)
        if let url = try? WebURL(parsing: text) {
            _ = url.request
            _ = try? url.following(location: text)
        }
        _ = try? Endpoint(parsing: text, defaultPort: 443)
        _ = try? Quantity.parseRate(text)
        _ = try? Quantity.parseAmount(text)
        _ = try? Rendezvous.parsePorts(text)
        _ = Base64.decode(text)
        _ = ResolvConf.nameservers(text)
    }

    /// The text browser's renderer: charset detection, the HTML parser, and
    /// the reader (article or whole page).
    static let html = FuzzTarget("html", "charset decoding, HTML parsing, reader rendering", seeds: { Seeds.html }) { data in
        var input = FuzzInput(data)
        let seed = input.byte()
        let contentTypes = [nil, "text/html; charset=utf-8", "text/html; charset=windows-1256", "text/html; charset=iso-8859-1"]
        let html = Charset.decode(input.rest(), contentType: contentTypes[Int(seed) % contentTypes.count])
        let url = URL(string: "https://example.org/news/index.html")
        let page = seed & 4 == 0 ? Reader.read(html: html, url: url) : Reader.wholePage(html: html, url: url)
        _ = page.text
        _ = HTMLParser.decodeEntities(html)
    }
}
