import Foundation
import Glibc
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing
@testable import RahaProxy
@testable import RahaTransport
@testable import RahaWire

/// A future's result, once it has one (EmbeddedEventLoop: no waiting).
final class Outcome<T>: @unchecked Sendable {
    private(set) var result: Result<T, Error>?
    init(_ future: EventLoopFuture<T>) { future.whenComplete { self.result = $0 } }
    var value: T? { try? result?.get() }
    var error: Error? { if case .failure(let error)? = result { return error } else { return nil } }
}

private let probeURL = "http://127.0.0.1:8080/generate_204"
private let statusLine = "HTTP/1.1 204 No Content\r\n"

@Suite("ConnectivityProbe")
struct ConnectivityProbeTests {
    @Test("ProbeURL: host, port, path and Host header; https and a missing host are refused saying what to give")
    func parsesURLs() throws {
        let url = try ProbeURL(parsing: probeURL)
        #expect(url.endpoint.description == "127.0.0.1:8080")
        #expect(url.path == "/generate_204" && url.hostHeader == "127.0.0.1:8080")
        let bare = try ProbeURL(parsing: "http://connectivitycheck.gstatic.com")
        #expect(bare.endpoint == Endpoint(host: .domain("connectivitycheck.gstatic.com"), port: 80) && bare.path == "/")
        #expect(throws: TransportFailure.self) { try ProbeURL(parsing: "https://example.org/") }
        #expect(throws: TransportFailure.self) { try ProbeURL(parsing: "http:///path") }
    }

    @Test("A probe sends one GET (Host, Connection: close, a browser User-Agent), succeeds on the status line, and closes the stream")
    func succeedsOnStatusLine() throws {
        let loop = EmbeddedEventLoop()
        let dialer = FakeDialer(loop: loop)
        let outcome = Outcome(ConnectivityProbe(url: try ProbeURL(parsing: probeURL)).run(through: dialer, on: loop))
        loop.run()
        #expect(dialer.dialed.map(\.description) == ["127.0.0.1:8080"])
        let stream = try #require(dialer.streams.first)
        let request = String(decoding: try outbound(stream), as: UTF8.self)
        #expect(request.hasPrefix("GET /generate_204 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"), "\(request)")
        #expect(request.contains("\r\nConnection: close\r\n") && request.contains("\r\nUser-Agent: Mozilla/5.0 ") && request.hasSuffix("\r\n\r\n"))
        #expect(outcome.result == nil, "succeeded before any answer")
        try stream.writeInbound(ByteBuffer(string: "HTTP/1.1 204 No"))
        loop.run()
        #expect(outcome.result == nil, "succeeded on half a status line")
        try stream.writeInbound(ByteBuffer(string: " Content\r\n"))
        loop.run()
        #expect(outcome.value != nil, "\(String(describing: outcome.error))")
        #expect(!stream.isActive, "the probe left its stream open")
    }

    @Test("Failures say why, privacy-safe: refused, not HTTP, closed without an answer, timed out after the deadline")
    func failureReasons() throws {
        let loop = EmbeddedEventLoop()
        let url = try ProbeURL(parsing: probeURL)
        func reason(_ outcome: Outcome<TimeAmount>) -> String { (outcome.error as? TransportFailure)?.reason ?? "\(String(describing: outcome.result))" }

        let refusing = FakeDialer(loop: loop)
        refusing.fail = IOError(errnoCode: ECONNREFUSED, reason: "connect")
        let refused = Outcome(ConnectivityProbe(url: url).run(through: refusing, on: loop))
        loop.run()
        #expect(reason(refused) == "connection refused")

        let dialer = FakeDialer(loop: loop)
        let garbage = Outcome(ConnectivityProbe(url: url).run(through: dialer, on: loop))
        loop.run()
        try dialer.streams[0].writeInbound(ByteBuffer(string: "SSH-2.0-OpenSSH\r\n"))
        loop.run()
        #expect(reason(garbage).hasPrefix("the answer was not HTTP"))

        let closed = Outcome(ConnectivityProbe(url: url).run(through: dialer, on: loop))
        loop.run()
        try dialer.streams[1].close().wait()
        loop.run()
        #expect(reason(closed) == "closed without an answer")

        let silent = Outcome(ConnectivityProbe(url: url, deadline: .milliseconds(1500)).run(through: dialer, on: loop))
        loop.run()
        loop.advanceTime(by: .milliseconds(1499))
        #expect(silent.result == nil)
        loop.advanceTime(by: .milliseconds(1))
        #expect(reason(silent) == "timed out after 1.5 s")
        #expect(!dialer.streams[2].isActive, "the timed-out probe left its stream open")
    }
}

@Suite("SmartDialer driver")
struct SmartDialerDriverTests {
    private func smart(_ dialers: [FakeDialer], on loop: EmbeddedEventLoop, memory: SmartDialer.Memory? = nil) throws -> SmartDialer {
        SmartDialer(candidates: dialers.enumerated().map { .init(dialer: $1, fingerprint: "key-\($0)") },
                    configuration: .init(probe: ConnectivityProbe(url: try ProbeURL(parsing: probeURL))),
                    memory: memory, eventLoop: loop, logger: Logger(label: "test"))
    }

