/// The censor profiles of the lab (issue 4), each a pure state machine over packets.

/// `open`: no censorship; every packet, parsed or not, is accepted.
public struct OpenCensor: Censor {
    public init() {}
    public var name: String { CensorProfile.open.rawValue }
    public var unparsableVerdict: Verdict { .accept }
    public mutating func inspect(_ packet: Packet, at now: Duration) -> Verdict { .accept }
}

/// A seeded SplitMix64 generator, so a censor's coin flips are reproducible.
public struct LabRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// `gfw-fet`: the GFW's blocking of fully encrypted traffic (Wu et al., USENIX Security
/// 2023, sections 4 and 6): `FullyEncryptedTrafficRule` is applied to the first client
/// data packet of each TCP flow. A non-exempt packet, with probability
/// `blockProbability`, blocks the server's ip:port for `blockDuration` (the paper saw
/// 120 or 180 s; 180 here): every packet of every flow to or from it, new or existing,
/// both directions, is dropped until the block expires. The triggering packet itself
/// passes, as in the paper. Later packets of a flow are never examined.
///
/// Differences from the paper, for a deterministic lab: the probability defaults to 1.0
/// (the paper measured about 26.3%, `FullyEncryptedTrafficRule.blockProbability`); the
/// block is keyed on the server ip:port (the paper's is client ip, server ip and port:
/// the same thing with one lab client); all server addresses are in scope; UDP and other
/// protocols pass untouched.
public struct FullyEncryptedTrafficCensor: Censor {
    public let blockProbability: Double
    public let blockDuration: Duration
    private var random: LabRandom
    private var flows: FlowTable<Bool>   // state: the first data packet has been judged
    private var blockedServers: ExpiringTable<IPv4Endpoint, Void>
    private var events = CensorEventLog()

    public init(blockProbability: Double = 1.0, blockDuration: Duration = .seconds(180), seed: UInt64 = 0,
                flowCapacity: Int = 65_536, blockCapacity: Int = 65_536) {
        self.blockProbability = blockProbability
        self.blockDuration = blockDuration
        random = LabRandom(seed: seed)
        flows = FlowTable(capacity: flowCapacity)
        blockedServers = ExpiringTable(capacity: blockCapacity)
    }

    public var name: String { CensorProfile.gfwFET.rawValue }
    public var unparsableVerdict: Verdict { .accept }
    public var flowCount: Int { flows.count }
    public mutating func takeEvents() -> [CensorEvent] { events.take() }

    /// Whether the server ip:port is blocked at `now`.
    public func isBlocked(_ server: IPv4Endpoint, at now: Duration) -> Bool {
        blockedServers.value(for: server, at: now) != nil
    }

    public mutating func inspect(_ packet: Packet, at now: Duration) -> Verdict {
        guard packet.transport == .tcp, !packet.isFragment else { return .accept }
        // Look the block up for both endpoints before touching the flow table, so the
        // closure below captures plain values (no copy of a table).
        let sourceBlocked = isBlocked(packet.sourceEndpoint, at: now)
        let destinationBlocked = isBlocked(packet.destinationEndpoint, at: now)
        let (client, server, serverBlocked, firstData) = flows.withFlow(packet, at: now, initial: false) { flow, direction in
            let blocked = direction == .clientToServer ? destinationBlocked : sourceBlocked
            let first = direction == .clientToServer && !flow.state && !packet.payloadRange.isEmpty
            if first { flow.state = true }
            return (flow.client, flow.server, blocked, first)
        }
        if serverBlocked { return .drop }
        if firstData, case let payload = Array(packet.payload), FullyEncryptedTrafficRule.isBlocked(firstPacket: payload),
           blockProbability >= 1 || Double.random(in: 0..<1, using: &random) < blockProbability {
            blockedServers.set((), for: server, at: now, expires: now + blockDuration)
            let popcount = FullyEncryptedTrafficRule.popcountPerByte(payload)
            events.append(CensorEvent(.blocked, server: server, client: client,
                                      reason: "first packet looks fully encrypted (popcount \(twoDecimals(popcount))/byte, no exemption)"))
        }
        return .accept
    }
}

