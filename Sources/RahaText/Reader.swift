import Foundation

/// A page as compact readable text: its title, the article (found the way
/// reader modes do, else the whole page's text), and its links numbered.
public struct ReadablePage: Hashable, Sendable {
    public var title: String
    /// Markdown-like lines: "# heading", paragraphs, "- item", "1. item",
    /// "a | b" table rows, "> quote"; links as "text[N]".
    public var body: String
    /// Link N is `links[N - 1]`, absolute.
    public var links: [String]
    /// Whether a main article was found (else `body` is the whole page's text).
    public var isArticle: Bool

    public init(title: String, body: String, links: [String], isArticle: Bool) {
        self.title = title
        self.body = body
        self.links = links
        self.isArticle = isArticle
    }

    /// The whole rendering: title, body, then the numbered links.
    public var text: String {
        var out = title.isEmpty ? "" : title + "\n\n"
        out += body
        if !links.isEmpty {
            out += "\n\nLinks:\n" + links.enumerated().map { "[\($0.offset + 1)] \($0.element)" }.joined(separator: "\n")
        }
        return out + "\n"
    }
}

/// Finds the main content of a page and renders it (Reader View's approach:
/// score blocks by their paragraphs' text, penalise links and furniture by
/// class and id, keep the best block and its strong siblings). Pure.
public enum Reader {
    static let unlikely = ["comment", "cookie", "consent", "banner", "combx", "community", "disqus", "extra", "foot", "header", "menu",
                           "remark", "rss", "share", "shoutbox", "sidebar", "sponsor", "advert", "promo", "related", "newsletter",
                           "subscribe", "social", "popup", "modal", "breadcrumb", "pagination", "pager", "widget", "outbrain", "taboola",
                           "recommend", "login", "signup", "skip", "toolbar", "masthead", "navbar", "nav-", "most-read", "trending",
                           "editsection", "jump-link", "catlinks", "navbox", "noprint"]
    static let maybe = ["and", "article", "body", "column", "main", "shadow", "content", "story", "entry", "post", "text"]
    static let negative = ["hidden", "banner", "combx", "comment", "com-", "contact", "foot", "footer", "footnote", "masthead", "media",
                           "meta", "outbrain", "promo", "related", "scroll", "share", "shoutbox", "sidebar", "skyscraper", "sponsor",
                           "shopping", "tags", "tool", "widget", "advert", "cookie", "social", "newsletter", "recommend", "nav", "menu"]
    static let positive = ["article", "body", "content", "entry", "hentry", "h-entry", "main", "page", "pagination", "post", "text", "blog", "story"]
    static let furnitureTags: Set<String> = ["nav", "footer", "aside", "form", "button", "dialog", "menu", "select", "label"]
    static let furnitureRoles: Set<String> = ["navigation", "banner", "contentinfo", "complementary", "dialog", "alertdialog", "search", "menu", "menubar"]

    /// The readable page of `html`, with links resolved against `url`.
    public static func read(html: String, url: URL?) -> ReadablePage {
        let page = Page(html: html, url: url)
        removeFurniture(in: page.body)
        var renderer = TextRenderer(base: page.base)
        guard let article = mainContent(of: page.body) else {
            renderer.render(page.body)
            return renderer.finish(title: page.title)
        }
        cleanConditionally(article)
        renderer.render(article)
        var readable = renderer.finish(title: page.title)
        readable.isArticle = true
        // The article's own first heading repeats the title: keep one.
        let title = page.title
        if readable.body.hasPrefix("# " + title + "\n") || readable.body == "# " + title {
            readable.body = String(readable.body.dropFirst(2 + title.count)).trimmingCharacters(in: .newlines)
        }
        return readable
    }

    /// Every visible text of the page (scripts, styles and hidden elements dropped), links numbered.
    public static func wholePage(html: String, url: URL?) -> ReadablePage {
        let page = Page(html: html, url: url)
        var renderer = TextRenderer(base: page.base)
        renderer.render(page.body)
        return renderer.finish(title: page.title)
    }

