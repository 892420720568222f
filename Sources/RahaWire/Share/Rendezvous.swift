import Foundation

/// How a share node behind carrier-grade NAT is reached: it dials out to a
/// rendezvous bridge (an ordinary Trojan connection with a reserved
/// destination naming a public port), and the rendezvous opens that port
/// and carries each invitee connection arriving there to the share node as
/// a stream over the same connection. The streams are the invitees' own
/// Shadowsocks or TLS bytes: the rendezvous sees only ciphertext.
public enum Rendezvous {
    static let host = "rendezvous.raha.invalid"

    /// The destination a share node asks for to be reached on `port`.
    public static func destination(port: UInt16) -> Endpoint { Endpoint(host: .domain(host), port: port) }

    /// The public port a destination asks for, if it is a rendezvous request.
    public static func port(of destination: Endpoint) -> UInt16? {
        guard case .domain(let name) = destination.host, name == host else { return nil }
        return destination.port
    }

    /// Ports as a rendezvous operator gives them: `8388,8443` or `20000-30000` or both.
    public static func parsePorts(_ text: String) throws -> [ClosedRange<UInt16>] {
        let ranges = try text.split(separator: ",").map { part -> ClosedRange<UInt16> in
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false).map { UInt16($0.trimmingCharacters(in: .whitespaces)) }
            switch bounds.count {
            case 1: if let port = bounds[0], port > 0 { return port...port }
            case 2: if let low = bounds[0], let high = bounds[1], low > 0, low <= high { return low...high }
            default: break
            }
            throw WireError.badKey("“\(part)” is not a port or a range of ports: give e.g. 8388,8443 or 20000-30000")
        }
        guard !ranges.isEmpty else { throw WireError.badKey("give the public ports share nodes may ask for, e.g. 8388,8443 or 20000-30000") }
        return ranges
    }
}
