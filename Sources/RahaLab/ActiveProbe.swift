/// `active-probe`: a censor that probes the servers its clients talk to, after the Great
/// Firewall's probing of Shadowsocks servers (Alice et al., "How China Detects and
/// Blocks Shadowsocks", IMC 2020), and blocks those that react unlike a web server.

/// One probe: the bytes a prober sends on a fresh TCP connection, and then waits.
public struct Probe: Hashable, Sendable {
    public enum Kind: Hashable, Sendable, CustomStringConvertible {
        /// The recorded first payload, unchanged.
        case replay
        /// The recorded first payload with the bytes at these offsets changed.
        case replayChanged([ClosedRange<Int>])
        /// Random bytes of this length.
        case random(Int)

        public var description: String {
            switch self {
            case .replay: return "identical replay"
            case .replayChanged(let ranges):
                let list = ranges.map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
                return "replay with byte\(ranges.count == 1 && ranges[0].count == 1 ? "" : "s") \(list.joined(separator: ", ")) changed"
            case .random(let length): return "random \(length) bytes"
            }
        }
    }

    public let kind: Kind
    public let payload: [UInt8]

    public init(_ kind: Kind, payload: [UInt8]) {
        self.kind = kind
        self.payload = payload
    }
}

/// The probes sent to one suspect, after the paper's section 3 (types of probes):
///
/// - replay-based probes: the first payload of a real connection, replayed identical,
///   and replayed with byte 0 changed, with bytes 0-7 and 62-63 changed, and with byte
///   16 changed (each changed byte is XORed with a random non-zero byte, so it differs;
///   offsets beyond the payload are skipped, and a variant with nothing left to change
///   is left out);
/// - non-replay probes: random bytes whose lengths the paper found in triples, 7-9,
///   11-13, 15-17, 21-23, 32-34, 40-42 and 48-50, plus 221 bytes. The GFW sent many over
///   days; the lab sends one length from each triple (chosen by the seeded generator),
///   plus one of 221, so one judgement takes one round of probes.
public enum ProbePlan {
    public static let changedByteVariants: [[ClosedRange<Int>]] = [[0...0], [0...7, 62...63], [16...16]]
    public static let randomLengthTriples: [ClosedRange<Int>] = [7...9, 11...13, 15...17, 21...23, 32...34, 40...42, 48...50]
    public static let longRandomLength = 221

    /// The probes for a suspect whose recorded first payload is `payload`.
    public static func probes(replaying payload: [UInt8], using random: inout LabRandom) -> [Probe] {
        var probes = [Probe(.replay, payload: payload)]
        for variant in changedByteVariants {
            let ranges = variant.compactMap { range -> ClosedRange<Int>? in
                range.lowerBound < payload.count ? range.lowerBound...min(range.upperBound, payload.count - 1) : nil
            }
            guard !ranges.isEmpty else { continue }
            var changed = payload
            for range in ranges { for i in range { changed[i] ^= UInt8.random(in: 1...255, using: &random) } }
            probes.append(Probe(.replayChanged(ranges), payload: changed))
        }
        let lengths = randomLengthTriples.map { Int.random(in: $0, using: &random) } + [longRandomLength]
        for length in lengths {
            probes.append(Probe(.random(length), payload: (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }))
        }
        return probes
    }
}

/// Work for the prober: send each probe, on a connection of its own, to the suspect and
/// to the reference web server, and report both reactions (`ProbeResults`).
public struct ProbeJob: Hashable, Sendable {
    public let server: IPv4Endpoint
    /// The plain web server whose reactions count as innocent.
    public let reference: IPv4Endpoint
    public let probes: [Probe]
}

/// The reactions to a `ProbeJob`'s probes, in the job's order.
public struct ProbeResults: Hashable, Sendable {
    public let server: IPv4Endpoint
    public let reactions: [ProbeComparison.Reaction]
    public let referenceReactions: [ProbeComparison.Reaction]

    public init(server: IPv4Endpoint, reactions: [ProbeComparison.Reaction], referenceReactions: [ProbeComparison.Reaction]) {
        self.server = server
        self.reactions = reactions
        self.referenceReactions = referenceReactions
    }
}

/// `active-probe`. All traffic passes until a server is judged. The first client data
/// packet of each new TCP flow to a server ip:port not yet judged (nor being judged) is
/// recorded, and the server becomes a suspect: a `ProbeJob` goes to the prober, with the
/// reference web server to compare with (`referenceTLS`, when given, for a first
/// payload that is a TLS handshake record or a server on one of `tlsPorts`; else
/// `reference`). When its results come back (`recordProbeResults`),
/// each probe's reaction is compared with the reference's reaction to the same probe
/// (`ProbeComparison`): any difference blocks the server ip:port for `blockDuration`
/// (every packet of every flow to or from it, new or existing, both directions, is
/// dropped, as in `gfw-fet`); no difference clears it for `clearedDuration`. A suspect
/// whose results do not come back within `resultTimeout` may be probed again.
///
/// Differences from the paper, for a lab: every TCP server is a suspect (the GFW probed
/// connections that looked like Shadowsocks: fully encrypted first packets of certain
/// lengths); one round of probes decides (the GFW probed for days and blocked by hand or
/// not at all); the comparison with a web server is this lab's judge (the paper inferred
/// the GFW's classifier from what it probed, not how it decided).
public struct ActiveProbeCensor: Censor {
    public enum Judgement: Hashable, Sendable {
        case probing([Probe.Kind])
        case cleared
        case blocked
    }