/// `iran-whitelist`: Iran's 2020 protocol filter (Bock et al., "Detecting and Evading
/// Censorship-in-Depth: A Case Study of Iran's Protocol Filter", FOCI 2020).
///
/// On TCP flows to ports 53, 80 and 443 the payloads of the first two client data
/// packets, concatenated (no other reassembly), must match one of the DNS, HTTP or TLS
/// fingerprints (`IranProtocolFingerprint`; any protocol on any of the ports). If they
/// do not, every packet of the flow after the first data packet is dropped for 60 s
/// (both directions here; the paper's filter acts on client-to-server packets, with the
/// same effect). Another failing flow to the same server ip:port before then restarts
/// the 60 s for all failed flows to it, as the paper observed. A flow decided after one
/// packet (a match, or bytes no allowed protocol starts with) does not wait for a second.
///
/// The paper's filter ignored other ports; the issue's lab profile lets only TCP 53, 80,
/// 443 and UDP 53 through, so by default (`blockOtherTraffic`) all other TCP, UDP and
/// IP protocols are dropped. Set it to false for the paper's behaviour.
public struct IranWhitelistCensor: Censor {
    public enum FlowState: Hashable, Sendable {
        case inspecting([UInt8])
        case allowed
        case failed
        /// A port or protocol outside the filter, dropped (with `blockOtherTraffic`).
        case otherDropped
    }

    public let filteredTCPPorts: Set<UInt16>
    public let allowedUDPPorts: Set<UInt16>
    public let blockOtherTraffic: Bool
    public let blockDuration: Duration
    private var flows: FlowTable<FlowState>
    private var failedServers: ExpiringTable<IPv4Endpoint, Void>
    private var events = CensorEventLog()

    public init(filteredTCPPorts: Set<UInt16> = [53, 80, 443], allowedUDPPorts: Set<UInt16> = [53],
                blockOtherTraffic: Bool = true, blockDuration: Duration = .seconds(60),
                flowCapacity: Int = 65_536, blockCapacity: Int = 65_536) {
        self.filteredTCPPorts = filteredTCPPorts
        self.allowedUDPPorts = allowedUDPPorts
        self.blockOtherTraffic = blockOtherTraffic
        self.blockDuration = blockDuration
        flows = FlowTable(capacity: flowCapacity)
        failedServers = ExpiringTable(capacity: blockCapacity)
    }

    public var name: String { CensorProfile.iranWhitelist.rawValue }
    public var unparsableVerdict: Verdict { blockOtherTraffic ? .drop : .accept }
    public var flowCount: Int { flows.count }
    public mutating func takeEvents() -> [CensorEvent] { events.take() }

    public mutating func inspect(_ packet: Packet, at now: Duration) -> Verdict {
        let other: Verdict = blockOtherTraffic ? .drop : .accept
        switch packet.transport {
        case .other: return other
        case .udp, .tcp: break
        }
        if packet.isFragment { return other }
        let filtered = filteredTCPPorts
        let udpPorts = allowedUDPPorts
        let blockOther = blockOtherTraffic
        var failure: IPv4Endpoint?
        var event: CensorEvent?
        let sourceFailed = failedServers.value(for: packet.sourceEndpoint, at: now) != nil
        let destinationFailed = failedServers.value(for: packet.destinationEndpoint, at: now) != nil
        let verdict: Verdict = flows.withFlow(packet, at: now, initial: .inspecting([])) { flow, direction in
            let allowedPorts = packet.transport == .udp ? udpPorts : filtered
            if !allowedPorts.contains(flow.server.port) {
                if blockOther, flow.state != .otherDropped {
                    flow.state = .otherDropped
                    event = CensorEvent(.dropped, server: flow.server, client: flow.client,
                                        reason: "\(packet.transport == .udp ? "UDP" : "TCP") port \(flow.server.port) is not \(allowedPorts.sorted().map(String.init).joined(separator: "/"))")
                }
                return other
            }
            if packet.transport == .udp { return .accept }
            switch flow.state {
            case .allowed, .otherDropped:
                return .accept
            case .failed:
                return (direction == .clientToServer ? destinationFailed : sourceFailed) ? .drop : .accept
            case .inspecting(let seen):
                guard direction == .clientToServer, !packet.payloadRange.isEmpty else { return .accept }
                let combined = seen + packet.payload.prefix(64)
                switch IranProtocolFingerprint.match(combined) {
                case .matches:
                    flow.state = .allowed
                    return .accept
                case .needsMore where flow.clientDataPackets < 2:
                    flow.state = .inspecting(combined)
                    return .accept
                case .needsMore, .noMatch:
                    flow.state = .failed
                    failure = flow.server
                    event = CensorEvent(.dropped, server: flow.server, client: flow.client,
                                        reason: "flow's first data is not DNS/HTTP/TLS")
                    return flow.clientDataPackets == 1 ? .accept : .drop
                }
            }
        }
        if let server = failure {
            failedServers.set((), for: server, at: now, expires: now + blockDuration)
        }
        if let event { events.append(event) }
        return verdict
    }
}

