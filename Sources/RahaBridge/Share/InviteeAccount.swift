import Foundation
import NIOConcurrencyHelpers
import NIOCore
import RahaWire

/// One invitee's live state on a running share node: what they may do now,
/// what they moved since the circle last recorded it, their open
/// connections (to cut them off at once), and the pacing of their reads.
///
/// Called from every event loop; one lock guards it all.
public final class InviteeAccount: @unchecked Sendable {
    public enum Direction: Int, Sendable, CaseIterable { case up, down }

    /// One direction's pacing and counts.
    private struct Flow {
        var bucket: RateBucket?
        /// Bytes not yet recorded in the circle.
        var unrecorded: Int64 = 0
        /// Bytes since the last fair-share tick, and whether a read had to wait in it.
        var sinceTick: Int64 = 0
        var waited = false
        /// Reads held back right now.
        var held = 0
    }

    /// What one direction did since the last tick.
    struct Activity {
        var bytes: Int64
        /// Held back: a read had to wait, or one is waiting now (a throttled
        /// reader may sleep through a whole tick without asking).
        var heldBack: Bool
    }

    public let name: String
    private let lock = NIOLock()
    /// The cap on all invitees together, shared by every account.
    private let total: TotalRate

    // Everything below is guarded by `lock`.
    private var limits: ShareLimits
    private var active: Bool
    /// This month's traffic as last recorded in the circle.
    private var recordedThisMonth: Int64
    private var seen: Date?
    /// Proxied streams (each counts against maxConnections).
    private var streams: [ObjectIdentifier: Channel] = [:]
    /// Connections from the invitee (a multiplexed one carries many streams).
    private var connections: [ObjectIdentifier: Channel] = [:]
    /// Indexed by `Direction.rawValue`.
    private var flows = [Flow(), Flow()]

    init(invitee: Invitee, total: TotalRate, now: Date) {
        name = invitee.name
        self.total = total
        limits = invitee.limits
        active = invitee.isActive
        recordedThisMonth = invitee.usage.month == ShareUsage.month(of: now) ? invitee.usage.total : 0
        setRates(up: invitee.limits.rate, down: invitee.limits.rate)
    }

    private var overQuota: Bool {
        guard let quota = limits.monthlyQuota else { return false }
        return recordedThisMonth + flows[0].unrecorded + flows[1].unrecorded >= quota
    }

    /// May the invitee's traffic flow now (not revoked, quota not reached)?
    public var mayUse: Bool { lock.withLock { active && !overQuota } }

    /// Registers a connection from the invitee, to be cut off with the rest.
    func attach(connection: Channel) -> Bool { register(connection, in: \.connections, limited: false) }

    /// Admits one more proxied stream, unless the invitee is cut off or at their connection limit.
    func admit(stream: Channel) -> Bool { register(stream, in: \.streams, limited: true) }

    private func register(_ channel: Channel, in set: ReferenceWritableKeyPath<InviteeAccount, [ObjectIdentifier: Channel]>, limited: Bool) -> Bool {
        let admitted = lock.withLock {
            guard active && !overQuota else { return false }
            if limited, let max = limits.maxConnections, self[keyPath: set].count >= max { return false }
            self[keyPath: set][ObjectIdentifier(channel)] = channel
            seen = Date()
            return true
        }
        if admitted {
            channel.closeFuture.whenComplete { [self] _ in lock.withLock { self[keyPath: set][ObjectIdentifier(channel)] = nil } }
        }
        return admitted
    }

    public var openStreams: Int { lock.withLock { streams.count } }

    /// Counts bytes moved; false when the invitee must now be cut off
    /// (revoked, or this month's quota reached), which the caller does by closing.
    func count(_ bytes: Int, _ direction: Direction) -> Bool {
        total.take(bytes, direction)
        let now = DispatchTime.now().uptimeNanoseconds
        let (allowed, reachedQuota) = lock.withLock {
            flows[direction.rawValue].unrecorded += Int64(bytes)
            flows[direction.rawValue].sinceTick += Int64(bytes)
            flows[direction.rawValue].bucket?.take(bytes, now: now)
            return (active && !overQuota, active && overQuota)
        }
        if reachedQuota { cutOff() }
        return allowed
    }

