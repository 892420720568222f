import Foundation
import RahaWire
#if canImport(Glibc)
import Glibc
#endif

/// Debian's unbound as a recursive resolver on 127.0.0.1, one instance per
/// call, with a temporary directory of its own (config, log file, pid file):
/// the resolver a DNS tunnel's client talks to, which recurses to the
/// tunnel's authoritative server through a stub zone.
///
/// It runs in the foreground (`unbound -d -c CONF`) under a ManagedProcess,
/// so `stop()` (SIGTERM) or deinit ends it. No chroot, no user switch, no
/// DNSSEC validation (`module-config: "iterator"`: the test zones are
/// unsigned), and the names' top-level domains (such as `test.`, which
/// unbound otherwise answers itself as a locally served zone) are let through
/// with `local-zone: "TLD." nodefault` and `domain-insecure`.
/// `init` returns once it answers a query on its port.
final class Unbound: @unchecked Sendable {
    /// A zone whose queries go to `server`, an authoritative server given as
    /// unbound's `stub-addr` writes it: "127.0.0.1@5300".
    struct StubZone: Sendable {
        var zone: String
        var server: String
        init(zone: String, server: String) {
            self.zone = zone
            self.server = server
        }
    }

    let process: ManagedProcess
    /// DNS over UDP and TCP on 127.0.0.1.
    let port: UInt16
    /// DNS over TLS on 127.0.0.1, when a certificate was given.
    let tlsPort: UInt16?
    /// DNS over HTTPS (HTTP/2, path /dns-query) on 127.0.0.1, when a certificate was given.
    let httpsPort: UInt16?
    let directory: URL
    /// The config unbound runs with (for failure messages).
    let config: String

    /// Writes the config, checks it with `unbound-checkconf`, starts unbound
    /// on free ports and waits until it answers on `port` (and, with a
    /// certificate, until `tlsPort` accepts connections).
    init(stubZones: [StubZone], qnameMinimisation: Bool = true,
         tlsCertificate: (certPath: String, keyPath: String)? = nil, logQueries: Bool = false) throws {
        let unbound = try Paths.tool("unbound", package: "unbound")
        let directory = try Paths.temporaryDirectory("unbound")
        ProcessRegistry.shared.removeAtExit(directory.path)
        let port = try Ports.free()
        let tlsPort = try tlsCertificate.map { _ in try Ports.free() }
        let httpsPort = try tlsCertificate.map { _ in try Ports.free() }
        let config = Self.config(directory: directory.path, port: port, tlsPort: tlsPort, httpsPort: httpsPort, tlsCertificate: tlsCertificate,
                                 qnameMinimisation: qnameMinimisation, logQueries: logQueries, stubZones: stubZones)
        let file = directory.appendingPathComponent("unbound.conf")
        try Data(config.utf8).write(to: file)
        if let checker = try? Paths.tool("unbound-checkconf", package: "unbound") {
            let check = try runCommand("unbound-checkconf", checker, [file.path])
            guard check.status == 0 else {
                throw TestFailure("unbound-checkconf rejects the test config (status \(check.status)):\n\(check.output)\nConfig:\n\(config)")
            }
        }
        let process = try ManagedProcess("unbound", unbound, ["-d", "-c", file.path])
        self.process = process
        self.port = port
        self.tlsPort = tlsPort
        self.httpsPort = httpsPort
        self.directory = directory
        self.config = config
        try waitUntilAnswering()
        if let tlsPort { try Ports.waitUntilAccepting(tlsPort, process: process) }
        if let httpsPort { try Ports.waitUntilAccepting(httpsPort, process: process) }
    }

    deinit { process.stop() }

    func stop() { process.stop() }

    /// The names of the queries clients sent, as unbound logged them (with
    /// `logQueries`: lines "info: CLIENT NAME. TYPE CLASS"), for one type.
    func queriedNames(type: String) -> [String] {
        log.split(separator: "\n").compactMap { line in
            let words = line.split(separator: " ")
            guard let info = words.firstIndex(of: "info:"), words.count == info + 5, words[info + 3] == type else { return nil }
            return String(words[info + 2])
        }
    }

    /// unbound's log file, and what it wrote to stdout and stderr (for failure messages).
    var log: String {
        let file = (try? String(contentsOf: directory.appendingPathComponent("unbound.log"), encoding: .utf8)) ?? ""
        return file + process.output
    }