/// `sni-allowlist`: TLS only, and only to allowlisted server names (exact or subdomain,
/// `HostAllowlist`), as issue 4 specifies it. This models an allowlisting regime in
/// general (Iran's tiered "whitelisted" access during shutdowns is the motivating case);
/// it reproduces no measured middlebox, so its details are choices, stated here. The
/// middlebox reads only the first client data packet of each TCP flow
/// (`ClientHelloView`), on every port:
/// - a ClientHello with an allowlisted server name: the flow passes;
/// - a readable name not allowlisted, a complete ClientHello with no name, or any
///   non-TLS first data: the flow is reset (this and every later packet);
/// - a TLS handshake whose name is not readable in that one packet (a ClientHello split
///   across segments or records): the middlebox gives up and the flow passes
///   (`failClosed == false`, the default, as packet-at-a-time middleboxes behave), or is
///   reset (`failClosed == true`).
/// UDP passes only to `allowedUDPPorts` (DNS, 53, by default; QUIC is thereby blocked);
/// other IP protocols are dropped.
public struct SNIAllowlistCensor: Censor {
    public enum FlowState: Hashable, Sendable {
        case awaitingData
        case allowed
        case reset
        case dropped
    }

    public let allowlist: HostAllowlist
    public let failClosed: Bool
    public let allowedUDPPorts: Set<UInt16>
    private var flows: FlowTable<FlowState>
    private var events = CensorEventLog()

    public init(allowlist: HostAllowlist, failClosed: Bool = false, allowedUDPPorts: Set<UInt16> = [53], flowCapacity: Int = 65_536) {
        self.allowlist = allowlist
        self.failClosed = failClosed
        self.allowedUDPPorts = allowedUDPPorts
        flows = FlowTable(capacity: flowCapacity)
    }

    public var name: String { CensorProfile.sniAllowlist.rawValue }
    public var flowCount: Int { flows.count }
    public mutating func takeEvents() -> [CensorEvent] { events.take() }

    /// The decision for a flow's first client data packet.
    public func decision(forFirstPacket payload: some Collection<UInt8>) -> Verdict {
        Self.decision(payload, allowlist: allowlist, failClosed: failClosed).verdict
    }

    /// The verdict and, for a reset, why.
    private static func decision(_ payload: some Collection<UInt8>, allowlist: HostAllowlist, failClosed: Bool) -> (verdict: Verdict, reason: String) {
        switch ClientHelloView(firstPacket: payload) {
        case .serverName(let name):
            allowlist.allows(name) ? (.accept, "") : (.reset, "SNI \"\(name)\" not allowlisted")
        case .unreadable:
            failClosed ? (.reset, "ClientHello not readable in one packet (fail-closed)") : (.accept, "")
        case .noServerName, .notTLS:
            (.reset, "no SNI / not TLS")
        }
    }

    public mutating func inspect(_ packet: Packet, at now: Duration) -> Verdict {
        guard !packet.isFragment else { return .drop }
        switch packet.transport {
        case .other: return .drop
        case .udp:
            let ports = allowedUDPPorts
            var event: CensorEvent?
            let verdict: Verdict = flows.withFlow(packet, at: now, initial: .awaitingData) { flow, _ in
                if flow.state == .awaitingData {
                    let allowed = ports.contains(flow.server.port)
                    flow.state = allowed ? .allowed : .dropped
                    if !allowed {
                        event = CensorEvent(.dropped, server: flow.server, client: flow.client,
                                            reason: "UDP port \(flow.server.port) is not \(ports.sorted().map(String.init).joined(separator: "/"))")
                    }
                }
                return flow.state == .allowed ? .accept : .drop
            }
            if let event { events.append(event) }
            return verdict
        case .tcp: break
        }
        let allowlist = self.allowlist, failClosed = self.failClosed
        var event: CensorEvent?
        let verdict: Verdict = flows.withFlow(packet, at: now, initial: .awaitingData) { flow, direction in
            switch flow.state {
            case .allowed: return .accept
            case .reset: return .reset
            case .dropped: return .drop
            case .awaitingData:
                guard direction == .clientToServer, !packet.payloadRange.isEmpty else { return .accept }
                let (verdict, reason) = Self.decision(packet.payload, allowlist: allowlist, failClosed: failClosed)
                flow.state = verdict == .accept ? .allowed : .reset
                if verdict != .accept { event = CensorEvent(.reset, server: flow.server, client: flow.client, reason: reason) }
                return verdict
            }
        }
        if let event { events.append(event) }
        return verdict
    }
}

