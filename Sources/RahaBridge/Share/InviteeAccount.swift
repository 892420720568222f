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
    public enum Direction: Sendable { case up, down }

    public let name: String
    private let lock = NIOLock()
    /// The cap on all invitees together, shared by every account.
    private let total: TotalRate

    // Everything below is guarded by `lock`.
    private var limits: ShareLimits
    private var active: Bool
    /// This month's traffic as last recorded in the circle.
    private var recordedThisMonth: Int64
    private var unrecordedUp: Int64 = 0
    private var unrecordedDown: Int64 = 0
    private var seen: Date?
    /// Proxied streams (each counts against maxConnections).
    private var streams: [ObjectIdentifier: Channel] = [:]
    /// Connections from the invitee (a multiplexed one carries many streams).
    private var connections: [ObjectIdentifier: Channel] = [:]
    private var up: RateBucket?
    private var down: RateBucket?
    /// Bytes and waits since the last fair-share tick.
    private var tickUp: Int64 = 0
    private var tickDown: Int64 = 0
    private var waitedUp = false
    private var waitedDown = false
    /// Reads held back right now, each way.
    private var heldUp = 0
    private var heldDown = 0

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
        return recordedThisMonth + unrecordedUp + unrecordedDown >= quota
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
        let (allowed, reachedQuota) = lock.withLock {
            let now = DispatchTime.now().uptimeNanoseconds
            switch direction {
            case .up:
                unrecordedUp += Int64(bytes)
                tickUp += Int64(bytes)
                up?.take(bytes, now: now)
            case .down:
                unrecordedDown += Int64(bytes)
                tickDown += Int64(bytes)
                down?.take(bytes, now: now)
            }
            return (active && !overQuota, active && overQuota)
        }
        if reachedQuota { cutOff() }
        return allowed
    }

    /// How long a read in `direction` must wait for the invitee's rate and
    /// the total cap; nil when it may go now.
    func delay(_ direction: Direction) -> TimeAmount? {
        let totalWait = total.wait(direction)
        return lock.withLock {
            let now = DispatchTime.now().uptimeNanoseconds
            let wait: UInt64
            switch direction {
            case .up:
                wait = max(up?.wait(now: now) ?? 0, totalWait)
                if wait > 0 { waitedUp = true }
            case .down:
                wait = max(down?.wait(now: now) ?? 0, totalWait)
                if wait > 0 { waitedDown = true }
            }
            return wait == 0 ? nil : .nanoseconds(Int64(wait))
        }
    }

    /// Closes every connection and stream of the invitee.
    func cutOff() {
        let channels = lock.withLock { Array(streams.values) + Array(connections.values) }
        for channel in channels { channel.close(promise: nil) }
    }

    func update(_ invitee: Invitee) {
        let cut = lock.withLock {
            limits = invitee.limits
            active = invitee.isActive
            return !active || overQuota
        }
        if cut { cutOff() }
    }

    /// Hands over the bytes not yet recorded in the circle (and when the invitee was last seen).
    func takeUnrecorded() -> (up: Int64, down: Int64, seen: Date?) {
        lock.withLock {
            defer { unrecordedUp = 0; unrecordedDown = 0; seen = nil }
            if !streams.isEmpty || !connections.isEmpty { seen = Date() }
            recordedThisMonth += unrecordedUp + unrecordedDown
            return (unrecordedUp, unrecordedDown, seen)
        }
    }

    /// After the circle recorded: this month's total as it now stands (a new month starts at 0).
    func recorded(thisMonth total: Int64) {
        lock.withLock { recordedThisMonth = total }
    }

    /// What the invitee did since the last tick: bytes each way, and whether
    /// they were held back (a read had to wait, or one is waiting now: a
    /// throttled reader may sleep through a whole tick without asking).
    func tick() -> (up: Int64, down: Int64, waitedUp: Bool, waitedDown: Bool, rate: Int64?) {
        lock.withLock {
            defer { tickUp = 0; tickDown = 0; waitedUp = false; waitedDown = false }
            return (tickUp, tickDown, waitedUp || heldUp > 0, waitedDown || heldDown > 0, limits.rate)
        }
    }

    /// A pacer started (+1) or ended (-1) holding back a read.
    func holding(_ direction: Direction, _ change: Int) {
        lock.withLock {
            if direction == .up { heldUp += change } else { heldDown += change }
        }
    }

    /// Sets the pacing rates (bytes per second); nil for none.
    func setRates(up upRate: Int64?, down downRate: Int64?) {
        let now = DispatchTime.now().uptimeNanoseconds
        func adjust(_ bucket: inout RateBucket?, _ rate: Int64?) {
            guard let rate else { bucket = nil; return }
            if bucket == nil { bucket = RateBucket(bytesPerSecond: rate, now: now) } else { bucket!.setRate(rate, now: now) }
        }
        lock.withLock {
            adjust(&up, upRate)
            adjust(&down, downRate)
        }
    }
}

/// The total cap on all invitees together, each direction: a hard ceiling
/// under the fair shares (which decide who gets what within it), so people
/// starting at once cannot overshoot it while the shares catch up.
final class TotalRate: @unchecked Sendable {
    private let lock = NIOLock()
    private var up: RateBucket?
    private var down: RateBucket?

    /// Bytes per second each direction; nil for no cap.
    func set(_ rate: Int64?) {
        let now = DispatchTime.now().uptimeNanoseconds
        lock.withLock {
            for direction in [InviteeAccount.Direction.up, .down] {
                var bucket = direction == .up ? up : down
                if let rate {
                    if bucket == nil { bucket = RateBucket(bytesPerSecond: rate, now: now) } else if bucket!.rate != Double(rate) { bucket!.setRate(rate, now: now) }
                } else {
                    bucket = nil
                }
                if direction == .up { up = bucket } else { down = bucket }
            }
        }
    }

    func take(_ bytes: Int, _ direction: InviteeAccount.Direction) {
        let now = DispatchTime.now().uptimeNanoseconds
        lock.withLock {
            if direction == .up { up?.take(bytes, now: now) } else { down?.take(bytes, now: now) }
        }
    }

    func wait(_ direction: InviteeAccount.Direction) -> UInt64 {
        let now = DispatchTime.now().uptimeNanoseconds
        return lock.withLock { (direction == .up ? up?.wait(now: now) : down?.wait(now: now)) ?? 0 }
    }
}