    /// A parsed page: its body (or the whole document), the base for links and the title.
    struct Page {
        let body: HTMLNode
        let base: URL?
        let title: String

        init(html: String, url: URL?) {
            let document = HTMLParser.parse(html)
            let all = document.descendants
            body = all.first { $0.tag == "body" } ?? document
            base = all.first { $0.tag == "base" }?.attributes["href"].flatMap { URL(string: $0, relativeTo: url) } ?? url
            title = Reader.pageTitle(all)
        }
    }

    static func pageTitle(_ nodes: [HTMLNode]) -> String {
        let ogTitle = nodes.first { $0.tag == "meta" && $0.attributes["property"] == "og:title" }?.attributes["content"]
        let headTitle = nodes.first { $0.tag == "title" }?.text
        let h1 = nodes.first { $0.tag == "h1" }?.text
        // A site title like "Headline | Site": the h1 or og:title is the headline alone.
        for candidate in [h1, ogTitle] {
            if let candidate, !candidate.isEmpty, let headTitle, headTitle.contains(candidate) { return candidate }
        }
        return collapsingWhitespace(headTitle ?? ogTitle ?? h1 ?? "")
    }

    // MARK: Cleaning

    static func matches(_ text: String, _ words: [String]) -> Bool {
        words.contains { text.contains($0) }
    }

    /// Drops navigation, footers, sidebars, banners and the like everywhere,
    /// and hidden elements, before any scoring.
    static func removeFurniture(in root: HTMLNode) {
        for node in root.descendants {
            guard let tag = node.tag, let parent = node.parent else { continue }
            let role = node.attributes["role"]?.lowercased() ?? ""
            let style = node.attributes["style"]?.lowercased().replacingOccurrences(of: " ", with: "") ?? ""
            let names = node.classAndID
            var drop = HTMLParser.hidden.contains(tag) || furnitureTags.contains(tag) || furnitureRoles.contains(role)
                || node.attributes["hidden"] != nil || node.attributes["aria-hidden"] == "true"
                || style.contains("display:none") || style.contains("visibility:hidden")
            if !drop, tag != "body", tag != "article", tag != "main", tag != "html",
               matches(names, unlikely), !matches(names, maybe) {
                drop = true
            }
            // A site header (logo, menu) but not an article's header (with its headline).
            if tag == "header", !node.descendants.contains(where: { $0.tag == "h1" }) { drop = true }
            if drop { parent.remove(node) }
        }
    }

    /// Inside the article: lists and blocks that are mostly links (related
    /// stories, tag clouds), and blocks with a negative name and little text.
    static func cleanConditionally(_ root: HTMLNode) {
        for node in root.descendants {
            guard let tag = node.tag, let parent = node.parent, ["ul", "ol", "div", "section", "table", "p", "dl"].contains(tag) else { continue }
            let text = node.text
            let density = linkDensity(node)
            let weight = classWeight(node)
            let paragraphs = node.descendants.filter { $0.tag == "p" }.count
            let drop = (density > 0.5 && text.count < 500 && tag != "p")
                || (weight < 0 && text.count < 300 && paragraphs < 2)
                || (tag == "p" && density > 0.8 && text.count < 120)
            if drop { parent.remove(node) }
        }
    }

    // MARK: Scoring

    static func classWeight(_ node: HTMLNode) -> Double {
        let names = node.classAndID
        guard !names.trimmingCharacters(in: .whitespaces).isEmpty else { return 0 }
        var weight = 0.0
        if matches(names, negative) { weight -= 25 }
        if matches(names, positive) { weight += 25 }
        return weight
    }

    static func linkDensity(_ node: HTMLNode) -> Double {
        let length = node.text.count
        guard length > 0 else { return 0 }
        let linked = node.descendants.filter { $0.tag == "a" }.reduce(0) { $0 + $1.text.count }
        return Double(linked) / Double(length)
    }

