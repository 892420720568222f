import Testing
@testable import RahaLab

private let client = IPv4Endpoint(IPv4Address(10, 200, 1, 2), 40_000)
private let bridge = IPv4Endpoint(IPv4Address(10, 200, 2, 2), 8388)
private let plainWeb = IPv4Endpoint(IPv4Address(10, 200, 2, 3), 80)
private let tlsWeb = IPv4Endpoint(IPv4Address(10, 200, 2, 3), 443)

private typealias Reaction = ProbeComparison.Reaction

/// What nginx does with a probe of garbage: "HTTP/1.1 400", then FIN, at once.
private let nginx400 = Reaction(bytesReturned: 157, firstBytes: Array("HTTP/1.1 400 Bad".utf8), closedBy: .serverFIN, elapsed: .milliseconds(2))
/// What a Shadowsocks server does: nothing, until the prober gives up.
private let silent = Reaction(bytesReturned: 0, closedBy: .proberTimeout, elapsed: .seconds(8))

private func feed(_ censor: inout ActiveProbeCensor, _ packets: [Packet], at now: Duration = .zero) -> [Verdict] {
    packets.map { censor.inspect($0, at: now) }
}

@Suite struct ProbePlanTests {
    @Test func replaysAndRandomProbesAfterThePaper() {
        var random = LabRandom(seed: 7)
        let payload = (0..<100).map { UInt8($0) }
        let probes = ProbePlan.probes(replaying: payload, using: &random)
        #expect(probes.map(\.kind.description).prefix(4) == [
            "identical replay", "replay with byte 0 changed", "replay with bytes 0-7, 62-63 changed", "replay with byte 16 changed",
        ])
        #expect(probes[0].payload == payload)
        func changed(_ probe: Probe) -> [Int] { payload.indices.filter { probe.payload[$0] != payload[$0] } }
        #expect(changed(probes[1]) == [0])
        #expect(changed(probes[2]) == Array(0...7) + [62, 63])
        #expect(changed(probes[3]) == [16])
        let lengths = probes.dropFirst(4).map(\.payload.count)
        #expect(lengths.count == 8)
        for (length, triple) in zip(lengths, ProbePlan.randomLengthTriples) { #expect(triple.contains(length)) }
        #expect(lengths.last == 221)
        #expect(probes.dropFirst(4).allSatisfy { if case .random($0.payload.count) = $0.kind { true } else { false } })
    }

    @Test func shortPayloadsSkipOffsetsTheyDoNotHave() {
        var random = LabRandom(seed: 1)
        let probes = ProbePlan.probes(replaying: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], using: &random)
        #expect(probes.prefix(3).map(\.kind) == [.replay, .replayChanged([0...0]), .replayChanged([0...7])])
        #expect(probes.count == 3 + 8)
    }

    @Test func theSeedMakesThePlanReproducible() {
        var a = LabRandom(seed: 3), b = LabRandom(seed: 3)
        #expect(ProbePlan.probes(replaying: [9, 9, 9], using: &a) == ProbePlan.probes(replaying: [9, 9, 9], using: &b))
    }
}

@Suite struct ActiveProbeCensorTests {
    private func censor() -> ActiveProbeCensor {
        ActiveProbeCensor(reference: plainWeb, referenceTLS: tlsWeb, blockDuration: .seconds(600), clearedDuration: .seconds(3600))
    }

    /// A flow's handshake and first data, then the job it made.
    private func suspect(_ censor: inout ActiveProbeCensor, _ server: IPv4Endpoint, client: IPv4Endpoint = client) -> (verdicts: [Verdict], jobs: [ProbeJob]) {
        let talk = TCPConversation(client: client, server: server)
        let verdicts = feed(&censor, [talk.syn, talk.synAck, talk.ack, talk.fromClient(LabPackets.fullyEncrypted(120)), talk.fromServer([1, 2, 3])])
        return (verdicts, censor.takeProbeJobs())
    }

