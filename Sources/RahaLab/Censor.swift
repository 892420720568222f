/// What a censor decides about one packet. The NFQUEUE program applies it:
/// `accept` lets the packet through, `drop` discards it silently, and `reset` discards
/// it and injects a TCP RST towards both ends, `Packet.resetPackets` (for UDP, `reset`
/// is applied as `drop`).
public enum Verdict: Hashable, Sendable, CustomStringConvertible {
    case accept
    case drop
    case reset

    public var description: String {
        switch self {
        case .accept: "accept"
        case .drop: "drop"
        case .reset: "reset"
        }
    }
}

/// A censor: a state machine fed every packet crossing the router, in order, with the
/// time it was seen. It performs no I/O; time is injected (`now` is time since any
/// fixed origin, such as the lab's start), so timers are tested without waiting.
/// Memory is bounded: flow and block tables have a capacity and evict the oldest.
public protocol Censor {
    /// The profile's name, as `CensorProfile` parses it.
    var name: String { get }
    /// The verdict for one parsed packet.
    mutating func inspect(_ packet: Packet, at now: Duration) -> Verdict
    /// The verdict for bytes that did not parse as IPv4 (see `PacketError`).
    var unparsableVerdict: Verdict { get }
    /// The decisions made since the last call, oldest first: one event per decision
    /// (a block, a reset flow, a probe), not one per packet. Default: none.
    mutating func takeEvents() -> [CensorEvent]
    /// Work for an active prober made since the last call (profile `active-probe`).
    /// Default: none.
    mutating func takeProbeJobs() -> [ProbeJob]
    /// The prober's findings for one job (see `ProbeJob`). Default: ignored.
    mutating func recordProbeResults(_ results: ProbeResults, at now: Duration)
}

extension Censor {
    public var unparsableVerdict: Verdict { .drop }
    public mutating func takeEvents() -> [CensorEvent] { [] }
    public mutating func takeProbeJobs() -> [ProbeJob] { [] }
    public mutating func recordProbeResults(_ results: ProbeResults, at now: Duration) {}

    /// Parses raw IPv4 bytes and inspects them; unparsable bytes get `unparsableVerdict`.
    /// This is the single entry point an NFQUEUE program needs.
    public mutating func inspect(bytes: [UInt8], at now: Duration) -> Verdict {
        guard let packet = try? Packet(parsing: bytes) else { return unparsableVerdict }
        return inspect(packet, at: now)
    }
}

/// One decision of a censor, for the lab's "what was blocked, and why" table.
public struct CensorEvent: Hashable, Sendable, CustomStringConvertible {
    public enum Action: String, Hashable, Sendable, CaseIterable {
        /// The server ip:port is blocked for a while (every flow, both directions).
        case blocked
        /// A flow was reset (RSTs injected).
        case reset
        /// A flow's (or a server's) packets are dropped.
        case dropped
        /// A flow was throttled or frozen.
        case throttled
        /// The server is being actively probed.
        case probed
        /// The server was probed and looked like a web server: left alone for a while.
        case cleared
    }

    /// The server side of the flow decided on.
    public var server: IPv4Endpoint
    /// The client, when the decision concerns one flow.
    public var client: IPv4Endpoint?
    public var action: Action
    /// A short reason a person can read, e.g. "port 8388 is not 53/80/443".
    public var reason: String

    public init(_ action: Action, server: IPv4Endpoint, client: IPv4Endpoint? = nil, reason: String) {
        self.server = server
        self.client = client
        self.action = action
        self.reason = reason
    }

    /// "ACTION SERVER REASON", as raha-censor prints it after "raha-censor: event ".
    public var description: String { "\(action.rawValue) \(server) \(reason)" }
}

/// The events a censor has yet to hand out, bounded: once `capacity` are waiting, newer
/// ones are counted in `overflow` instead of kept (raha-censor takes them after every
/// packet, so only a censor nobody reads fills up).
public struct CensorEventLog: Sendable {
    public let capacity: Int
    private var events: [CensorEvent] = []
    public private(set) var overflow = 0

    public init(capacity: Int = 4096) { self.capacity = capacity }

    public mutating func append(_ event: CensorEvent) {
        if events.count < capacity { events.append(event) } else { overflow += 1 }
    }

    public mutating func take() -> [CensorEvent] {
        defer { events = [] }
        return events
    }
}

/// Which way a packet travels within its flow.
public enum FlowDirection: Hashable, Sendable {
    /// From the side that opened the flow (sent the TCP SYN, or the first UDP datagram).
    case clientToServer
    case serverToClient
}

/// A dictionary whose entries expire at a deadline and whose size is capped: when it is
/// full, expired entries go first, then the least recently written eighth.
public struct ExpiringTable<Key: Hashable, Value> {
    private struct Entry {
        var value: Value
        var expires: Duration
        var written: Duration
    }