/// `throttle-unknown`: Russia's 2025 "16 KB freeze", as community measurements on
/// net4people/bbs and ntc.party described it (not a peer-reviewed paper): TCP
/// connections to foreign hosting providers that are not TLS with a trusted server name
/// stall once the server has sent roughly 16 KB; the packets just stop arriving. The
/// limit here is the issue's 16 KB = 16,384 bytes, exactly.
///
/// Here every TCP flow is in scope. A flow whose first client data packet is a
/// ClientHello with an allowlisted name (readable in that packet) is trusted and never
/// limited. Any other flow (other protocols, names not allowlisted, split ClientHellos)
/// may receive at most `limit` bytes of server-to-client payload: a packet that would
/// take the total past the limit is dropped, and from then on the flow is frozen (every
/// packet, both directions, dropped) until it idles out. UDP and other protocols pass.
public struct ThrottleUnknownCensor: Censor {
    public enum FlowState: Hashable, Sendable {
        case undecided
        case trusted
        case limited
        case frozen
    }

    public let allowlist: HostAllowlist
    public let limit: Int
    private var flows: FlowTable<FlowState>
    private var events = CensorEventLog()

    public init(allowlist: HostAllowlist, limit: Int = 16 * 1024, flowCapacity: Int = 65_536) {
        self.allowlist = allowlist
        self.limit = limit
        flows = FlowTable(capacity: flowCapacity)
    }

    public var name: String { CensorProfile.throttleUnknown.rawValue }
    public var unparsableVerdict: Verdict { .accept }
    public var flowCount: Int { flows.count }
    public mutating func takeEvents() -> [CensorEvent] { events.take() }

    public mutating func inspect(_ packet: Packet, at now: Duration) -> Verdict {
        guard packet.transport == .tcp, !packet.isFragment else { return .accept }
        let allowlist = self.allowlist, limit = self.limit
        var event: CensorEvent?
        defer { if let event { events.append(event) } }
        return flows.withFlow(packet, at: now, initial: .undecided) { flow, direction in
            if flow.state == .undecided, direction == .clientToServer, !packet.payloadRange.isEmpty {
                if case .serverName(let name) = ClientHelloView(firstPacket: packet.payload), allowlist.allows(name) {
                    flow.state = .trusted
                } else {
                    flow.state = .limited
                }
            }
            switch flow.state {
            case .trusted: return .accept
            case .frozen: return .drop
            case .undecided, .limited:
                if flow.serverPayloadBytes > limit {
                    flow.state = .frozen
                    event = CensorEvent(.throttled, server: flow.server, client: flow.client,
                                        reason: "froze after \(limit) bytes: not TLS to an allowlisted name")
                    return .drop
                }
                return .accept
            }
        }
    }
}

/// `shutdown`: an international shutdown such as Iran's in November 2019:
/// nothing crosses the border except traffic to or from the domestic hosts given (in
/// the lab, the domestic resolver, which still recurses, and the domestic mail server,
/// which still relays). The verdict is stateless; the only state is which dropped
/// destinations were reported lately, so that the event for a destination ip:port
/// (a packet's destination is taken as the server) comes once per `reportInterval`,
/// not once per packet.
public struct ShutdownCensor: Censor {
    public let domestic: Set<IPv4Address>
    public let reportInterval: Duration
    private var reported: ExpiringTable<IPv4Endpoint, Void>
    private var events = CensorEventLog()

    public init(domestic: Set<IPv4Address>, reportInterval: Duration = .seconds(60), reportCapacity: Int = 4096) {
        self.domestic = domestic
        self.reportInterval = reportInterval
        reported = ExpiringTable(capacity: reportCapacity)
    }

    public var name: String { CensorProfile.shutdown.rawValue }
    public mutating func takeEvents() -> [CensorEvent] { events.take() }

    public mutating func inspect(_ packet: Packet, at now: Duration) -> Verdict {
        if domestic.contains(packet.source) || domestic.contains(packet.destination) { return .accept }
        let destination = packet.destinationEndpoint
        if reported.value(for: destination, at: now) == nil {
            reported.set((), for: destination, at: now, expires: now + reportInterval)
            events.append(CensorEvent(.dropped, server: destination, client: packet.sourceEndpoint,
                                      reason: "international traffic during shutdown"))
        }
        return .drop
    }
}