    /// One query to this resolver over UDP; nil when no answer came within `timeout`.
    func query(_ name: String, type: DNSRecordType, class queryClass: DNSClass = .internet,
               timeout: TimeInterval = 5) throws -> DNSMessage? {
        var message = DNSMessage.query(id: UInt16.random(in: 0...UInt16.max), name: try DNSName(name), type: type,
                                       udpPayloadSize: 1232)
        message.questions[0].questionClass = queryClass
        return try DNSOverUDP.exchange(message, port: port, timeout: timeout)
    }

    /// Polls with `version.bind CH TXT` (which unbound answers itself) until
    /// an answer comes back, bounded by the hang guard.
    private func waitUntilAnswering() throws {
        let deadline = Date().addingTimeInterval(ManagedProcess.hangGuard)
        while Date() < deadline {
            guard process.isRunning else {
                throw TestFailure("unbound exited before answering on 127.0.0.1:\(port).\nCommand: \(process.commandLine)\nLog:\n\(log)\nConfig:\n\(config)")
            }
            if (try? query("version.bind", type: .txt, class: .chaos, timeout: 0.2)) != nil { return }
            usleep(20_000)
        }
        throw TestFailure("unbound did not answer on 127.0.0.1:\(port) within \(Int(ManagedProcess.hangGuard)) s (hang guard).\nLog:\n\(log)")
    }

    static func config(directory: String, port: UInt16, tlsPort: UInt16?, httpsPort: UInt16? = nil,
                       tlsCertificate: (certPath: String, keyPath: String)?,
                       qnameMinimisation: Bool, logQueries: Bool = false, stubZones: [StubZone]) -> String {
        var lines = [
            "server:",
            "  directory: \"\(directory)\"",
            "  interface: 127.0.0.1@\(port)",
        ]
        if let tlsPort, let tlsCertificate {
            lines += [
                "  interface: 127.0.0.1@\(tlsPort)",
                "  tls-port: \(tlsPort)",
                "  tls-service-key: \"\(tlsCertificate.keyPath)\"",
                "  tls-service-pem: \"\(tlsCertificate.certPath)\"",
            ]
            if let httpsPort {
                lines += ["  interface: 127.0.0.1@\(httpsPort)", "  https-port: \(httpsPort)", "  http-endpoint: \"/dns-query\""]
            }
        }
        lines += [
            "  port: \(port)",
            "  do-ip6: no",
            "  access-control: 127.0.0.0/8 allow",
            "  do-not-query-localhost: no",
            "  username: \"\"",
            "  chroot: \"\"",
            "  do-daemonize: no",
            "  use-syslog: no",
            "  logfile: \"\(directory)/unbound.log\"",
            "  pidfile: \"\(directory)/unbound.pid\"",
            "  verbosity: 1",
            "  num-threads: 1",
            "  qname-minimisation: \(qnameMinimisation ? "yes" : "no")",
            "  log-queries: \(logQueries ? "yes" : "no")",
            "  module-config: \"iterator\"",
        ]
        // unbound serves some top-level domains itself (test., invalid., onion.,
        // home.arpa. ...): let the stub zones' ones through, unvalidated.
        var seen = Set<String>()
        for stub in stubZones {
            let zone = stub.zone.hasSuffix(".") ? String(stub.zone.dropLast()) : stub.zone
            guard let tld = zone.split(separator: ".").last.map(String.init), seen.insert(tld).inserted else { continue }
            lines += ["  local-zone: \"\(tld).\" nodefault", "  domain-insecure: \"\(tld).\""]
        }
        for stub in stubZones {
            let zone = stub.zone.hasSuffix(".") ? stub.zone : stub.zone + "."
            lines += ["stub-zone:", "  name: \"\(zone)\"", "  stub-addr: \(stub.server)"]
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// One DNS exchange over UDP with a server on 127.0.0.1 (a fresh socket each
/// time; answers with another id are skipped).
enum DNSOverUDP {
    static func exchange(_ message: DNSMessage, port: UInt16, timeout: TimeInterval) throws -> DNSMessage? {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = Ports.loopback(port)
        let bytes = try message.serialize()
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, sockaddrPointer, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        guard sent == bytes.count else { throw TestFailure("sendto 127.0.0.1:\(port): \(String(cString: strerror(errno)))") }
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 65535)
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return nil }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(max(1, left * 1000)))
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { return nil }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            // ECONNREFUSED: nothing listens (yet).
            guard n > 0 else { return nil }
            guard let reply = try? DNSMessage(parsing: Array(buffer[..<n])), reply.id == message.id else { continue }
            return reply
        }
    }
}