    /// The block that holds the article, with its strong siblings gathered
    /// under one node; nil when no block scores like an article.
    static func mainContent(of body: HTMLNode) -> HTMLNode? {
        var scores: [ObjectIdentifier: (node: HTMLNode, score: Double)] = [:]
        func initial(_ node: HTMLNode) -> Double {
            var score = classWeight(node)
            switch node.tag {
            case "article", "main": score += 10
            case "div", "section": score += 5
            case "pre", "td", "blockquote": score += 3
            case "ol", "ul", "dl", "dd", "dt", "li", "form": score -= 3
            case "h1", "h2", "h3", "h4", "h5", "h6", "th": score -= 5
            default: break
            }
            return score
        }
        for paragraph in body.descendants where ["p", "pre", "td"].contains(paragraph.tag ?? "") {
            let text = paragraph.text
            guard text.count >= 25 else { continue }
            let commas = text.filter { $0 == "," || $0 == "،" || $0 == "、" }.count
            let score = 1 + Double(commas) + min(Double(text.count) / 100, 3)
            var ancestor = paragraph.parent
            var level = 0
            while let node = ancestor, level < 3, node.tag != nil {
                let key = ObjectIdentifier(node)
                if scores[key] == nil { scores[key] = (node, initial(node)) }
                scores[key]!.score += score / (level == 0 ? 1 : level == 1 ? 2 : Double(level * 3))
                ancestor = node.parent
                level += 1
            }
        }
        let ranked = scores.values.map { ($0.node, $0.score * (1 - linkDensity($0.node))) }.sorted { $0.1 > $1.1 }
        guard let (top, topScore) = ranked.first, topScore >= 20 else { return nil }
        // Siblings that score well, or are long paragraphs with few links, belong too.
        guard let parent = top.parent, parent.tag != nil else { return top }
        let threshold = max(10, topScore * 0.2)
        let container = HTMLNode(.element("div"))
        for sibling in parent.children {
            let score = scores[ObjectIdentifier(sibling)].map { $0.score * (1 - linkDensity(sibling)) } ?? 0
            let keep = sibling === top || score >= threshold
                || (sibling.tag == "p" && sibling.text.count > 80 && linkDensity(sibling) < 0.25)
            if keep { container.append(sibling) }
        }
        return container
    }
}

/// Writes the text lines and numbers the links.
struct TextRenderer {
    let base: URL?
    private var lines: [String] = []
    private var current = ""
    private var links: [String] = []
    private var linkNumbers: [String: Int] = [:]
    private var listStack: [(ordered: Bool, counter: Int)] = []
    private var quoteDepth = 0
    private var preformatted = false

    init(base: URL?) {
        self.base = base
    }

    mutating func render(_ node: HTMLNode) {
        switch node.kind {
        case .document:
            for child in node.children { render(child) }
        case .text(let text):
            if preformatted {
                current += text
            } else {
                var collapsed = collapsingWhitespace(text)
                if let first = text.unicodeScalars.first, first.properties.isWhitespace, !current.isEmpty, !current.hasSuffix(" ") { collapsed = " " + collapsed }
                if let last = text.unicodeScalars.last, last.properties.isWhitespace, !collapsed.isEmpty { collapsed += " " }
                current += collapsed
            }
        case .element(let tag):
            element(tag, node)
        }
    }