/// `x` rounded to two decimals, e.g. "4.02" (RahaLab has no Foundation formatter).
func twoDecimals(_ x: Double) -> String {
    let hundredths = Int((x * 100).rounded())
    let fraction = abs(hundredths % 100)
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
}

/// Parameters the profiles need from the lab.
public struct CensorConfiguration: Sendable {
    /// Server names that `sni-allowlist` and `throttle-unknown` trust.
    public var allowedServerNames: [String]
    /// The hosts `shutdown` still lets through.
    public var domesticAddresses: Set<IPv4Address>
    /// `gfw-fet`'s probability of blocking a non-exempt flow (1.0 for a deterministic lab).
    public var blockProbability: Double
    /// Seed for `gfw-fet`'s coin when `blockProbability` is below 1.
    public var seed: UInt64
    /// `sni-allowlist`: reset flows whose server name cannot be read from one packet.
    public var failClosed: Bool
    /// `active-probe`: the plain web server suspects are compared with.
    public var probeReference: IPv4Endpoint?
    /// `active-probe`: the HTTPS server suspects on port 443 are compared with.
    public var probeReferenceTLS: IPv4Endpoint?
    /// `active-probe`: how long a server that reacts unlike a web server is blocked.
    public var probeBlockDuration: Duration

    public init(allowedServerNames: [String] = [], domesticAddresses: Set<IPv4Address> = [],
                blockProbability: Double = 1.0, seed: UInt64 = 0, failClosed: Bool = false,
                probeReference: IPv4Endpoint? = nil, probeReferenceTLS: IPv4Endpoint? = nil,
                probeBlockDuration: Duration = .seconds(600)) {
        self.allowedServerNames = allowedServerNames
        self.domesticAddresses = domesticAddresses
        self.blockProbability = blockProbability
        self.seed = seed
        self.failClosed = failClosed
        self.probeReference = probeReference
        self.probeReferenceTLS = probeReferenceTLS
        self.probeBlockDuration = probeBlockDuration
    }
}

/// An unknown profile name; the message lists the valid ones.
public struct UnknownCensorProfile: Error, Equatable, CustomStringConvertible {
    public let name: String
    public var description: String {
        "unknown censor profile '\(name)'; valid profiles: \(CensorProfile.allCases.map(\.rawValue).joined(separator: ", "))"
    }
}

/// The lab's censor profiles by name.
public enum CensorProfile: String, CaseIterable, Hashable, Sendable {
    case open
    case gfwFET = "gfw-fet"
    case iranWhitelist = "iran-whitelist"
    case sniAllowlist = "sni-allowlist"
    case throttleUnknown = "throttle-unknown"
    case shutdown
    case activeProbe = "active-probe"

    /// Parses a profile name (case-insensitive, surrounding spaces ignored).
    public init(name: String) throws {
        let trimmed = String(name.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed()).lowercased()
        guard let profile = CensorProfile(rawValue: trimmed) else { throw UnknownCensorProfile(name: name) }
        self = profile
    }

    /// A fresh censor for this profile.
    public func makeCensor(_ configuration: CensorConfiguration = CensorConfiguration()) -> any Censor {
        switch self {
        case .open:
            OpenCensor()
        case .gfwFET:
            FullyEncryptedTrafficCensor(blockProbability: configuration.blockProbability, seed: configuration.seed)
        case .iranWhitelist:
            IranWhitelistCensor()
        case .sniAllowlist:
            SNIAllowlistCensor(allowlist: HostAllowlist(configuration.allowedServerNames), failClosed: configuration.failClosed)
        case .throttleUnknown:
            ThrottleUnknownCensor(allowlist: HostAllowlist(configuration.allowedServerNames))
        case .shutdown:
            ShutdownCensor(domestic: configuration.domesticAddresses)
        case .activeProbe:
            // Without a reference (as in the name tests) there is no web server to compare
            // with: 0.0.0.0:80 refuses every probe, so every suspect differs.
            ActiveProbeCensor(reference: configuration.probeReference ?? IPv4Endpoint(IPv4Address(0), 80),
                              referenceTLS: configuration.probeReferenceTLS,
                              blockDuration: configuration.probeBlockDuration, seed: configuration.seed)
        }
    }
}

