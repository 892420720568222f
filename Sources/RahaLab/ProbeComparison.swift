/// The judgement of an active-probing censor: it sends the same probe to a suspected
/// bridge and to a plain web server and blocks the bridge if the two react differently.
/// This is the comparison only, as pure code; the prober that records the reactions is
/// the lab's job (issue 4, profile `active-probe`).
///
/// The reaction features follow what probing studies used to tell proxies from servers:
/// how many bytes came back, how the connection ended, and roughly when (Frolov et al.,
/// "Detecting Probe-resistant Proxies", NDSS 2020; Alice et al., "How China Detects and
/// Blocks Shadowsocks", IMC 2020). Timing is compared in coarse buckets, because network
/// jitter makes exact times meaningless while a proxy that waits for more bytes before
/// closing stands out by an order of magnitude.
public enum ProbeComparison {
    /// How a probed connection ended.
    public enum ClosedBy: Hashable, Sendable {
        /// The server closed it cleanly (FIN).
        case serverFIN
        /// The server reset it (RST).
        case serverRST
        /// The server kept it open until the prober gave up.
        case proberTimeout
    }

    /// What one probe observed.
    public struct Reaction: Hashable, Sendable {
        public var bytesReturned: Int
        public var closedBy: ClosedBy
        /// From sending the probe to the connection's end (or the prober's timeout).
        public var elapsed: Duration

        public init(bytesReturned: Int, closedBy: ClosedBy, elapsed: Duration) {
            self.bytesReturned = bytesReturned
            self.closedBy = closedBy
            self.elapsed = elapsed
        }
    }

    public enum Difference: Hashable, Sendable {
        case bytesReturned(bridge: Int, reference: Int)
        case closedBy(bridge: ClosedBy, reference: ClosedBy)
        case timing(bridgeBucket: Int, referenceBucket: Int)
    }

    /// Upper bounds of the timing buckets: under 100 ms, 1 s, 10 s, 60 s, then longer.
    public static let bucketBounds: [Duration] = [.milliseconds(100), .seconds(1), .seconds(10), .seconds(60)]

    /// The bucket index of an elapsed time, 0 ... `bucketBounds.count`.
    public static func timingBucket(_ elapsed: Duration) -> Int {
        bucketBounds.firstIndex { elapsed < $0 } ?? bucketBounds.count
    }

    /// Every way the bridge's reaction differs from the reference server's; empty when the
    /// censor would see them as the same. Byte counts may differ by `byteTolerance`
    /// (e.g. a Date header of another length).
    public static func differences(bridge: Reaction, reference: Reaction, byteTolerance: Int = 0) -> [Difference] {
        var out: [Difference] = []
        let sameEmptiness = (bridge.bytesReturned == 0) == (reference.bytesReturned == 0)
        if !sameEmptiness || abs(bridge.bytesReturned - reference.bytesReturned) > byteTolerance {
            out.append(.bytesReturned(bridge: bridge.bytesReturned, reference: reference.bytesReturned))
        }
        if bridge.closedBy != reference.closedBy {
            out.append(.closedBy(bridge: bridge.closedBy, reference: reference.closedBy))
        }
        let (b, r) = (timingBucket(bridge.elapsed), timingBucket(reference.elapsed))
        if b != r { out.append(.timing(bridgeBucket: b, referenceBucket: r)) }
        return out
    }

    /// True when the censor cannot tell the bridge from the reference server with this probe.
    public static func isSame(bridge: Reaction, reference: Reaction, byteTolerance: Int = 0) -> Bool {
        differences(bridge: bridge, reference: reference, byteTolerance: byteTolerance).isEmpty
    }
}
