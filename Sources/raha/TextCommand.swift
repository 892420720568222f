import ArgumentParser
import Foundation
import RahaText
import RahaWire

/// `raha text FILE_OR_URL`: the text-only browser's rendering of one page, directly.
struct TextCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "text",
        abstract: "Print a web page as compact readable text with numbered links.",
        discussion: """
        The same rendering the text-only browser sends over slow channels: the
        page's article (navigation, footers, share buttons, cookie banners and
        related lists dropped, as a reader mode does; the whole page's text when
        there is no clear article), headings, lists and tables in a simple form,
        and every link numbered.
          raha text page.html
          raha text https://example.org/news/story --base https://example.org/
        """
    )

    @Argument(help: "A local HTML file, or an http:// or https:// URL fetched directly.")
    var source: String

    @Option(help: "The page's address, for resolving relative links of a local file.")
    var base: String?

    @Flag(help: "Print the whole page's text, not just its article.")
    var whole = false

    func run() async throws {
        let bytes: [UInt8]
        var contentType: String?
        var url: URL?
        if source.hasPrefix("http://") || source.hasPrefix("https://") {
            guard let parsed = URL(string: source) else { throw UsageFailure("\(source) is not a URL") }
            do { (bytes, contentType) = try await fetchPage(parsed, limit: 8 << 20) } catch { throw UsageFailure("\(error)") }
            url = parsed
        } else {
            guard let data = FileManager.default.contents(atPath: source) else {
                throw UsageFailure("cannot read \(source): give a readable HTML file or an http(s):// URL")
            }
            bytes = Array(data)
            url = URL(fileURLWithPath: source)
        }
        if let base {
            guard let parsed = URL(string: base), parsed.scheme != nil else { throw UsageFailure("--base \(base) is not an absolute URL") }
            url = parsed
        }
        let html = Charset.decode(bytes, contentType: contentType)
        let page = whole ? Reader.wholePage(html: html, url: url) : Reader.read(html: html, url: url)
        print(page.text, terminator: "")
    }
}
