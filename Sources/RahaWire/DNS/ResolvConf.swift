/// The system's resolver configuration, resolv.conf(5), as far as Raha reads it.
public enum ResolvConf {
    public static let path = "/etc/resolv.conf"

    /// The `nameserver` addresses in resolv.conf text, in order.
    public static func nameservers(_ text: String) -> [String] {
        text.split(whereSeparator: \.isNewline).compactMap { line in
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            return fields.count >= 2 && fields[0] == "nameserver" ? String(fields[1]) : nil
        }
    }
}
