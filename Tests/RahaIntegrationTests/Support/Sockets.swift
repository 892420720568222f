import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Free loopback ports and a small blocking TCP client with bounded waits.
enum Ports {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var handedOut = Set<UInt16>()

    /// A port free for both TCP and UDP on 127.0.0.1, never handed out
    /// before in this run. Drawn below the kernel's ephemeral range so that
    /// outgoing connections do not take it before the server binds it.
    static func free() throws -> UInt16 {
        let low = ephemeralLow()
        let range: ClosedRange<UInt16> = 20000...max(20999, min(UInt16(clamping: low - 1), 32767))
        lock.lock()
        defer { lock.unlock() }
        for _ in 0..<500 {
            let port = UInt16.random(in: range)
            if handedOut.contains(port) { continue }
            if canBind(port, type: SOCK_STREAM) && canBind(port, type: SOCK_DGRAM) {
                handedOut.insert(port)
                return port
            }
        }
        throw TestFailure("no free TCP+UDP port on 127.0.0.1 in \(range)")
    }

    private static func ephemeralLow() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8),
              let first = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first,
              let low = Int(first) else { return 32768 }
        return low
    }

    private static func canBind(_ port: UInt16, type: __socket_type) -> Bool {
        let fd = socket(AF_INET, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return bind(fd, toLoopback: port)
    }

    /// Binds a socket to 127.0.0.1:port; false (errno set) when that fails.
    static func bind(_ fd: Int32, toLoopback port: UInt16) -> Bool {
        var address = loopback(port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    static func loopback(_ port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    /// True when something accepts TCP connections on 127.0.0.1:port.
    static func isAccepting(_ port: UInt16) -> Bool {
        guard let socket = try? RawTCP(port: port, connectTimeout: 1) else { return false }
        socket.close()
        return true
    }

    /// Polls until 127.0.0.1:port accepts connections (bounded by the hang
    /// guard), failing early with its output if `process` exits.
    static func waitUntilAccepting(_ port: UInt16, process: ManagedProcess? = nil,
                                   timeout: TimeInterval = ManagedProcess.hangGuard) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if isAccepting(port) { return }
            if let process, !process.isRunning {
                throw TestFailure("\(process.name) exited before listening on 127.0.0.1:\(port).\nCommand: \(process.commandLine)\nOutput:\n\(process.output)")
            }
            usleep(20_000)
        }
        throw TestFailure("nothing listened on 127.0.0.1:\(port) within \(Int(timeout)) s (hang guard)"
            + (process.map { ".\nCommand: \($0.commandLine)\nOutput:\n\($0.output)" } ?? ""))
    }
}

/// How a read from a TCP connection ended.
enum ReadEnding: Equatable, CustomStringConvertible {
    case eof        // orderly close (FIN)
    case reset      // ECONNRESET
    case timeout    // still open when the bounded wait ran out
    case error(Int32)

    var description: String {
        switch self {
        case .eof: return "EOF"
        case .reset: return "reset"
        case .timeout: return "still open (timeout)"
        case .error(let e): return "error \(e) (\(String(cString: strerror(e))))"
        }
    }
}

/// A blocking TCP connection to 127.0.0.1 with bounded waits, for speaking
/// raw SOCKS5, HTTP or Shadowsocks bytes at a server.
final class RawTCP: @unchecked Sendable {
    private(set) var fd: Int32

    /// Takes over an already connected socket.
    init(adopting fd: Int32) { self.fd = fd }

    /// This end's port (the client address a server sees).
    var localPort: UInt16 {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return UInt16(bigEndian: address.sin_port)
    }

    /// Connects to 127.0.0.1:port, from `source` (another loopback address, such as 127.0.0.2) when given.
    init(port: UInt16, from source: String? = nil, connectTimeout: TimeInterval = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket(): \(String(cString: strerror(errno)))") }
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            guard inet_pton(AF_INET, source, &local.sin_addr) == 1 else { close(); throw TestFailure("not an IPv4 address: \(source)") }
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else { let e = errno; close(); throw TestFailure("bind to \(source): \(String(cString: strerror(e)))") }
        }
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        var address = Ports.loopback(port)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if result != 0 {
            guard errno == EINPROGRESS else { let e = errno; close(); throw TestFailure("connect to 127.0.0.1:\(port): \(String(cString: strerror(e)))") }
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&pfd, 1, Int32(connectTimeout * 1000)) == 1 else { close(); throw TestFailure("connect to 127.0.0.1:\(port) timed out") }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            guard error == 0 else { close(); throw TestFailure("connect to 127.0.0.1:\(port): \(String(cString: strerror(error)))") }
        }
        _ = fcntl(fd, F_SETFL, flags)
    }

    deinit { close() }

    func close() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 { if errno == EINTR { continue }; throw TestFailure("send: \(String(cString: strerror(errno)))") }
            sent += n
        }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Half-closes: no more bytes from us.
    func shutdownOutput() { shutdown(fd, Int32(SHUT_WR)) }

    /// One read of at most `max` bytes within `timeout`: the bytes, or how the stream ended.
    func receive(max: Int = 65536, timeout: TimeInterval) -> Result<[UInt8], ReadEndingError> {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return .failure(ReadEndingError(ending: .timeout)) }
            let ready = poll(&pfd, 1, Int32(Swift.max(1, left * 1000)))
            if ready < 0 && errno == EINTR { continue }
            if ready == 0 { return .failure(ReadEndingError(ending: .timeout)) }
            var buffer = [UInt8](repeating: 0, count: max)
            let n = recv(fd, &buffer, max, 0)
            if n > 0 { return .success(Array(buffer[0..<n])) }
            if n == 0 { return .failure(ReadEndingError(ending: .eof)) }
            if errno == EINTR || errno == EAGAIN { continue }
            return .failure(ReadEndingError(ending: errno == ECONNRESET ? .reset : .error(errno)))
        }
    }

    /// Reads exactly `count` bytes, or fails saying what came and how the stream ended.
    func read(exactly count: Int, timeout: TimeInterval = ManagedProcess.hangGuard) throws -> [UInt8] {
        var out: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        while out.count < count {
            switch receive(max: count - out.count, timeout: deadline.timeIntervalSinceNow) {
            case .success(let bytes): out += bytes
            case .failure(let end):
                throw TestFailure("expected \(count) bytes, got \(out.count) (\(out.map { String(format: "%02x", $0) }.joined())) and then \(end.ending)")
            }
        }
        return out
    }

    /// Reads until the peer closes or resets (or the wait runs out): every byte, and how it ended.
    func readToEnd(timeout: TimeInterval = ManagedProcess.hangGuard) -> (bytes: [UInt8], ending: ReadEnding) {
        var out: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            switch receive(timeout: deadline.timeIntervalSinceNow) {
            case .success(let bytes): out += bytes
            case .failure(let end): return (out, end.ending)
            }
        }
    }
}

