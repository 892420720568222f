/// A forgiving HTML parser: enough of the HTML5 rules to get the structure
/// of real pages right (void elements, raw text in script and style,
/// implied ends of p, li, td and the like, stray end tags ignored,
/// character references), without pretending to be a browser. Pure.
public final class HTMLNode {
    public enum Kind: Equatable {
        case document
        case element(String)
        case text(String)
    }

    public let kind: Kind
    public private(set) var attributes: [String: String]
    public private(set) var children: [HTMLNode] = []
    public private(set) weak var parent: HTMLNode?

    init(_ kind: Kind, attributes: [String: String] = [:]) {
        self.kind = kind
        self.attributes = attributes
    }

    /// The tag name, lowercased; nil for text and the document.
    public var tag: String? {
        if case .element(let name) = kind { return name }
        return nil
    }

    func append(_ child: HTMLNode) {
        child.parent = self
        children.append(child)
    }

    func remove(_ child: HTMLNode) {
        children.removeAll { $0 === child }
        child.parent = nil
    }

    /// Every descendant, depth first.
    public var descendants: [HTMLNode] {
        children.flatMap { [$0] + $0.descendants }
    }

    /// All the text below, with whitespace runs collapsed to one space.
    public var text: String {
        var out = ""
        collectText(into: &out)
        return collapsingWhitespace(out)
    }

    private func collectText(into out: inout String) {
        switch kind {
        case .text(let text): out += text
        case .element(let name) where HTMLParser.hidden.contains(name): return
        default:
            for child in children { child.collectText(into: &out) }
            if let tag, HTMLParser.blocks.contains(tag) || tag == "br" { out += " " }
        }
    }

    /// The class and id, lowercased, for scoring.
    var classAndID: String {
        ((attributes["class"] ?? "") + " " + (attributes["id"] ?? "")).lowercased()
    }
}

public enum HTMLParser {
    static let void: Set<String> = ["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr", "param"]
    static let rawText: Set<String> = ["script", "style", "textarea", "title", "noscript", "template", "iframe", "noembed", "noframes", "xmp"]
    /// Elements whose content is never shown as text.
    static let hidden: Set<String> = ["script", "style", "noscript", "template", "head", "svg", "math", "iframe", "object", "embed", "canvas", "select", "button", "input", "textarea"]
    static let blocks: Set<String> = ["p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "h1", "h2", "h3", "h4", "h5", "h6",
                                      "ul", "ol", "li", "dl", "dt", "dd", "table", "tr", "td", "th", "thead", "tbody", "tfoot", "caption", "blockquote",
                                      "pre", "figure", "figcaption", "form", "fieldset", "address", "hr", "body", "html", "details", "summary"]
    /// An open element of the key closes when one of these starts.
    static let closedBy: [String: Set<String>] = {
        let paragraphEnders: Set<String> = ["p", "div", "ul", "ol", "dl", "table", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote",
                                            "section", "article", "aside", "header", "footer", "nav", "form", "hr", "figure", "main", "address", "details"]
        return ["p": paragraphEnders, "li": ["li"], "dt": ["dt", "dd"], "dd": ["dt", "dd"], "tr": ["tr", "tbody", "thead", "tfoot"],
                "td": ["td", "th", "tr", "tbody", "thead", "tfoot"], "th": ["td", "th", "tr", "tbody", "thead", "tfoot"],
                "thead": ["tbody", "tfoot"], "tbody": ["tbody", "tfoot"], "option": ["option", "optgroup"]]
    }()
    /// Elements an implied close does not reach past.
    static let scopes: Set<String> = ["table", "ul", "ol", "dl", "td", "th", "html", "body", "div", "article", "section", "blockquote", "li"]