    /// A path memory in a directory of its own, removed afterwards.
    private func withStore(_ body: (PathMemory) throws -> Void) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("raha-smart-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        try body(PathMemory(directory: directory))
    }

    @Test("The winner remembered for this network is probed first, and a new winner is written down for it")
    func remembersPerNetwork() throws { try withStore { store in
        try store.remember("key-1", on: "home")
        let loop = EmbeddedEventLoop()
        let first = FakeDialer(loop: loop), second = FakeDialer(loop: loop)
        let dialer = try smart([first, second], on: loop, memory: .init(store: store, network: { "home" }))
        let report = Outcome(dialer.start())
        loop.run()
        #expect(first.dialed.isEmpty && second.dialed.count == 1, "the remembered candidate was not probed first")
        second.fail = IOError(errnoCode: ECONNRESET, reason: "connect")
        try second.streams[0].close().wait() // its probe fails: the other candidate starts at once
        loop.run()
        try answerProbe(first, on: loop)
        guard case .using? = report.value else { Issue.record("\(String(describing: report.result))"); return }
        #expect(store.winner(on: "home") == "key-0")
        dialer.stop()
    } }

    @Test("Moving to another network starts a race at once, with the winner remembered for that network first")
    func followsANetworkChange() throws { try withStore { store in
        try store.remember("key-1", on: "cafe")
        let loop = EmbeddedEventLoop()
        let first = FakeDialer(loop: loop), second = FakeDialer(loop: loop)
        let network = NIOLockedValueBox("home")
        // The default configuration looks at the network every 10 s.
        let dialer = try smart([first, second], on: loop, memory: .init(store: store, network: { network.withLockedValue { $0 } }))
        let report = Outcome(dialer.start())
        loop.run()
        try answerProbe(first, on: loop)
        guard case .using? = report.value else { Issue.record("\(String(describing: report.result))"); return }
        #expect(first.dialed.count == 1 && second.dialed.isEmpty)
        loop.advanceTime(by: .seconds(10))
        #expect(first.dialed.count == 1 && second.dialed.isEmpty, "a race started with no change of network")
        network.withLockedValue { $0 = "cafe" }
        loop.advanceTime(by: .seconds(10))
        #expect(second.dialed.count == 1 && first.dialed.count == 1, "the winner remembered for the new network was not probed first")
        dialer.stop()
    } }

    /// Answers the newest stream of `dialer` (a probe) with a status line.
    private func answerProbe(_ dialer: FakeDialer, on loop: EmbeddedEventLoop) throws {
        let stream = try #require(dialer.streams.last)
        _ = try outbound(stream)
        try stream.writeInbound(ByteBuffer(string: statusLine))
        loop.run()
    }

    @Test("An earlier candidate failing starts the next at once; streams go through the winner; a failed stream re-races and is retried once")
    func racesAndRetries() throws {
        let loop = EmbeddedEventLoop()
        let first = FakeDialer(loop: loop), second = FakeDialer(loop: loop)
        first.fail = IOError(errnoCode: ECONNREFUSED, reason: "connect")
        let dialer = try smart([first, second], on: loop)
        let report = Outcome(dialer.start())
        loop.run()
        #expect(second.dialed.count == 1, "the second candidate was not probed at once after the first failed")
        try answerProbe(second, on: loop)
        guard case .using? = report.value else { Issue.record("first race: \(String(describing: report.result))"); return }

        let target = Endpoint(host: .domain("example.org"), port: 80)
        let stream = Outcome(dialer.dial(target, on: loop))
        loop.run()
        #expect(stream.value != nil && second.dialed.last == target)

        // The winner breaks and the first candidate works again: the stream waits for the new race and goes through it.
        second.fail = IOError(errnoCode: ECONNRESET, reason: "connect")
        first.fail = nil
        let retried = Outcome(dialer.dial(target, on: loop))
        loop.run()
        #expect(retried.result == nil, "the stream did not wait for the new race")
        try answerProbe(first, on: loop)
        #expect(retried.value != nil, "\(String(describing: retried.error))")
        #expect(first.dialed.last == target)
        dialer.stop()
    }

    @Test("Every candidate failing: the first race reports each reason, streams fail at once saying only message channels remain")
    func allFail() throws {
        let loop = EmbeddedEventLoop()
        let first = FakeDialer(loop: loop), second = FakeDialer(loop: loop)
        first.fail = IOError(errnoCode: ECONNREFUSED, reason: "connect")
        second.fail = IOError(errnoCode: ECONNRESET, reason: "connect")
        let dialer = try smart([first, second], on: loop)
        let report = Outcome(dialer.start())
        loop.run()
        #expect(report.value == .noneGotThrough([.init(label: "fake", reason: "connection refused"), .init(label: "fake", reason: "reset")]))
        #expect(report.value?.line.hasSuffix("Only message channels remain on this network (mail or DNS, when available).") == true)
        let stream = Outcome(dialer.dial(Endpoint(host: .domain("example.org"), port: 80), on: loop))
        loop.run()
        #expect(stream.error is NoTransportError, "\(String(describing: stream.result))")
        #expect(first.dialed.count == 1 && second.dialed.count == 1, "a stream was dialled through a blocked transport")
        dialer.stop()
    }
}
