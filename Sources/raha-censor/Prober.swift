import Foundation
import RahaLab
#if canImport(Glibc)
import Glibc
#endif

/// The active prober of profile `active-probe`: runs a censor's `ProbeJob`s from the
/// router's namespace (its connections leave through OUTPUT, not FORWARD, so they are
/// not queued to the censor). Each probe goes, on a fresh connection, to the suspect and
/// to the reference web server, all at once, each connection on a thread of its own with
/// blocking sockets; a job therefore takes about one `timeout` after its `delay`. The
/// results wait in a locked list until the verdict loop, which owns the censor, takes them.
final class Prober: @unchecked Sendable {
    /// How long a probe waits for the server to end the connection.
    let timeout: Duration
    /// How long after the recorded payload the probes start. The GFW's came after 0.4 s
    /// to minutes (Alice et al.); a replay sent at once could even overtake the recorded
    /// packet on its way to the server and make the real client look like the replay.
    let delay: Duration
    private let lock = NSLock()
    private var finished: [ProbeResults] = []

    init(timeout: Duration = .seconds(8), delay: Duration = .milliseconds(500)) {
        self.timeout = timeout
        self.delay = delay
    }

    /// Starts a job; its results appear in `takeResults()` once every probe has ended.
    func submit(_ job: ProbeJob) {
        let delay = self.delay
        let thread = Thread { [self] in
            Thread.sleep(forTimeInterval: Double(delay.components.seconds) + Double(delay.components.attoseconds) / 1e18)
            run(job)
        }
        thread.name = "raha-censor prober \(job.server)"
        thread.start()
    }

    /// The results of the jobs finished since the last call.
    func takeResults() -> [ProbeResults] {
        lock.lock()
        defer { finished = []; lock.unlock() }
        return finished
    }

    private func run(_ job: ProbeJob) {
        let count = job.probes.count
        let reactions = ReactionSlots(count: 2 * count)
        let group = DispatchGroup()
        for (i, probe) in job.probes.enumerated() {
            for (slot, target) in [(i, job.server), (count + i, job.reference)] {
                group.enter()
                let thread = Thread { [timeout] in
                    reactions[slot] = Self.react(to: probe.payload, at: target, timeout: timeout)
                    group.leave()
                }
                thread.start()
            }
        }
        group.wait()
        let all = reactions.values
        let results = ProbeResults(server: job.server, reactions: Array(all[..<count]), referenceReactions: Array(all[count...]))
        // Queued before the lines are printed: once a reader sees them, the censor takes
        // the results before its next verdict.
        lock.lock()
        finished.append(results)
        lock.unlock()
        for (i, probe) in job.probes.enumerated() {
            say("raha-censor: probe \(job.server) \(probe.kind): suspect \(describe(results.reactions[i])); reference \(job.reference) \(describe(results.referenceReactions[i]))")
        }
    }

    private func describe(_ reaction: ProbeComparison.Reaction) -> String {
        let hex = reaction.firstBytes.prefix(8).map { String(format: "%02x", $0) }.joined()
        return reaction.description + (hex.isEmpty ? "" : " [\(hex)]")
    }

    /// One probe on one connection: connect, send, then read until the server closes or
    /// resets, or `timeout` passes; a refused or failed connection counts as a reset.
    static func react(to payload: [UInt8], at target: IPv4Endpoint, timeout: Duration) -> ProbeComparison.Reaction {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return ProbeComparison.Reaction(bytesReturned: 0, closedBy: .serverRST, elapsed: .zero) }
        defer { close(fd) }
        var limit = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = target.port.bigEndian
        address.sin_addr.s_addr = target.address.value.bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let timedOut = errno == EINPROGRESS || errno == ETIMEDOUT || errno == EAGAIN
            return ProbeComparison.Reaction(bytesReturned: 0, closedBy: timedOut ? .proberTimeout : .serverRST, elapsed: .zero)
        }
        let start = ContinuousClock.now
        let deadline = start + timeout
        var sent = 0
        while sent < payload.count {
            let n = payload[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }
            sent += n
        }
        var total = 0
        var first: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        var closedBy = ProbeComparison.ClosedBy.proberTimeout
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { break }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000) + 1
            let ready = poll(&poller, 1, milliseconds)
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else { break }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                if first.count < ProbeComparison.Reaction.firstBytesKept {
                    first += buffer[..<min(n, ProbeComparison.Reaction.firstBytesKept - first.count)]
                }
                total += n
            } else if n == 0 {
                closedBy = .serverFIN
                break
            } else if errno != EINTR && errno != EAGAIN {
                closedBy = .serverRST
                break
            }
        }
        let elapsed = closedBy == .proberTimeout ? timeout : ContinuousClock.now - start
        return ProbeComparison.Reaction(bytesReturned: total, firstBytes: first, closedBy: closedBy, elapsed: elapsed)
    }
}

/// Slots the probe threads fill, each its own.
private final class ReactionSlots: @unchecked Sendable {
    private let lock = NSLock()
    private var slots: [ProbeComparison.Reaction?]

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    subscript(index: Int) -> ProbeComparison.Reaction? {
        get { lock.lock(); defer { lock.unlock() }; return slots[index] }
        set { lock.lock(); slots[index] = newValue; lock.unlock() }
    }

    /// Every slot, a missing reaction counted as a prober timeout.
    var values: [ProbeComparison.Reaction] {
        lock.lock()
        defer { lock.unlock() }
        return slots.map { $0 ?? ProbeComparison.Reaction(bytesReturned: 0, closedBy: .proberTimeout, elapsed: .zero) }
    }
}

private let outputLock = NSLock()

/// Prints one line to stdout and flushes it; lines from different threads never mix.
func say(_ line: String) {
    outputLock.lock()
    print(line)
    fflush(stdout)
    outputLock.unlock()
}
