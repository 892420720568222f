/// A token bucket that paces reads to a rate, in a clock the caller gives
/// (nanoseconds), so it is tested in virtual time.
///
/// A read takes what it read even when that drives the bucket into debt;
/// the next read waits until the debt is paid. The average rate is exact
/// whatever the read sizes, and a short page still loads at once from the
/// burst (a fifth of a second of the rate, at least 16 KiB).
public struct RateBucket: Sendable {
    public private(set) var rate: Double
    private var burst: Double
    private var tokens: Double
    private var last: UInt64

    public init(bytesPerSecond: Int64, now: UInt64) {
        rate = Double(max(bytesPerSecond, 1))
        burst = Self.burst(for: rate)
        tokens = burst
        last = now
    }

    private static func burst(for rate: Double) -> Double { max(rate / 5, 16_384) }

    /// Changes the rate from now on; what was earned so far stays.
    public mutating func setRate(_ bytesPerSecond: Int64, now: UInt64) {
        refill(now)
        rate = Double(max(bytesPerSecond, 1))
        burst = Self.burst(for: rate)
        tokens = min(tokens, burst)
    }

    /// Makes `bucket` pace at `rate`: a new bucket if there was none, the
    /// same one at a new rate if there was, none for no rate.
    public static func adjust(_ bucket: inout RateBucket?, to rate: Int64?, now: UInt64) {
        guard let rate else {
            bucket = nil
            return
        }
        if bucket == nil {
            bucket = RateBucket(bytesPerSecond: rate, now: now)
        } else if bucket!.rate != Double(max(rate, 1)) {
            bucket!.setRate(rate, now: now)
        }
    }

    public mutating func take(_ bytes: Int, now: UInt64) {
        refill(now)
        tokens -= Double(bytes)
    }

    /// Nanoseconds until the next read may go ahead; 0 when it may now.
    public mutating func wait(now: UInt64) -> UInt64 {
        refill(now)
        guard tokens <= 0 else { return 0 }
        return UInt64((-tokens / rate * 1e9).rounded(.up)) + 1
    }

    private mutating func refill(_ now: UInt64) {
        guard now > last else { return }
        tokens = min(burst, tokens + Double(now - last) / 1e9 * rate)
        last = now
    }
}

/// Max-min fair division of a total rate: nobody gets more than they want
/// (or their own cap), and what the light users leave is split evenly among
/// the heavy ones ("water filling").
public enum FairShare {
    /// - Parameters:
    ///   - total: what there is to divide.
    ///   - wants: what each user would use, `.infinity` for as much as they can get
    ///     (already lowered to each user's own cap).
    /// - Returns: each user's share, in the same order; they add up to at most `total`.
    public static func divide(_ total: Double, among wants: [Double]) -> [Double] {
        var shares = [Double](repeating: 0, count: wants.count)
        var remaining = max(total, 0)
        var left = wants.count
        for index in wants.indices.sorted(by: { wants[$0] < wants[$1] }) {
            let share = min(max(wants[index], 0), remaining / Double(left))
            shares[index] = share
            remaining -= share
            left -= 1
        }
        return shares
    }
}
