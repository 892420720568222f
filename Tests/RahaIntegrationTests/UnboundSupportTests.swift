import Foundation
import RahaWire
import Testing
#if canImport(Glibc)
import Glibc
#endif

extension RahaIntegration {
    /// The Unbound test helper's recipe: a TXT query for a name under a stub
    /// zone goes through unbound (qname minimisation on, as real resolvers do)
    /// to a tiny authoritative server on loopback, and its answer comes back.
    @Suite("Unbound resolver helper")
    struct UnboundSupport {
        @Test("TXT through unbound's stub zone, qname minimisation on")
        func txtThroughStubZone() throws {
            let authority = try FakeAuthoritative(zone: "t.test", text: "raha-unbound-ok")
            defer { authority.stop() }
            let unbound = try Unbound(stubZones: [.init(zone: "t.test", server: "127.0.0.1@\(authority.port)")])
            defer { unbound.stop() }

            let name = "abc123.def456.t.test"
            let answer = try unbound.query(name, type: .txt)
            let seen = authority.questions
            let reply = try #require(answer, "no answer from unbound.\nAuthority saw: \(seen)\nLog:\n\(unbound.log)")
            #expect(reply.rcode == .noError, "rcode \(reply.rcode); authority saw \(seen)\nLog:\n\(unbound.log)")
            let texts = reply.answers.compactMap { record -> String? in
                if case .txt(let strings) = record.data { return String(decoding: DNSTXT.join(strings), as: UTF8.self) }
                return nil
            }
            #expect(texts == ["raha-unbound-ok"], "answers \(reply.answers); authority saw \(seen)")
            // The full name arrived as a TXT query ...
            #expect(seen.contains { $0.name == name && $0.type == .txt }, "authority saw \(seen)")
            // ... after a minimised one for a shorter name under the zone.
            #expect(seen.contains { $0.name == "def456.t.test" && $0.type != .txt },
                    "no minimised query: authority saw \(seen)")
        }

        @Test("qname minimisation off: the full name is the first question")
        func minimisationOff() throws {
            let authority = try FakeAuthoritative(zone: "t.test", text: "raha-unbound-ok")
            defer { authority.stop() }
            let unbound = try Unbound(stubZones: [.init(zone: "t.test", server: "127.0.0.1@\(authority.port)")],
                                      qnameMinimisation: false)
            defer { unbound.stop() }
            let reply = try unbound.query("abc.def.t.test", type: .txt)
            #expect(reply?.rcode == .noError, "authority saw \(authority.questions)\nLog:\n\(unbound.log)")
            #expect(authority.questions.first.map { $0.name == "abc.def.t.test" && $0.type == .txt } == true,
                    "authority saw \(authority.questions)")
        }

        @Test("DNS over TLS on tlsPort when given a certificate")
        func dnsOverTLS() throws {
            let authority = try FakeAuthoritative(zone: "t.test", text: "raha-unbound-dot")
            defer { authority.stop() }
            let certificate = try TestCertificate.make(for: "resolver.test")
            let unbound = try Unbound(stubZones: [.init(zone: "t.test", server: "127.0.0.1@\(authority.port)")],
                                      tlsCertificate: (certificate.certificateFile, certificate.keyFile))
            defer { unbound.stop() }
            let tlsPort = try #require(unbound.tlsPort)
            let dig = try Paths.tool("dig", package: "dnsutils")
            let result = try runCommand("dig +tls", dig, ["+tls", "+short", "+tries=1", "+time=5", "-p", "\(tlsPort)", "@127.0.0.1",
                                                          "xyz.t.test", "TXT"])
            #expect(result.status == 0 && result.stdoutText.contains("\"raha-unbound-dot\""),
                    "dig +tls: \(result.output)\nauthority saw \(authority.questions)\nLog:\n\(unbound.log)")
        }
    }
}

/// A tiny authoritative server for one zone on a UDP port of 127.0.0.1: TXT
/// `text` for any TXT question under the zone, an empty NOERROR answer (with
/// the zone's SOA) for other types, REFUSED outside the zone. Records every
/// question it gets (lower-cased name, type) in order.
final class FakeAuthoritative: @unchecked Sendable {
    struct Question: CustomStringConvertible {
        let name: String
        let type: DNSRecordType
        var description: String { "\(name) \(type)" }
    }

    let port: UInt16
    private let fd: Int32
    private let zone: DNSName
    private let text: String
    private let lock = NSLock()
    private var seen: [Question] = []
    private var stopped = false

    init(zone: String, text: String) throws {
        self.zone = try DNSName(zone)
        self.text = text
        port = try Ports.free()
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        guard Ports.bind(fd, toLoopback: port) else {
            close(fd)
            throw TestFailure("bind 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
        let thread = Thread { [self] in serve() }
        thread.name = "fake authoritative DNS"
        thread.start()
    }

    var questions: [Question] { lock.lock(); defer { lock.unlock() }; return seen }

    func stop() {
        lock.lock()
        let wasStopped = stopped
        stopped = true
        lock.unlock()
        if !wasStopped { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    deinit { stop(); close(fd) }

    private var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }

    private func serve() {
        var buffer = [UInt8](repeating: 0, count: 65535)
        while !isStopped {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 100) > 0 else { continue }
            var peer = sockaddr_in()
            var peerLength = socklen_t(MemoryLayout<sockaddr_in>.size)
            let n = withUnsafeMutablePointer(to: &peer) { peerPointer in
                peerPointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
                    buffer.withUnsafeMutableBytes { recvfrom(fd, $0.baseAddress, $0.count, 0, sockaddrPointer, &peerLength) }
                }
            }
            guard n > 0, let query = try? DNSMessage(parsing: Array(buffer[..<n])),
                  let reply = try? answer(query).serialize() else { continue }
            _ = withUnsafePointer(to: &peer) { peerPointer in
                peerPointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
                    reply.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, sockaddrPointer, peerLength) }
                }
            }
        }
    }

    private func answer(_ query: DNSMessage) throws -> DNSMessage {
        guard let question = query.questions.first else { return .response(to: query, rcode: .formatError) }
        let name = question.name.description.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "."))
        lock.lock()
        seen.append(Question(name: name, type: question.type))
        lock.unlock()
        let zoneText = zone.description.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "."))
        guard name == zoneText || name.hasSuffix("." + zoneText) else { return .response(to: query, rcode: .refused) }
        if question.type == .txt {
            return .response(to: query, answers: [DNSRecord(name: question.name, ttl: 0, data: .txt(DNSTXT.split(Array(text.utf8))))])
        }
        let soa = DNSSOA(primaryServer: try DNSName("ns." + zoneText), responsibleMailbox: try DNSName("admin." + zoneText),
                         serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum: 0)
        return .response(to: query, authorities: [DNSRecord(name: zone, ttl: 0, data: .soa(soa))])
    }
}
