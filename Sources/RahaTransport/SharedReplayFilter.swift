import NIOConcurrencyHelpers
import RahaWire

/// A replay filter shared by every connection of one listener: Shadowsocks salts, or
/// the WebSocket upgrade keys of a Trojan-over-WebSocket listener.
public final class SharedReplayFilter: Sendable {
    private let filter: NIOLockedValueBox<SaltReplayFilter>

    /// Values are remembered at least `retention` seconds while fewer than `capacity`
    /// newer ones have arrived (see `SaltReplayFilter`).
    public init(capacity: Int = 200_000, retention: UInt64 = 60) {
        filter = NIOLockedValueBox(SaltReplayFilter(capacity: capacity, retention: retention, now: unixNow()))
    }

    /// True when the value is new; false when it was seen before (a replay).
    public func insert(_ value: [UInt8]) -> Bool {
        let now = unixNow()
        return filter.withLockedValue { $0.insert(value, now: now) }
    }
}