    @Test func theFirstPayloadOfANewServerMakesOneJobAndPasses() {
        var censor = censor()
        let (verdicts, jobs) = suspect(&censor, bridge)
        #expect(verdicts.allSatisfy { $0 == .accept })
        #expect(jobs.count == 1)
        #expect(jobs.first?.server == bridge && jobs.first?.reference == plainWeb)
        #expect(jobs.first?.probes.first?.payload == LabPackets.fullyEncrypted(120))
        let made = censor.takeEvents()
        #expect(made.map(\.action) == [.probed] && made.first?.server == bridge && made.first?.client == client)
        // Another flow while the judgement is pending makes no second job or event.
        let again = suspect(&censor, bridge, client: IPv4Endpoint(client.address, 40_001))
        #expect(again.jobs.isEmpty && censor.takeEvents().isEmpty)
        #expect(censor.judgement(of: bridge, at: .zero) == .probing(jobs[0].probes.map(\.kind)))
    }

    @Test func port443IsComparedWithTheTLSReference() {
        var censor = censor()
        let jobs = suspect(&censor, IPv4Endpoint(bridge.address, 443)).jobs
        #expect(jobs.map(\.reference) == [tlsWeb])
        var plainOnly = ActiveProbeCensor(reference: plainWeb)
        #expect(suspect(&plainOnly, IPv4Endpoint(bridge.address, 443)).jobs.map(\.reference) == [plainWeb])
        // A TLS first payload on another port is compared with the TLS reference too.
        let other = TCPConversation(server: IPv4Endpoint(bridge.address, 8443))
        _ = feed(&censor, [other.syn, other.fromClient(LabPackets.clientHello(serverName: "a.test"))])
        #expect(censor.takeProbeJobs().map(\.reference) == [tlsWeb])
        // The references themselves are never suspects.
        #expect(suspect(&censor, plainWeb).jobs.isEmpty && suspect(&censor, tlsWeb).jobs.isEmpty)
    }

