import Foundation
import Testing
@testable import RahaText

/// The test pages (real-world-shaped: a news article with cookie banner,
/// navigation, share buttons, related links, ads, comments and footer; a
/// Wikipedia-like page; a page heavy with scripts and ads and no semantic
/// tags; a page of links with no article; a Persian page in windows-1256).
/// In each, the article runs from ARTICLE-START to ARTICLE-END and every
/// piece of furniture carries a FURNITURE- marker.
func pageBytes(_ name: String) throws -> [UInt8] {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: "html", subdirectory: "Pages"))
    return Array(try Data(contentsOf: url))
}

/// The words of the article as the page's source has them: scripts and
/// text nodes marked as furniture (an ad inside the article) left out, tags
/// stripped, entities decoded.
func articleWords(_ html: String) throws -> [String] {
    let start = try #require(html.range(of: "ARTICLE-START"))
    let end = try #require(html.range(of: "ARTICLE-END"))
    var source = String(html[start.lowerBound..<end.upperBound])
    while let open = source.range(of: "<script"), let close = source[open.lowerBound...].range(of: "</script>") {
        source.removeSubrange(open.lowerBound..<close.upperBound)
    }
    // Text nodes are what lies between one tag's ">" and the next "<".
    var text = ""
    for piece in source.split(separator: "<", omittingEmptySubsequences: false) {
        let node = piece.split(separator: ">", maxSplits: 1, omittingEmptySubsequences: false).last ?? ""
        if !node.contains("FURNITURE-") { text += " " + node }
    }
    return words(HTMLParser.decodeEntities(text))
}

func words(_ text: String) -> [String] {
    text.split { !$0.isLetter && !$0.isNumber }.map { $0.lowercased() }
}

/// The share of `wanted` (as a multiset) found in `have`.
func kept(_ wanted: [String], in have: [String]) -> Double {
    var pool: [String: Int] = [:]
    for word in have { pool[word, default: 0] += 1 }
    var found = 0
    for word in wanted where (pool[word] ?? 0) > 0 {
        pool[word]! -= 1
        found += 1
    }
    return wanted.isEmpty ? 1 : Double(found) / Double(wanted.count)
}

@Suite struct ReaderTests {
    static let base = URL(string: "https://news.example/2026/03/rivers")

    @Test(arguments: ["news-article", "wiki-page", "heavy-scripts"])
    func keepsTheArticleAndDropsTheFurniture(_ name: String) throws {
        let html = Charset.decode(try pageBytes(name))
        let page = Reader.read(html: html, url: Self.base)
        #expect(page.isArticle, "\(name): an article was found")
        let share = kept(try articleWords(html), in: words(page.text))
        #expect(share >= 0.95, "\(name): \(Int(share * 100))% of the article's words kept\n\(page.text)")
        #expect(!page.text.contains("FURNITURE-"), "\(name): furniture left:\n\(page.text)")
    }

    @Test func rendersStructureSimply() throws {
        let page = Reader.read(html: Charset.decode(try pageBytes("news-article")), url: Self.base)
        #expect(page.title == "Rivers Return to the Valley After Record Rains", "the headline, not the site's title tag")
        #expect(!page.body.hasPrefix("# Rivers"), "the headline is not repeated")
        for line in ["## A decade of drought", "Month | Rainfall (mm) | Average (mm)", "December | 61 | 34",
                     "1. Agree binding shares of water between upstream industry and downstream farms.",
                     "3. Measure groundwater pumping, most of which is not recorded at all.",
                     "> \"A river is not a tap. If we treat it like one, we will lose it again,\" said Dr. Hamid Rezaei of the university's water institute."] {
            #expect(page.body.split(separator: "\n").contains(Substring(line)), "missing line: \(line)\n\(page.body)")
        }
        #expect(page.body.contains("full water report[1] online"))
        #expect(page.links == ["https://news.example/reports/water-2026.pdf"])
        #expect(page.text.hasSuffix("Links:\n[1] https://news.example/reports/water-2026.pdf\n"))
        let wiki = Reader.read(html: Charset.decode(try pageBytes("wiki-page")), url: URL(string: "https://wiki.example/wiki/Qanat"))
        #expect(wiki.body.contains("\n### Maintenance\n\n- Clearing silt and fallen earth from the channel each year.\n"))
        #expect(wiki.body.contains("in many parts of Iran[1] and"))
        #expect(wiki.links.first == "https://wiki.example/wiki/Iran")
    }