    public let capacity: Int
    private var entries: [Key: Entry] = [:]

    public init(capacity: Int) {
        precondition(capacity >= 1, "an expiring table needs room for at least one entry")
        self.capacity = capacity
    }

    /// Entries held, including expired ones not yet purged.
    public var count: Int { entries.count }

    /// The value, or nil if absent or expired at `now`.
    public func value(for key: Key, at now: Duration) -> Value? {
        guard let entry = entries[key], entry.expires > now else { return nil }
        return entry.value
    }

    /// The expiry time of a live entry.
    public func expiry(of key: Key, at now: Duration) -> Duration? {
        guard let entry = entries[key], entry.expires > now else { return nil }
        return entry.expires
    }

    public mutating func set(_ value: Value, for key: Key, at now: Duration, expires: Duration) {
        if entries[key] == nil, entries.count >= capacity { makeRoom(at: now) }
        entries[key] = Entry(value: value, expires: expires, written: now)
    }

    public mutating func remove(_ key: Key) {
        entries[key] = nil
    }

    /// Drops every entry expired at `now`.
    public mutating func purge(at now: Duration) {
        entries = entries.filter { $0.value.expires > now }
    }

    private mutating func makeRoom(at now: Duration) {
        purge(at: now)
        guard entries.count >= capacity else { return }
        // Evict the oldest writes in one batch so that a full table costs one sort per
        // capacity/8 insertions, not one scan per insertion.
        let target = capacity - max(1, capacity / 8)
        let oldest = entries.sorted { $0.value.written < $1.value.written }.prefix(entries.count - target)
        for (key, _) in oldest { entries[key] = nil }
    }
}

/// Per-flow state shared by the profiles: who the client is, what each side has sent.
public struct Flow<State> {
    public let client: IPv4Endpoint
    public let server: IPv4Endpoint
    public let transport: TransportProtocol
    /// Packets from the client that carried payload.
    public var clientDataPackets = 0
    public var clientPayloadBytes = 0
    public var serverPayloadBytes = 0
    /// The profile's own state for this flow.
    public var state: State

    public init(client: IPv4Endpoint, server: IPv4Endpoint, transport: TransportProtocol, state: State) {
        self.client = client
        self.server = server
        self.transport = transport
        self.state = state
    }
}

/// Tracks flows in both directions with an idle timeout and a capacity.
///
/// The client of a flow is the sender of the TCP SYN (or, when the censor first sees a
/// flow mid-way, the receiver of a SYN-ACK, else the first sender); for UDP it is the
/// first sender. A new SYN on a known 5-tuple starts a new flow (port reuse).
public struct FlowTable<State> {
    public let idleTimeout: Duration
    private var table: ExpiringTable<FlowKey, Flow<State>>

    public init(capacity: Int = 65_536, idleTimeout: Duration = .seconds(300)) {
        self.idleTimeout = idleTimeout
        table = ExpiringTable(capacity: capacity)
    }

    public var count: Int { table.count }
    public var capacity: Int { table.capacity }

    public func flow(for key: FlowKey, at now: Duration) -> Flow<State>? {
        table.value(for: key, at: now)
    }

    /// Finds or creates the packet's flow, updates the shared counters, lets `body`
    /// decide with the flow's state, stores the result and refreshes the idle timer.
    public mutating func withFlow<R>(
        _ packet: Packet, at now: Duration, initial: @autoclosure () -> State,
        _ body: (inout Flow<State>, FlowDirection) -> R
    ) -> R {
        let key = FlowKey(packet)
        var flow: Flow<State>
        if let existing = table.value(for: key, at: now), !(packet.isInitialSYN && packet.sourceEndpoint == existing.client && existing.clientDataPackets > 0) {
            flow = existing
        } else {
            let serverFirst = packet.transport == .tcp && packet.tcpFlags.contains([.syn, .ack])
            flow = serverFirst
                ? Flow(client: packet.destinationEndpoint, server: packet.sourceEndpoint, transport: packet.transport, state: initial())
                : Flow(client: packet.sourceEndpoint, server: packet.destinationEndpoint, transport: packet.transport, state: initial())
        }
        let direction: FlowDirection = packet.sourceEndpoint == flow.client && packet.destinationEndpoint == flow.server
            ? .clientToServer : .serverToClient
        let payload = packet.payloadRange.count
        switch direction {
        case .clientToServer:
            if payload > 0 { flow.clientDataPackets += 1 }
            flow.clientPayloadBytes += payload
        case .serverToClient:
            flow.serverPayloadBytes += payload
        }
        let result = body(&flow, direction)
        table.set(flow, for: key, at: now, expires: now + idleTimeout)
        return result
    }
}