struct ReadEndingError: Error { let ending: ReadEnding }

/// Runs blocking closures on their own threads at once and returns their results in order.
func inParallel<T>(_ work: [() -> T]) -> [T] {
    let box = ParallelResults<T>(work.count)
    let group = DispatchGroup()
    for (index, job) in work.enumerated() {
        group.enter()
        let thread = Thread {
            let value = job()
            box.lock.lock()
            box.results[index] = value
            box.lock.unlock()
            group.leave()
        }
        thread.start()
    }
    group.wait()
    return box.results.map { $0! }
}

private final class ParallelResults<T>: @unchecked Sendable {
    let lock = NSLock()
    var results: [T?]
    init(_ count: Int) { results = [T?](repeating: nil, count: count) }
}

/// A TCP listener on 127.0.0.1 that never accepts: the kernel completes
/// handshakes into its backlog, and then nothing is ever answered. A
/// stand-in for a bridge whose traffic a censor silently drops.
final class SilentListener: @unchecked Sendable {
    let port: UInt16
    private var fd: Int32

    init() throws {
        port = try Ports.free()
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket(): \(String(cString: strerror(errno)))") }
        guard Ports.bind(fd, toLoopback: port), listen(fd, 64) == 0 else {
            let reason = String(cString: strerror(errno))
            Glibc.close(fd)
            throw TestFailure("cannot listen on 127.0.0.1:\(port): \(reason)")
        }
    }

    deinit { Glibc.close(fd) }
}