    @Test func aPageWithoutAnArticleGivesAllItsText() throws {
        let page = Reader.read(html: Charset.decode(try pageBytes("link-list")), url: URL(string: "https://travel.example/links/"))
        #expect(!page.isArticle)
        #expect(page.body == "# Useful links\n\n- Train timetables[1]\n- Bus routes[2]\n- City maps[3] and weather[4]\n\nUpdated weekly.")
        #expect(page.links == ["https://trains.example/", "https://buses.example/", "https://travel.example/maps", "https://travel.example/weather"])
    }

    @Test func charsetsAreDetected() throws {
        let persian = Reader.read(html: Charset.decode(try pageBytes("persian-1256")), url: nil)
        #expect(persian.title == "باران")
        #expect(persian.text.contains("باران مي بارد"))
        #expect(Charset.decode(Array("caf\u{E9}".utf8)) == "café", "valid UTF-8 without a declaration")
        #expect(Charset.decode([0x63, 0x61, 0x66, 0xE9]) == "café", "invalid UTF-8 without a declaration: windows-1252")
        #expect(Charset.decode([0xEF, 0xBB, 0xBF, 0x61]) == "a", "a byte-order mark")
        #expect(Charset.decode([0xE9], contentType: "text/html; charset=ISO-8859-1") == "é")
        #expect(Charset.decode(Array("<meta charset=\"koi8-r\">".utf8) + [0xD0, 0xD2, 0xC9]).hasSuffix("при"))
    }
}

@Suite struct HTMLParserTests {
    private func shape(_ node: HTMLNode) -> String {
        switch node.kind {
        case .text(let text): return "'\(text)'"
        case .document: return node.children.map(shape).joined()
        case .element(let tag): return "<\(tag)>" + node.children.map(shape).joined() + "</\(tag)>"
        }
    }

    @Test func impliedEndsAndVoidElements() {
        #expect(shape(HTMLParser.parse("<p>a<p>b<div>c</div>")) == "<p>'a'</p><p>'b'</p><div>'c'</div>")
        #expect(shape(HTMLParser.parse("<ul><li>a<li>b<ul><li>c</ul><li>d</ul>")) == "<ul><li>'a'</li><li>'b'<ul><li>'c'</li></ul></li><li>'d'</li></ul>")
        #expect(shape(HTMLParser.parse("<table><tr><td>1<td>2<tr><td>3</table>")) == "<table><tr><td>'1'</td><td>'2'</td></tr><tr><td>'3'</td></tr></table>")
        #expect(shape(HTMLParser.parse("a<br>b<img src=x>c<br/>d")) == "'a'<br></br>'b'<img></img>'c'<br></br>'d'")
        #expect(shape(HTMLParser.parse("<b>x</i>y</b></p>z")) == "<b>'x''y'</b>'z'", "stray end tags are ignored")
    }

    @Test func rawTextCommentsAndEntities() {
        #expect(shape(HTMLParser.parse("<script>if (a<b) { x = '</div>' }</script>ok")) == "<script></script>'ok'")
        #expect(shape(HTMLParser.parse("<STYLE>p>a{}</style><!-- <p>hidden</p> -->t<!doctype html>")) == "<style></style>'t'")
        #expect(HTMLParser.decodeEntities("a &amp; b &lt;c&gt; &#1601;&#x627; &nbsp;&unknown; &") == "a & b <c> فا \u{00A0}&unknown; &")
        #expect(shape(HTMLParser.parse("x < y and 3<4")) == "'x < y and 3<4'", "a < that starts no tag is text")
    }

    @Test func attributesInEveryForm() throws {
        let node = try #require(HTMLParser.parse(#"<a HREF="/x?a=1&amp;b=2" class='c d' data-x=y checked title="say &quot;hi&quot;">t</a>"#).children.first)
        #expect(node.tag == "a")
        #expect(node.attributes == ["href": "/x?a=1&b=2", "class": "c d", "data-x": "y", "checked": "", "title": "say \"hi\""])
    }

    @Test func garbageNeverTraps() {
        var generator = SystemRandomNumberGenerator()
        let pieces = ["<", ">", "</", "<p", "<script>", "</script", "&", "&#x", ";", "\"", "'", "=", " ", "a", "<!--", "-->", "<li>", "</ul>", "<table>", "<td>"]
        for _ in 0..<300 {
            let html = (0..<50).map { _ in pieces[Int.random(in: 0..<pieces.count, using: &generator)] }.joined()
            _ = Reader.read(html: html, url: nil).text
        }
    }
}