    public let reference: IPv4Endpoint
    public let referenceTLS: IPv4Endpoint?
    public let tlsPorts: Set<UInt16>
    public let blockDuration: Duration
    public let clearedDuration: Duration
    public let resultTimeout: Duration
    /// At most this many jobs wait for the prober; suspects beyond it wait for a later flow.
    public let maxPendingJobs: Int
    private var random: LabRandom
    private var flows: FlowTable<Bool>   // state: the first data packet has been seen
    private var servers: ExpiringTable<IPv4Endpoint, Judgement>
    private var jobs: [ProbeJob] = []
    private var events = CensorEventLog()

    public init(reference: IPv4Endpoint, referenceTLS: IPv4Endpoint? = nil, tlsPorts: Set<UInt16> = [443],
                blockDuration: Duration = .seconds(600), clearedDuration: Duration = .seconds(3600),
                resultTimeout: Duration = .seconds(120), maxPendingJobs: Int = 64, seed: UInt64 = 0,
                flowCapacity: Int = 65_536, serverCapacity: Int = 65_536) {
        self.reference = reference
        self.referenceTLS = referenceTLS
        self.tlsPorts = tlsPorts
        self.blockDuration = blockDuration
        self.clearedDuration = clearedDuration
        self.resultTimeout = resultTimeout
        self.maxPendingJobs = maxPendingJobs
        random = LabRandom(seed: seed)
        flows = FlowTable(capacity: flowCapacity)
        servers = ExpiringTable(capacity: serverCapacity)
    }

    public var name: String { CensorProfile.activeProbe.rawValue }
    public var unparsableVerdict: Verdict { .accept }
    public var flowCount: Int { flows.count }
    public mutating func takeEvents() -> [CensorEvent] { events.take() }

    public mutating func takeProbeJobs() -> [ProbeJob] {
        defer { jobs = [] }
        return jobs
    }

    /// The judgement of a server ip:port at `now`; nil when it is not (or no longer) judged.
    public func judgement(of server: IPv4Endpoint, at now: Duration) -> Judgement? {
        servers.value(for: server, at: now)
    }

    /// The reference web server a suspect is compared with.
    public func reference(for server: IPv4Endpoint, firstPayload: [UInt8]) -> IPv4Endpoint {
        let speaksTLS = firstPayload.starts(with: [0x16, 0x03]) || tlsPorts.contains(server.port)
        return speaksTLS ? referenceTLS ?? reference : reference
    }

    public mutating func inspect(_ packet: Packet, at now: Duration) -> Verdict {
        guard packet.transport == .tcp, !packet.isFragment else { return .accept }
        if judgement(of: packet.sourceEndpoint, at: now) == .blocked || judgement(of: packet.destinationEndpoint, at: now) == .blocked {
            // Still counted in its flow, so a flow seen before the block keeps its state.
            flows.withFlow(packet, at: now, initial: true) { _, _ in }
            return .drop
        }
        // Only flows seen from their SYN are recorded: a packet of a connection that
        // began before the censor did (a retransmission, say) is no first payload.
        let (client, server, firstData) = flows.withFlow(packet, at: now, initial: !packet.isInitialSYN) { flow, direction in
            let first = direction == .clientToServer && !flow.state && !packet.payloadRange.isEmpty
            if first { flow.state = true }
            return (flow.client, flow.server, first)
        }
        guard firstData, judgement(of: server, at: now) == nil, server != reference, server != referenceTLS,
              jobs.count < maxPendingJobs else { return .accept }
        let payload = Array(packet.payload)
        let probes = ProbePlan.probes(replaying: payload, using: &random)
        let job = ProbeJob(server: server, reference: reference(for: server, firstPayload: payload), probes: probes)
        jobs.append(job)
        servers.set(.probing(probes.map(\.kind)), for: server, at: now, expires: now + resultTimeout)
        events.append(CensorEvent(.probed, server: server, client: client,
                                  reason: "first payload (\(payload.count) bytes) recorded; \(probes.count) probes to it and to the web server \(job.reference)"))
        return .accept
    }

    /// Judges a suspect from the prober's reactions; ignored unless the server is being
    /// probed and the results match its job's probes.
    public mutating func recordProbeResults(_ results: ProbeResults, at now: Duration) {
        guard case .probing(let kinds)? = judgement(of: results.server, at: now),
              results.reactions.count == kinds.count, results.referenceReactions.count == kinds.count else { return }
        let findings = kinds.indices.compactMap { i -> String? in
            let differences = ProbeComparison.differences(bridge: results.reactions[i], reference: results.referenceReactions[i])
            return differences.isEmpty ? nil : "\(kinds[i]): \(differences.map(\.description).joined(separator: ", "))"
        }
        if findings.isEmpty {
            servers.set(.cleared, for: results.server, at: now, expires: now + clearedDuration)
            events.append(CensorEvent(.cleared, server: results.server,
                                      reason: "active probe: reacts like a web server to all \(kinds.count) probes"))
            return
        }
        servers.set(.blocked, for: results.server, at: now, expires: now + blockDuration)
        let shown = findings.prefix(2).joined(separator: "; ")
        let more = findings.count > 2 ? "; and \(findings.count - 2) more of \(kinds.count) probes" : ""
        events.append(CensorEvent(.blocked, server: results.server,
                                  reason: "active probe: reactions differ from a web server's (\(shown)\(more))"))
    }
}