    /// How long a read in `direction` must wait for the invitee's rate and
    /// the total cap; nil when it may go now.
    func delay(_ direction: Direction) -> TimeAmount? {
        let totalWait = total.wait(direction)
        let now = DispatchTime.now().uptimeNanoseconds
        return lock.withLock {
            let wait = max(flows[direction.rawValue].bucket?.wait(now: now) ?? 0, totalWait)
            if wait > 0 { flows[direction.rawValue].waited = true }
            return wait == 0 ? nil : .nanoseconds(Int64(wait))
        }
    }

    /// Closes every connection and stream of the invitee.
    func cutOff() {
        let channels = lock.withLock { Array(streams.values) + Array(connections.values) }
        for channel in channels { channel.close(promise: nil) }
    }

    /// Takes the circle's word for the invitee: their limits (their own rate
    /// at once; under a total cap the next tick divides it again) and whether
    /// they are still in; cut off if not, or if now over quota.
    func update(_ invitee: Invitee) {
        let cut = lock.withLock {
            limits = invitee.limits
            active = invitee.isActive
            return !active || overQuota
        }
        setRates(up: invitee.limits.rate, down: invitee.limits.rate)
        if cut { cutOff() }
    }

    /// Hands over the bytes not yet recorded in the circle (and when the invitee was last seen).
    func takeUnrecorded() -> (up: Int64, down: Int64, seen: Date?) {
        lock.withLock {
            if !streams.isEmpty || !connections.isEmpty { seen = Date() }
            let taken = (flows[0].unrecorded, flows[1].unrecorded, seen)
            recordedThisMonth += taken.0 + taken.1
            flows[0].unrecorded = 0
            flows[1].unrecorded = 0
            seen = nil
            return taken
        }
    }

    /// After the circle recorded: this month's total as it now stands (a new month starts at 0).
    func recorded(thisMonth total: Int64) {
        lock.withLock { recordedThisMonth = total }
    }

    /// What the invitee did since the last tick, each way (by `Direction.rawValue`), and their own rate cap.
    func tick() -> (activity: [Activity], rate: Int64?) {
        lock.withLock {
            let activity = flows.map { Activity(bytes: $0.sinceTick, heldBack: $0.waited || $0.held > 0) }
            for index in flows.indices {
                flows[index].sinceTick = 0
                flows[index].waited = false
            }
            return (activity, limits.rate)
        }
    }

    /// A pacer started (+1) or ended (-1) holding back a read.
    func holding(_ direction: Direction, _ change: Int) {
        lock.withLock { flows[direction.rawValue].held += change }
    }

    /// Sets the pacing rates (bytes per second); nil for none.
    func setRates(up: Int64?, down: Int64?) {
        let now = DispatchTime.now().uptimeNanoseconds
        lock.withLock {
            RateBucket.adjust(&flows[0].bucket, to: up, now: now)
            RateBucket.adjust(&flows[1].bucket, to: down, now: now)
        }
    }
}

/// The total cap on all invitees together, each direction: a hard ceiling
/// under the fair shares (which decide who gets what within it), so people
/// starting at once cannot overshoot it while the shares catch up.
final class TotalRate: @unchecked Sendable {
    private let lock = NIOLock()
    /// Indexed by `Direction.rawValue`.
    private var buckets: [RateBucket?] = [nil, nil]

    /// Bytes per second each direction; nil for no cap.
    func set(_ rate: Int64?) {
        let now = DispatchTime.now().uptimeNanoseconds
        lock.withLock {
            for index in buckets.indices { RateBucket.adjust(&buckets[index], to: rate, now: now) }
        }
    }

    func take(_ bytes: Int, _ direction: InviteeAccount.Direction) {
        let now = DispatchTime.now().uptimeNanoseconds
        lock.withLock { buckets[direction.rawValue]?.take(bytes, now: now) }
    }

    func wait(_ direction: InviteeAccount.Direction) -> UInt64 {
        let now = DispatchTime.now().uptimeNanoseconds
        return lock.withLock { buckets[direction.rawValue]?.wait(now: now) ?? 0 }
    }
}
