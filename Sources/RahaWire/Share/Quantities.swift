import Foundation

/// Rates and amounts as people type them on a command line.
///
/// Rates are bits per second, as links are sold: `2M` or `2Mbit` is
/// 2,000,000 bit/s; amounts are bytes: `10G` or `10GB` is 10,000,000,000
/// bytes. Suffixes are decimal (k, M, G, T) and case-insensitive, and a
/// fraction is allowed (`1.5M`). Both are kept as bytes (per second).
public enum Quantity {
    /// Bytes per second from a rate in bits per second (`2M`, `500kbit`, `10Mbps`).
    public static func parseRate(_ text: String) throws -> Int64 {
        let bits = try parse(text, units: ["bit/s", "bps", "bit", "b"], what: "a rate",
                             example: "2M (2 Mbit/s) or 500k (500 kbit/s)")
        let bytes = bits / 8
        guard bytes >= 1_000 else { throw WireError.badKey("the rate “\(text)” is under 8 kbit/s, too slow to load anything: give at least 8k") }
        return bytes
    }

    /// Bytes from an amount (`10G`, `500MB`).
    public static func parseAmount(_ text: String) throws -> Int64 {
        let bytes = try parse(text, units: ["bytes", "byte", "b"], what: "an amount",
                              example: "10G (10 GB) or 500M (500 MB)")
        guard bytes >= 1_000_000 else { throw WireError.badKey("the amount “\(text)” is under 1 MB, too little for one web page: give at least 1M") }
        return bytes
    }

    private static func parse(_ text: String, units: [String], what: String, example: String) throws -> Int64 {
        var rest = text.trimmingCharacters(in: .whitespaces).lowercased()
        for unit in units where rest.hasSuffix(unit) {
            rest.removeLast(unit.count)
            break
        }
        var multiplier: Double = 1
        if let last = rest.last, let power = ["k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12][last] {
            multiplier = power
            rest.removeLast()
        }
        guard let number = Double(rest.trimmingCharacters(in: .whitespaces)), number.isFinite, number > 0,
              number * multiplier < 9e18 else {
            throw WireError.badKey("“\(text)” is not \(what): give a number with an optional k, M, G or T, e.g. \(example)")
        }
        return Int64(number * multiplier)
    }

    /// `2 Mbit/s`, `512 kbit/s` for a rate in bytes per second.
    public static func formatRate(_ bytesPerSecond: Int64) -> String {
        decimal(Double(bytesPerSecond) * 8, unit: "bit/s")
    }

    /// `1.2 GB`, `340 kB`, `12 B` for an amount in bytes.
    public static func formatAmount(_ bytes: Int64) -> String {
        bytes < 1000 ? "\(bytes) B" : decimal(Double(bytes), unit: "B")
    }

    private static func decimal(_ value: Double, unit: String) -> String {
        for (power, prefix) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] where value >= power {
            let scaled = value / power
            let digits = scaled < 10 ? (scaled * 10).rounded() / 10 : scaled.rounded()
            let text = digits == digits.rounded() ? String(Int64(digits)) : String(digits)
            return "\(text) \(prefix)\(unit)"
        }
        return "\(Int64(value)) \(unit)"
    }
}