    /// Parses a whole page. Never fails: whatever the bytes, a tree.
    public static func parse(_ html: String) -> HTMLNode {
        let document = HTMLNode(.document)
        var stack: [HTMLNode] = [document]
        var scanner = Scanner(Array(html.unicodeScalars))
        var text = ""

        func flushText() {
            guard !text.isEmpty else { return }
            stack.last!.append(HTMLNode(.text(decodeEntities(text))))
            text = ""
        }

        while let scalar = scanner.peek() {
            guard scalar == "<" else {
                text.unicodeScalars.append(scalar)
                scanner.advance()
                continue
            }
            if scanner.starts(with: "<!--") {
                flushText()
                scanner.skip(past: "-->")
                continue
            }
            if scanner.starts(with: "<!") || scanner.starts(with: "<?") {
                flushText()
                scanner.skip(past: ">")
                continue
            }
            guard let tag = scanner.readTag() else {
                text += "<"
                scanner.advance()
                continue
            }
            flushText()
            if tag.isEnd {
                // Close the nearest open element of that name, if any, and all above it.
                if let index = stack.lastIndex(where: { $0.tag == tag.name }), index > 0 {
                    stack.removeSubrange(index...)
                } else if tag.name == "br" {
                    stack.last!.append(HTMLNode(.element("br")))
                }
                continue
            }
            // Implied ends: a new <p> closes an open <p>, a new <li> an open <li>, …
            while let open = stack.last?.tag, let enders = closedBy[open], enders.contains(tag.name) {
                stack.removeLast()
            }
            if tag.name == "li" || tag.name == "dt" || tag.name == "dd" || tag.name == "td" || tag.name == "th" || tag.name == "tr" {
                // Close up to the list or table it belongs to, if one of its kind is open inside that scope.
                if let index = stack.lastIndex(where: { $0.tag == tag.name }),
                   !stack[(index + 1)...].contains(where: { scopes.contains($0.tag ?? "") }) {
                    stack.removeSubrange(index...)
                }
            }
            let node = HTMLNode(.element(tag.name), attributes: tag.attributes)
            stack.last!.append(node)
            if rawText.contains(tag.name) && !tag.selfClosing {
                let content = scanner.readRawText(until: tag.name)
                if tag.name == "title" || tag.name == "textarea" {
                    node.append(HTMLNode(.text(decodeEntities(content))))
                }
                continue
            }
            if !void.contains(tag.name) && !tag.selfClosing {
                stack.append(node)
            }
        }
        flushText()
        return document
    }

    // MARK: Character references

    static let named: [String: String] = [
        "amp": "&", "lt": "<", "gt": ">", "quot": "\"", "apos": "'", "nbsp": "\u{00A0}", "shy": "", "copy": "©", "reg": "®",
        "trade": "™", "hellip": "…", "mdash": "—", "ndash": "–", "lsquo": "‘", "rsquo": "’", "ldquo": "“", "rdquo": "”",
        "laquo": "«", "raquo": "»", "bull": "•", "middot": "·", "deg": "°", "times": "×", "divide": "÷", "euro": "€",
        "pound": "£", "yen": "¥", "cent": "¢", "sect": "§", "para": "¶", "zwnj": "\u{200C}", "zwj": "\u{200D}",
        "rlm": "\u{200F}", "lrm": "\u{200E}", "thinsp": "\u{2009}", "ensp": "\u{2002}", "emsp": "\u{2003}", "larr": "←",
        "rarr": "→", "uarr": "↑", "darr": "↓", "frac12": "½", "frac14": "¼", "frac34": "¾", "plusmn": "±", "micro": "µ",
        "iexcl": "¡", "iquest": "¿", "eacute": "é", "egrave": "è", "aacute": "á", "agrave": "à", "ouml": "ö", "uuml": "ü",
        "auml": "ä", "szlig": "ß", "ccedil": "ç", "ntilde": "ñ", "oacute": "ó", "iacute": "í", "uacute": "ú",
    ]

    /// Replaces &name; &#NN; and &#xHH; (unknown names stay as written).
    public static func decodeEntities(_ text: String) -> String {
        guard text.contains("&") else { return text }
        var out = ""
        var index = text.startIndex
        while index < text.endIndex {
            let character = text[index]
            guard character == "&", let semicolon = text[index...].prefix(12).firstIndex(of: ";") else {
                out.append(character)
                index = text.index(after: index)
                continue
            }
            let name = text[text.index(after: index)..<semicolon]
            var replacement: String?
            if name.hasPrefix("#x") || name.hasPrefix("#X"), let value = UInt32(name.dropFirst(2), radix: 16) {
                replacement = Self.scalar(value)
            } else if name.hasPrefix("#"), let value = UInt32(name.dropFirst()) {
                replacement = Self.scalar(value)
            } else if let known = named[String(name)] {
                replacement = known
            }
            if let replacement {
                out += replacement
                index = text.index(after: semicolon)
            } else {
                out.append(character)
                index = text.index(after: index)
            }
        }
        return out
    }

    private static func scalar(_ value: UInt32) -> String {
        guard value != 0, let scalar = Unicode.Scalar(value) else { return "\u{FFFD}" }
        return String(Character(scalar))
    }
}

