import CNetfilterQueue
import Foundation
import RahaLab
#if canImport(Glibc)
import Glibc
#endif

/// One NFQUEUE queue bound to one censor: packets are received on the queue's netlink
/// socket by a thread of its own, judged in order and given their verdicts. A `reset`
/// verdict drops the packet and sends `Packet.resetPackets` through a raw IPv4 socket.
///
/// The censor is touched only by the loop thread; the counters are read by others
/// under a lock. The censor's events are printed as they are made, one line each
/// ("raha-censor: event ACTION SERVER REASON"); its probe jobs go to the `Prober`, whose
/// results the loop hands back to the censor before each verdict, and at least every
/// `resultPollInterval` when no packets come.
final class VerdictLoop: @unchecked Sendable {
    struct Counts {
        var accepted = 0
        var dropped = 0
        var reset = 0
    }

    let queueNumber: UInt16
    private var censor: any Censor
    private let prober: Prober
    private let resultPollInterval: Int32 = 200   // milliseconds
    private let startTime = ContinuousClock.now
    private let handle: OpaquePointer
    private var queueHandle: OpaquePointer?
    private let netlinkDescriptor: Int32
    private let rawSocket: Int32
    private let lock = NSLock()
    private var _counts = Counts()
    private var _failure: String?

    /// Opens the queue (full packets copied to userspace) and a raw socket for resets.
    init(queue: UInt16, censor: any Censor, prober: Prober = Prober()) throws {
        queueNumber = queue
        self.censor = censor
        self.prober = prober
        guard let handle = nfq_open() else {
            throw CensorError("cannot open a netfilter queue handle: \(String(cString: strerror(errno))) (is the nfnetlink_queue module available?)")
        }
        self.handle = handle
        // A no-op on kernels since 3.8; older ones need it. Failure is not fatal.
        _ = nfq_bind_pf(handle, UInt16(AF_INET))
        let raw = socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(IPPROTO_RAW))
        guard raw >= 0 else {
            let reason = String(cString: strerror(errno))
            nfq_close(handle)
            throw CensorError("cannot open a raw IPv4 socket for injecting resets: \(reason)")
        }
        rawSocket = raw
        netlinkDescriptor = nfq_fd(handle)

        let context = Unmanaged.passUnretained(self).toOpaque()
        errno = 0
        guard let queueHandle = nfq_create_queue(handle, queue, { queueHandle, _, data, context in
            guard let queueHandle, let data, let context else { return -1 }
            let loop = Unmanaged<VerdictLoop>.fromOpaque(context).takeUnretainedValue()
            return loop.judge(queueHandle, data)
        }, context) else {
            let reason = errno == 0 ? "refused" : String(cString: strerror(errno))
            close(raw)
            nfq_close(handle)
            throw CensorError("cannot bind NFQUEUE queue \(queue): \(reason) (is another program, e.g. another raha-censor, bound to it?)")
        }
        self.queueHandle = queueHandle
        guard nfq_set_mode(queueHandle, UInt8(NFQNL_COPY_PACKET.rawValue), 0xffff) >= 0 else {
            let reason = String(cString: strerror(errno))
            nfq_destroy_queue(queueHandle)
            close(raw)
            nfq_close(handle)
            throw CensorError("cannot set copy mode on NFQUEUE queue \(queue): \(reason)")
        }
        // Room for bursts: the kernel drops (and reports ENOBUFS) when the socket is full.
        _ = nfq_set_queue_maxlen(queueHandle, 4096)
        var bufferSize: Int32 = 4 << 20
        _ = setsockopt(netlinkDescriptor, SOL_SOCKET, SO_RCVBUFFORCE, &bufferSize, socklen_t(MemoryLayout<Int32>.size))
    }

    var counts: Counts {
        lock.lock()
        defer { lock.unlock() }
        return _counts
    }

    /// Why the loop stopped, if it did.
    var failure: String? {
        lock.lock()
        defer { lock.unlock() }
        return _failure
    }

    /// Starts the receive loop on a thread of its own; it runs until the process ends.
    func start() {
        let thread = Thread { [self] in run() }
        thread.name = "raha-censor queue \(queueNumber)"
        thread.start()
    }

    private func run() {
        let size = 256 * 1024
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            var poller = pollfd(fd: netlinkDescriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, resultPollInterval)
            takeProbeResults()
            if ready == 0 || (ready < 0 && errno == EINTR) { continue }
            let n = recv(netlinkDescriptor, buffer, size, 0)
            if n < 0 {
                // ENOBUFS: the kernel had to drop queued packets (they are lost, not stuck).
                if errno == EINTR || errno == ENOBUFS { continue }
                let reason = String(cString: strerror(errno))
                lock.lock()
                _failure = "recv on the queue failed: \(reason)"
                lock.unlock()
                FileHandle.standardError.write(Data("raha-censor: recv on the queue failed: \(reason)\n".utf8))
                return
            }
            _ = nfq_handle_packet(handle, buffer.assumingMemoryBound(to: CChar.self), Int32(n))
        }
    }

    /// The callback's work for one queued packet: returns what nfq_handle_packet expects.
    private func judge(_ queueHandle: OpaquePointer, _ data: OpaquePointer) -> Int32 {
        let id = raha_nfq_packet_id(data)
        var payload: UnsafeMutablePointer<UInt8>?
        let length = nfq_get_payload(data, &payload)
        let bytes: [UInt8] = if length > 0, let payload {
            Array(UnsafeBufferPointer(start: payload, count: Int(length)))
        } else {
            []
        }
        takeProbeResults()
        let verdict = censor.inspect(bytes: bytes, at: ContinuousClock.now - startTime)
        let result = nfq_set_verdict(queueHandle, id, UInt32(verdict == .accept ? NF_ACCEPT : NF_DROP), 0, nil)
        // Probes start only once the packet that prompted them is on its way: a replay
        // must never reach the server before the original (a replay filter would then
        // refuse the real client).
        for job in censor.takeProbeJobs() { prober.submit(job) }
        printEvents()
        if verdict == .reset, let packet = try? Packet(parsing: bytes) {
            for segment in packet.resetPackets { inject(segment) }
        }
        lock.lock()
        switch verdict {
        case .accept: _counts.accepted += 1
        case .drop: _counts.dropped += 1
        case .reset: _counts.reset += 1
        }
        lock.unlock()
        return result
    }

    /// Hands the prober's finished results to the censor.
    private func takeProbeResults() {
        let results = prober.takeResults()
        guard !results.isEmpty else { return }
        let now = ContinuousClock.now - startTime
        for result in results { censor.recordProbeResults(result, at: now) }
        printEvents()
    }

    private func printEvents() {
        for event in censor.takeEvents() { say("raha-censor: event \(event)") }
    }

    /// Sends a complete IPv4 packet (header included) to its destination address.
    private func inject(_ segment: [UInt8]) {
        guard segment.count >= 20 else { return }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        // Bytes 16..<20 are the destination, already in network order.
        address.sin_addr.s_addr = segment.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16, as: UInt32.self) }
        let sent = segment.withUnsafeBytes { bytes in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(rawSocket, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        if sent < 0 {
            FileHandle.standardError.write(Data("raha-censor: injecting a reset failed: \(String(cString: strerror(errno)))\n".utf8))
        }
    }
}
