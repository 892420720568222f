import Foundation
import NIOCore

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
    public static func port(of destination: Endpoint) -> UInt16? { reservedPort(of: destination, host: host) }

    /// The port of a destination naming the reserved `host`, else nil.
    static func reservedPort(of destination: Endpoint, host: String) -> UInt16? {
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

/// Datagrams between a rendezvous and a share node: one stream over the
/// link per public port carries every invitee's Shadowsocks UDP packets,
/// each framed with a tag that stands for the invitee's address (which the
/// share node never learns) and its length.
public enum RendezvousDatagram {
    static let host = "udp.rendezvous.raha.invalid"
    public static let headerLength = 6

    /// The destination of the stream that carries `port`'s datagrams.
    public static func destination(port: UInt16) -> Endpoint { Endpoint(host: .domain(host), port: port) }

    public static func port(of destination: Endpoint) -> UInt16? { Rendezvous.reservedPort(of: destination, host: host) }

    public static func write(tag: UInt32, payload: ByteBuffer, to buffer: inout ByteBuffer) {
        buffer.writeInteger(tag)
        buffer.writeInteger(UInt16(truncatingIfNeeded: payload.readableBytes))
        buffer.writeImmutableBuffer(payload)
    }

    /// The next whole frame in `buffer` (consumed), or nil until it has all arrived.
    public static func read(from buffer: inout ByteBuffer) -> (tag: UInt32, payload: ByteBuffer)? {
        guard let tag = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self),
              let length = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt16.self),
              buffer.readableBytes >= headerLength + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: headerLength)
        return (tag, buffer.readSlice(length: Int(length))!)
    }
}