/// Reads tags and raw text out of the page's scalars.
struct Scanner {
    struct Tag {
        var name: String
        var attributes: [String: String]
        var isEnd: Bool
        var selfClosing: Bool
    }

    private let scalars: [Unicode.Scalar]
    private var index = 0

    init(_ scalars: [Unicode.Scalar]) {
        self.scalars = scalars
    }

    func peek() -> Unicode.Scalar? {
        index < scalars.count ? scalars[index] : nil
    }

    mutating func advance() {
        index += 1
    }

    func starts(with text: String) -> Bool {
        let wanted = Array(text.unicodeScalars)
        guard index + wanted.count <= scalars.count else { return false }
        for (offset, scalar) in wanted.enumerated() where scalars[index + offset] != scalar { return false }
        return true
    }

    /// Moves past the next `marker` (or to the end).
    mutating func skip(past marker: String) {
        while index < scalars.count {
            if starts(with: marker) {
                index += marker.unicodeScalars.count
                return
            }
            index += 1
        }
    }

    /// The tag at `index` ("<" then a letter, or "</" then a letter), or nil (then "<" is text).
    mutating func readTag() -> Tag? {
        var position = index + 1
        var isEnd = false
        if position < scalars.count, scalars[position] == "/" {
            isEnd = true
            position += 1
        }
        guard position < scalars.count, scalars[position].properties.isAlphabetic else { return nil }
        var name = ""
        while position < scalars.count, !Self.isSpace(scalars[position]), scalars[position] != ">", scalars[position] != "/" {
            name.unicodeScalars.append(scalars[position])
            position += 1
        }
        var attributes: [String: String] = [:]
        var selfClosing = false
        while position < scalars.count {
            let scalar = scalars[position]
            if scalar == ">" {
                position += 1
                break
            }
            if Self.isSpace(scalar) {
                position += 1
                continue
            }
            if scalar == "/" {
                selfClosing = position + 1 < scalars.count && scalars[position + 1] == ">"
                position += 1
                continue
            }
            var key = ""
            while position < scalars.count, !Self.isSpace(scalars[position]), scalars[position] != "=", scalars[position] != ">",
                  !(scalars[position] == "/" && position + 1 < scalars.count && scalars[position + 1] == ">") {
                key.unicodeScalars.append(scalars[position])
                position += 1
            }
            while position < scalars.count, Self.isSpace(scalars[position]) { position += 1 }
            var value = ""
            if position < scalars.count, scalars[position] == "=" {
                position += 1
                while position < scalars.count, Self.isSpace(scalars[position]) { position += 1 }
                if position < scalars.count, scalars[position] == "\"" || scalars[position] == "'" {
                    let quote = scalars[position]
                    position += 1
                    while position < scalars.count, scalars[position] != quote {
                        value.unicodeScalars.append(scalars[position])
                        position += 1
                    }
                    position += 1
                } else {
                    while position < scalars.count, !Self.isSpace(scalars[position]), scalars[position] != ">" {
                        value.unicodeScalars.append(scalars[position])
                        position += 1
                    }
                }
            }
            let lowered = key.lowercased()
            if !lowered.isEmpty, attributes[lowered] == nil { attributes[lowered] = HTMLParser.decodeEntities(value) }
        }
        index = position
        return Tag(name: name.lowercased(), attributes: attributes, isEnd: isEnd, selfClosing: selfClosing)
    }

    /// The text up to `</name` (case-insensitive), consuming the end tag.
    mutating func readRawText(until name: String) -> String {
        var out = ""
        let end = Array("</\(name)".unicodeScalars)
        while index < scalars.count {
            if index + end.count <= scalars.count,
               (0..<end.count).allSatisfy({ String(scalars[index + $0]).lowercased() == String(end[$0]) }) {
                skip(past: ">")
                return out
            }
            out.unicodeScalars.append(scalars[index])
            index += 1
        }
        return out
    }

    static func isSpace(_ scalar: Unicode.Scalar) -> Bool {
        scalar == " " || scalar == "\t" || scalar == "\n" || scalar == "\r" || scalar == "\u{0C}"
    }
}

/// Whitespace runs (including no-break spaces) as one space, trimmed.
func collapsingWhitespace(_ text: String) -> String {
    var out = ""
    out.reserveCapacity(text.utf8.count)
    var pendingSpace = false
    for scalar in text.unicodeScalars {
        if scalar.properties.isWhitespace {
            pendingSpace = !out.isEmpty
        } else {
            if pendingSpace { out += " " }
            pendingSpace = false
            out.unicodeScalars.append(scalar)
        }
    }
    return out
}
