/// The judgement of an active-probing censor: it sends the same probe to a suspected
/// bridge and to a plain web server and blocks the bridge if the two react differently.
/// This is the comparison only, as pure code; `ActiveProbeCensor` plans the probes and
/// raha-censor's prober records the reactions.
///
/// The reaction features follow what probing studies used to tell proxies from servers:
/// whether anything came back and what it looked like, how the connection ended, and
/// roughly when (Frolov et al., "Detecting Probe-resistant Proxies", NDSS 2020; Alice et
/// al., "How China Detects and Blocks Shadowsocks", IMC 2020). The features are coarse on
/// purpose, because the bridge and the reference are different servers: exact byte counts
/// differ between any two web servers (certificates, Date headers, page sizes), so they
/// are compared only when a caller asks (`byteTolerance`); the kind of the first bytes
/// (a TLS record or alert, an HTTP status line, anything else) is compared always. Timing
/// is compared in buckets, because network jitter makes exact times meaningless while a
/// proxy that waits for more bytes before closing stands out by an order of magnitude.
public enum ProbeComparison {
    /// How a probed connection ended.
    public enum ClosedBy: Hashable, Sendable, CustomStringConvertible {
        /// The server closed it cleanly (FIN).
        case serverFIN
        /// The server reset it (RST), or refused the connection.
        case serverRST
        /// The server kept it open until the prober gave up.
        case proberTimeout

        public var description: String {
            switch self {
            case .serverFIN: "FIN"
            case .serverRST: "RST"
            case .proberTimeout: "prober timeout"
            }
        }
    }

    /// What the first bytes a server returned look like.
    public enum ResponseKind: Hashable, Sendable, CustomStringConvertible {
        /// No bytes at all.
        case nothing
        /// A TLS alert record (content type 21) and its description code.
        case tlsAlert(UInt8)
        /// Any other TLS record (20 change_cipher_spec, 22 handshake, 23 application data, 24 heartbeat).
        case tlsRecord(UInt8)
        /// An HTTP/1.x status line and its code.
        case http(Int)
        /// Anything else.
        case other

        /// Classifies the first bytes of a response (a few are enough: 7 for an alert, 12 for a status line).
        public init(firstBytes: [UInt8]) {
            guard let first = firstBytes.first else { self = .nothing; return }
            if (20...24).contains(first), firstBytes.count >= 3, firstBytes[1] == 3 {
                self = first == 21 && firstBytes.count >= 7 ? .tlsAlert(firstBytes[6]) : .tlsRecord(first)
                return
            }
            let http = Array("HTTP/1.".utf8)
            if firstBytes.count >= 12, firstBytes.starts(with: http), firstBytes[8] == 0x20,
               case let digits = firstBytes[9..<12], digits.allSatisfy({ (0x30...0x39).contains($0) }) {
                self = .http(digits.reduce(0) { $0 * 10 + Int($1 - 0x30) })
                return
            }
            self = .other
        }

        public var description: String {
            switch self {
            case .nothing: "nothing"
            case .tlsAlert(let code): "a TLS alert (\(code))"
            case .tlsRecord(let type): "a TLS record (type \(type))"
            case .http(let status): "HTTP/1.x \(status)"
            case .other: "other bytes"
            }
        }
    }

    /// What one probe observed.
    public struct Reaction: Hashable, Sendable, CustomStringConvertible {
        /// How many bytes to keep of a response: enough for `ResponseKind`.
        public static let firstBytesKept = 16

        public var bytesReturned: Int
        /// The first bytes returned, at most `firstBytesKept`.
        public var firstBytes: [UInt8]
        public var closedBy: ClosedBy
        /// From sending the probe to the connection's end (or the prober's timeout).
        public var elapsed: Duration

        /// When `firstBytes` is not given, a non-empty response counts as `other`.
        public init(bytesReturned: Int, firstBytes: [UInt8] = [], closedBy: ClosedBy, elapsed: Duration) {
            self.bytesReturned = bytesReturned
            self.firstBytes = Array(firstBytes.prefix(Self.firstBytesKept))
            self.closedBy = closedBy
            self.elapsed = elapsed
        }

        public var response: ResponseKind {
            bytesReturned == 0 ? .nothing : firstBytes.isEmpty ? .other : ResponseKind(firstBytes: firstBytes)
        }

        /// E.g. "345 bytes, HTTP/1.x 400, FIN after 12 ms".
        public var description: String {
            "\(bytesReturned) bytes, \(response), \(closedBy) after \(milliseconds(elapsed)) ms"
        }
    }

    public enum Difference: Hashable, Sendable, CustomStringConvertible {
        case bytesReturned(bridge: Int, reference: Int)
        case response(bridge: ResponseKind, reference: ResponseKind)
        case closedBy(bridge: ClosedBy, reference: ClosedBy)
        case timing(bridgeBucket: Int, referenceBucket: Int)

        /// The bridge's side first, e.g. "returned nothing, not HTTP/1.x 400".
        public var description: String {
            switch self {
            case let .bytesReturned(b, r): "returned \(b) bytes, not \(r)"
            case let .response(b, r): "returned \(b), not \(r)"
            case let .closedBy(b, r): "ended by \(b), not \(r)"
            case let .timing(b, r): "ended \(ProbeComparison.bucketLabels[b]), not \(ProbeComparison.bucketLabels[r])"
            }
        }
    }

    /// Upper bounds of the timing buckets: under 100 ms, 1 s, 10 s, 60 s, then longer.
    public static let bucketBounds: [Duration] = [.milliseconds(100), .seconds(1), .seconds(10), .seconds(60)]
    static let bucketLabels = ["within 100 ms", "within 0.1-1 s", "within 1-10 s", "within 10-60 s", "after 60 s or more"]

    /// The bucket index of an elapsed time, 0 ... `bucketBounds.count`.
    public static func timingBucket(_ elapsed: Duration) -> Int {
        bucketBounds.firstIndex { elapsed < $0 } ?? bucketBounds.count
    }

    /// Every way the bridge's reaction differs from the reference server's; empty when the
    /// censor would see them as the same. Byte counts are compared only when a
    /// `byteTolerance` is given (e.g. two copies of one server, whose Date headers may
    /// differ in length); across different servers leave it nil.
    public static func differences(bridge: Reaction, reference: Reaction, byteTolerance: Int? = nil) -> [Difference] {
        var out: [Difference] = []
        if let byteTolerance, abs(bridge.bytesReturned - reference.bytesReturned) > byteTolerance {
            out.append(.bytesReturned(bridge: bridge.bytesReturned, reference: reference.bytesReturned))
        }
        if bridge.response != reference.response {
            out.append(.response(bridge: bridge.response, reference: reference.response))
        }
        if bridge.closedBy != reference.closedBy {
            out.append(.closedBy(bridge: bridge.closedBy, reference: reference.closedBy))
        }
        let (b, r) = (timingBucket(bridge.elapsed), timingBucket(reference.elapsed))
        if b != r { out.append(.timing(bridgeBucket: b, referenceBucket: r)) }
        return out
    }

    /// True when the censor cannot tell the bridge from the reference server with this probe.
    public static func isSame(bridge: Reaction, reference: Reaction, byteTolerance: Int? = nil) -> Bool {
        differences(bridge: bridge, reference: reference, byteTolerance: byteTolerance).isEmpty
    }

    static func milliseconds(_ d: Duration) -> Int64 {
        d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
    }
}