    @Test func reactionsUnlikeTheWebServersBlockTheServerBothWaysWithOneEvent() {
        var censor = censor()
        let job = suspect(&censor, bridge).jobs[0]
        _ = censor.takeEvents()
        let n = job.probes.count
        censor.recordProbeResults(ProbeResults(server: bridge, reactions: Array(repeating: silent, count: n),
                                               referenceReactions: Array(repeating: nginx400, count: n)), at: .seconds(10))
        let made = censor.takeEvents()
        #expect(made.count == 1)
        #expect(made.first?.action == .blocked && made.first?.server == bridge)
        #expect(made.first?.reason.hasPrefix("active probe: reactions differ from a web server's (identical replay: returned nothing, not HTTP/1.x 400, ended by prober timeout, not FIN, ended within 1-10 s, not within 100 ms; replay with byte 0 changed:") == true,
                "\(made)")
        #expect(made.first?.reason.hasSuffix("; and \(n - 2) more of \(n) probes)") == true, "\(made)")
        #expect(censor.judgement(of: bridge, at: .seconds(10)) == .blocked)
        // The existing flow, both directions, and a new flow are dropped; no new events or jobs.
        let talk = TCPConversation(client: client, server: bridge)
        #expect(feed(&censor, [talk.fromClient([1]), talk.fromServer([2])], at: .seconds(11)) == [.drop, .drop])
        let fresh = TCPConversation(client: IPv4Endpoint(client.address, 40_009), server: bridge)
        #expect(feed(&censor, [fresh.syn, fresh.fromClient(LabPackets.fullyEncrypted(50))], at: .seconds(11)) == [.drop, .drop])
        #expect(censor.takeEvents().isEmpty && censor.takeProbeJobs().isEmpty)
        // Other servers are untouched; the block ends after its duration, and the server may be probed again.
        #expect(feed(&censor, [TCPConversation(server: IPv4Endpoint(bridge.address, 8389)).syn], at: .seconds(11)) == [.accept])
        #expect(feed(&censor, [talk.fromClient([1])], at: .seconds(611)) == [.accept])
        let later = TCPConversation(client: IPv4Endpoint(client.address, 40_010), server: bridge)
        _ = feed(&censor, [later.syn, later.fromClient([7, 7, 7])], at: .seconds(612))
        #expect(censor.takeProbeJobs().map(\.server) == [bridge])
    }

    @Test func oneDifferentProbeIsEnoughAndTheReasonNamesIt() {
        var censor = censor()
        let job = suspect(&censor, bridge).jobs[0]
        _ = censor.takeEvents()
        var reactions = Array(repeating: nginx400, count: job.probes.count)
        let last = job.probes.count - 1
        reactions[last] = Reaction(bytesReturned: 0, closedBy: .serverRST, elapsed: .milliseconds(3))
        censor.recordProbeResults(ProbeResults(server: bridge, reactions: reactions,
                                               referenceReactions: Array(repeating: nginx400, count: job.probes.count)), at: .seconds(9))
        #expect(censor.takeEvents().map(\.reason) == [
            "active probe: reactions differ from a web server's (random 221 bytes: returned nothing, not HTTP/1.x 400, ended by RST, not FIN)",
        ])
    }

    @Test func reactionsLikeTheWebServersClearTheServer() {
        var censor = censor()
        let job = suspect(&censor, bridge).jobs[0]
        _ = censor.takeEvents()
        let similar = Reaction(bytesReturned: 166, firstBytes: Array("HTTP/1.1 400 Bad".utf8), closedBy: .serverFIN, elapsed: .milliseconds(20))
        censor.recordProbeResults(ProbeResults(server: bridge, reactions: Array(repeating: similar, count: job.probes.count),
                                               referenceReactions: Array(repeating: nginx400, count: job.probes.count)), at: .seconds(9))
        #expect(censor.takeEvents().map(\.action) == [.cleared])
        #expect(censor.judgement(of: bridge, at: .seconds(9)) == .cleared)
        // Cleared: no more probes for an hour, then again.
        #expect(suspect(&censor, bridge, client: IPv4Endpoint(client.address, 40_001)).jobs.isEmpty)
        let talk = TCPConversation(client: IPv4Endpoint(client.address, 40_002), server: bridge)
        _ = feed(&censor, [talk.syn, talk.fromClient([1, 2])], at: .seconds(3610))
        #expect(censor.takeProbeJobs().count == 1)
    }

    @Test func aFlowFirstSeenMidStreamIsNotRecorded() {
        var censor = censor()
        let talk = TCPConversation(client: client, server: bridge)
        #expect(feed(&censor, [talk.fromClient([0x17, 3, 3, 0, 24]), talk.fromServer([1])]).allSatisfy { $0 == .accept })
        #expect(censor.takeProbeJobs().isEmpty && censor.takeEvents().isEmpty)
    }

    @Test func resultsThatDoNotMatchAPendingJobAreIgnored() {
        var censor = censor()
        let job = suspect(&censor, bridge).jobs[0]
        let n = job.probes.count
        // Wrong count, or a server not being probed: nothing happens.
        censor.recordProbeResults(ProbeResults(server: bridge, reactions: [silent], referenceReactions: [nginx400]), at: .seconds(1))
        censor.recordProbeResults(ProbeResults(server: plainWeb, reactions: Array(repeating: silent, count: n),
                                               referenceReactions: Array(repeating: nginx400, count: n)), at: .seconds(1))
        #expect(censor.judgement(of: bridge, at: .seconds(1)) == .probing(job.probes.map(\.kind)))
        // Results that never come: the suspect may be probed again after resultTimeout.
        let talk = TCPConversation(client: IPv4Endpoint(client.address, 40_003), server: bridge)
        _ = censor.takeProbeJobs()
        _ = feed(&censor, [talk.syn, talk.fromClient([5])], at: censor.resultTimeout + .seconds(1))
        #expect(censor.takeProbeJobs().count == 1)
    }

    @Test func pendingJobsAreBounded() {
        var censor = ActiveProbeCensor(reference: plainWeb, maxPendingJobs: 2)
        for port in UInt16(9000)..<9005 {
            let talk = TCPConversation(server: IPv4Endpoint(bridge.address, port))
            _ = feed(&censor, [talk.syn, talk.fromClient([1])])
        }
        #expect(censor.takeProbeJobs().map(\.server.port) == [9000, 9001])
        // The ones left over are still unjudged: their next flow makes a job.
        let again = TCPConversation(client: IPv4Endpoint(client.address, 1), server: IPv4Endpoint(bridge.address, 9004))
        _ = feed(&censor, [again.syn, again.fromClient([1])])
        #expect(censor.takeProbeJobs().map(\.server.port) == [9004])
    }
}