    private mutating func element(_ tag: String, _ node: HTMLNode) {
        switch tag {
        case _ where HTMLParser.hidden.contains(tag):
            return
        case "h1", "h2", "h3", "h4", "h5", "h6":
            block()
            let level = Int(String(tag.last!))!
            renderChildren(node)
            let text = current.trimmingCharacters(in: .whitespaces)
            current = ""
            if !text.isEmpty { emit(String(repeating: "#", count: level) + " " + text) }
            blank()
        case "p", "div", "section", "article", "main", "figure", "figcaption", "address", "details", "summary", "dl", "caption":
            block()
            renderChildren(node)
            block()
            if tag == "p" { blank() }
        case "dt", "dd":
            block()
            renderChildren(node)
            block()
        case "br":
            flushLine(keepEmpty: true)
        case "hr":
            block()
            emit("---")
        case "ul", "ol":
            block()
            listStack.append((tag == "ol", Int(node.attributes["start"] ?? "") ?? 1))
            renderChildren(node)
            listStack.removeLast()
            block()
            if listStack.isEmpty { blank() }
        case "li":
            block()
            let indent = String(repeating: "  ", count: max(0, listStack.count - 1))
            var marker = "- "
            if let last = listStack.last, last.ordered {
                marker = "\(last.counter). "
                listStack[listStack.count - 1].counter += 1
            }
            current = indent + marker
            renderChildren(node)
            block()
        case "table":
            block()
            renderChildren(node)
            block()
            blank()
        case "tr":
            block()
            let cells = node.children.filter { $0.tag == "td" || $0.tag == "th" }
            var texts: [String] = []
            for cell in cells {
                var inner = TextRenderer(base: base)
                inner.links = links
                inner.linkNumbers = linkNumbers
                inner.renderChildren(cell)
                inner.block()
                links = inner.links
                linkNumbers = inner.linkNumbers
                texts.append(inner.lines.joined(separator: " ").trimmingCharacters(in: .whitespaces))
            }
            if texts.contains(where: { !$0.isEmpty }) { emit(texts.joined(separator: " | ")) }
        case "blockquote":
            block()
            quoteDepth += 1
            renderChildren(node)
            block()
            quoteDepth -= 1
            blank()
        case "pre":
            block()
            preformatted = true
            renderChildren(node)
            preformatted = false
            for line in current.split(separator: "\n", omittingEmptySubsequences: false) { emit(String(line)) }
            current = ""
            blank()
        case "a":
            renderChildren(node)
            if let number = linkNumber(node.attributes["href"]), !node.text.isEmpty {
                current += "[\(number)]"
            }
        case "img":
            if let alt = node.attributes["alt"].map(collapsingWhitespace), !alt.isEmpty, current.isEmpty || current.hasSuffix(" ") {
                current += "[" + alt + "] "
            }
        default:
            renderChildren(node)
        }
    }

    private mutating func renderChildren(_ node: HTMLNode) {
        for child in node.children { render(child) }
    }

    /// The link's number, nil for links that lead nowhere useful.
    private mutating func linkNumber(_ href: String?) -> Int? {
        guard let href = href?.trimmingCharacters(in: .whitespacesAndNewlines), !href.isEmpty, !href.hasPrefix("#"),
              !href.lowercased().hasPrefix("javascript:") else { return nil }
        let absolute = URL(string: href, relativeTo: base)?.absoluteString ?? href
        if let number = linkNumbers[absolute] { return number }
        links.append(absolute)
        linkNumbers[absolute] = links.count
        return links.count
    }

    private mutating func block() {
        flushLine(keepEmpty: false)
    }

    private mutating func flushLine(keepEmpty: Bool) {
        let line = current.trimmingCharacters(in: .whitespaces)
        current = ""
        let isMarkerOnly = line == "-" || (line.hasSuffix(".") && Int(line.dropLast()) != nil)
        if !line.isEmpty && !isMarkerOnly {
            emit(line)
        } else if keepEmpty {
            emit("")
        }
    }

    private mutating func emit(_ line: String) {
        lines.append(String(repeating: "> ", count: quoteDepth) + line)
    }

    private mutating func blank() {
        if let last = lines.last, !last.isEmpty { lines.append("") }
    }

    mutating func finish(title: String) -> ReadablePage {
        block()
        var out: [String] = []
        for line in lines where !(line.isEmpty && (out.last?.isEmpty ?? true)) { out.append(line) }
        while out.last?.isEmpty == true { out.removeLast() }
        return ReadablePage(title: title, body: out.joined(separator: "\n"), links: links, isArticle: false)
    }
}
