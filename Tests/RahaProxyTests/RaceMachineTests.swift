import Foundation
import RahaWire
import Testing
@testable import RahaProxy

/// The racing dialer's decisions, with no sockets and no clock.
@Suite("RaceMachine")
struct RaceMachineTests {
    /// The candidates probed by these actions, in order.
    private func probed(_ actions: [RaceMachine.Action]) -> [Int] {
        actions.compactMap { if case .probe(let candidate, _) = $0 { return candidate } else { return nil } }
    }

    private func staggerToken(_ actions: [RaceMachine.Action]) -> Int? {
        actions.compactMap { if case .armStagger(let token) = $0 { return token } else { return nil } }.first
    }

    private func raceID(_ actions: [RaceMachine.Action]) -> Int {
        actions.compactMap { if case .probe(_, let race) = $0 { return race } else { return nil } }.first ?? -1
    }

    @Test("A race starts candidate 0 alone, then each next one when the stagger timer fires")
    func staggerOrder() {
        var machine = RaceMachine(candidateCount: 3)
        #expect(machine.route == .wait)
        let first = machine.startRace()
        #expect(probed(first) == [0])
        #expect(machine.route == .wait)
        let second = machine.staggerFired(token: staggerToken(first)!)
        #expect(probed(second) == [1])
        let third = machine.staggerFired(token: staggerToken(second)!)
        #expect(probed(third) == [2])
        #expect(staggerToken(third) == nil, "no timer after the last candidate")
        #expect(machine.staggerFired(token: staggerToken(first)!).isEmpty, "an old timer does nothing")
        #expect(machine.startRace().isEmpty, "no second race while one runs")
    }

    @Test("A network change races at once with that network's remembered winner first; the winner in use stays until then")
    func networkChange() {
        var machine = RaceMachine(candidateCount: 3)
        let race = machine.startRace()
        _ = machine.probeSucceeded(candidate: 0, race: raceID(race), latencyNanoseconds: 1)
        let moved = machine.networkChanged(remembered: 2)
        #expect(probed(moved) == [2])
        #expect(machine.route == .use(0), "streams keep the current winner while the new race runs")
        #expect(machine.preference == [2, 0, 1])
        #expect(machine.networkChanged(remembered: nil).isEmpty, "no second race while one runs")
        #expect(machine.preference == [0, 1, 2])
    }

    @Test("The first verified round trip wins; later results of that race are ignored")
    func firstSuccessWins() {
        var machine = RaceMachine(candidateCount: 3, reprobeSeconds: 120)
        let first = machine.startRace()
        let race = raceID(first)
        _ = machine.staggerFired(token: staggerToken(first)!)
        let won = machine.probeSucceeded(candidate: 1, race: race, latencyNanoseconds: 42_000_000)
        #expect(won.first == .won(candidate: 1, latencyNanoseconds: 42_000_000))
        guard case .scheduleRace(120, _)? = won.last else {
            Issue.record("no background re-race scheduled: \(won)")
            return
        }
        #expect(machine.route == .use(1))
        #expect(machine.probeSucceeded(candidate: 0, race: race, latencyNanoseconds: 1).isEmpty)
        #expect(machine.probeFailed(candidate: 0, race: race, reason: "reset").isEmpty)
        #expect(machine.route == .use(1))
    }

    @Test("When every started probe has failed, the next candidate starts at once")
    func failureStartsNextAtOnce() {
        var machine = RaceMachine(candidateCount: 3)
        let first = machine.startRace()
        let next = machine.probeFailed(candidate: 0, race: raceID(first), reason: "connection refused")
        #expect(probed(next) == [1])
        #expect(machine.staggerFired(token: staggerToken(first)!).isEmpty, "the replaced stagger timer does nothing")
        // With 1 and 2 both running, 1 failing does not start anything new.
        let third = machine.staggerFired(token: staggerToken(next)!)
        #expect(probed(third) == [2])
        #expect(machine.probeFailed(candidate: 1, race: raceID(first), reason: "reset").isEmpty)
        #expect(machine.route == .wait)
    }

    @Test("All failed: an error with every reason in race order, streams fail at once, re-races back off")
    func allFailed() {
        var machine = RaceMachine(candidateCount: 2, backoffSeconds: [5, 15, 60])
        let failures = [RaceMachine.Failure(candidate: 0, reason: "timed out after 6 s"),
                        RaceMachine.Failure(candidate: 1, reason: "connection refused")]
        var delays: [Int64] = []
        var actions = machine.startRace()
        for _ in 0..<4 {
            let race = raceID(actions)
            #expect(probed(actions) == [0])
            _ = machine.probeFailed(candidate: 0, race: race, reason: "timed out after 6 s")
            let ended = machine.probeFailed(candidate: 1, race: race, reason: "connection refused")
            #expect(ended.first == .allFailed(failures))
            #expect(machine.route == .fail(failures))
            guard case .scheduleRace(let seconds, let token)? = ended.last else {
                Issue.record("no re-race scheduled: \(ended)")
                return
            }
            delays.append(seconds)
            // The timer starts the next race; meanwhile streams still fail at once.
            actions = machine.retryTimerFired(token: token)
            #expect(machine.route == .fail(failures))
        }
        #expect(delays == [5, 15, 60, 60])
    }

    @Test("After total failure, a stream fails at once until demandSeconds have passed; then it starts a race (or joins a running one) and waits for it")
    func streamsRaceOnDemand() {
        var machine = RaceMachine(candidateCount: 2, backoffSeconds: [60], demandSeconds: 3)
        let first = machine.startRace()
        _ = machine.probeFailed(candidate: 0, race: raceID(first), reason: "refused")
        let ended = machine.probeFailed(candidate: 1, race: raceID(first), reason: "refused")
        let demand = ended.compactMap { if case .armDemand(let seconds, let token) = $0 { return (seconds, token) } else { return nil } }.first
        #expect(demand?.0 == 3, "no demand timer armed: \(ended)")
        #expect(machine.streamWanted().isEmpty, "a stream raced before the demand timer fired")
        if case .fail = machine.route {} else { Issue.record("a stream waits before the demand timer fired: \(machine.route)") }

        #expect(machine.demandTimerFired(token: demand!.1 + 1).isEmpty && machine.streamWanted().isEmpty, "a stale timer let a stream race")
        _ = machine.demandTimerFired(token: demand!.1)
        let raced = machine.streamWanted()
        #expect(probed(raced) == [0], "the stream did not start a race")
        #expect(machine.route == .wait, "the stream does not wait for the race it started")
        #expect(machine.streamWanted().isEmpty, "a second stream started another race")
        _ = machine.probeSucceeded(candidate: 0, race: raceID(raced), latencyNanoseconds: 1)
        #expect(machine.route == .use(0))

        // Total failure again; the backoff's own race is running when the demand timer fires: a stream joins it.
        let lost = machine.dialFailed(candidate: 0)
        _ = machine.probeFailed(candidate: 1, race: raceID(lost), reason: "refused")
        let again = machine.probeFailed(candidate: 0, race: raceID(lost), reason: "refused")
        let retry = again.compactMap { if case .scheduleRace(_, let token) = $0 { return token } else { return nil } }.first!
        let demandAgain = again.compactMap { if case .armDemand(_, let token) = $0 { return token } else { return nil } }.first!
        let background = machine.retryTimerFired(token: retry)
        if case .fail = machine.route {} else { Issue.record("a background race held streams: \(machine.route)") }
        _ = machine.demandTimerFired(token: demandAgain)
        #expect(machine.streamWanted().isEmpty, "a second race started while one runs")
        #expect(machine.route == .wait, "the stream did not join the running race")
        _ = machine.probeSucceeded(candidate: 1, race: raceID(background), latencyNanoseconds: 1)
        #expect(machine.route == .use(1))
    }

    @Test("A stream failing through the winner starts a race with it last; streams wait for that race")
    func dialFailureReraces() {
        var machine = RaceMachine(candidateCount: 3)
        let first = machine.startRace()
        _ = machine.probeSucceeded(candidate: 0, race: raceID(first), latencyNanoseconds: 1)
        let rerace = machine.dialFailed(candidate: 0)
        #expect(probed(rerace) == [1])
        #expect(machine.route == .wait)
        #expect(machine.dialFailed(candidate: 0).isEmpty, "a second failure of the same stream's transport changes nothing")
        let second = machine.staggerFired(token: staggerToken(rerace)!)
        #expect(probed(second) == [2])
        let third = machine.staggerFired(token: staggerToken(second)!)
        #expect(probed(third) == [0], "the transport that failed goes last")
        _ = machine.probeSucceeded(candidate: 2, race: raceID(rerace), latencyNanoseconds: 1)
        #expect(machine.route == .use(2))
    }

    @Test("A background race keeps the current winner in use until it ends; a better one takes over")
    func backgroundRace() {
        var machine = RaceMachine(candidateCount: 2)
        var actions = machine.startRace()
        _ = machine.probeFailed(candidate: 0, race: raceID(actions), reason: "reset")
        actions = machine.probeSucceeded(candidate: 1, race: raceID(actions), latencyNanoseconds: 1)
        guard case .scheduleRace(_, let token)? = actions.last else { Issue.record("no re-race"); return }
        let background = machine.retryTimerFired(token: token)
        #expect(probed(background) == [0])
        #expect(machine.route == .use(1))
        _ = machine.probeSucceeded(candidate: 0, race: raceID(background), latencyNanoseconds: 1)
        #expect(machine.route == .use(0))
    }

    @Test("The remembered winner is raced first, the others after it in preference order")
    func rememberedFirst() {
        var machine = RaceMachine(candidateCount: 3, remembered: 2)
        #expect(machine.preference == [2, 0, 1])
        let first = machine.startRace()
        #expect(probed(first) == [2])
        #expect(probed(machine.staggerFired(token: staggerToken(first)!)) == [0])
        #expect(RaceMachine(candidateCount: 2, remembered: 7).preference == [0, 1], "an unknown remembered index is ignored")
    }
}

@Suite("NetworkIdentity and PathMemory")
struct NetworkIdentityTests {
    static let route = """
        Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
        wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
        eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
        eth0\t0000000A\t00000000\t0001\t0\t0\t100\t000000FF\t0\t0\t0
        """

    @Test("The default route is the 0/0 line with the lowest metric; none when there is no 0/0 line")
    func parsesRoute() {
        #expect(NetworkIdentity.defaultRoute(procNetRoute: Self.route) == .init(interface: "eth0", gateway: "0100000A"))
        let noDefault = Self.route.split(separator: "\n").enumerated().filter { $0.offset == 0 || $0.offset == 3 }.map(\.element).joined(separator: "\n")
        #expect(NetworkIdentity.defaultRoute(procNetRoute: noDefault) == nil)
        #expect(NetworkIdentity.defaultRoute(procNetRoute: "") == nil)
        #expect(NetworkIdentity.defaultRoute(procNetRoute: "garbage\nmore garbage") == nil)
    }

    @Test("Nameservers in order; the id is 16 hex digits (no address) that differ per network")
    func identifier() {
        let servers = ResolvConf.nameservers("# comment\nsearch lan\nnameserver 127.0.0.53\nnameserver\t::1\noptions edns0\n")
        #expect(servers == ["127.0.0.53", "::1"])
        let route = NetworkIdentity.defaultRoute(procNetRoute: Self.route)
        let id = NetworkIdentity.identifier(route: route, nameservers: servers)
        #expect(id.count == 16 && id.allSatisfy(\.isHexDigit))
        #expect(id == NetworkIdentity.identifier(route: route, nameservers: servers))
        #expect(id != NetworkIdentity.identifier(route: route, nameservers: ["127.0.0.1"]))
        #expect(id != NetworkIdentity.identifier(route: nil, nameservers: servers))
    }

    @Test("PathMemory: remembers per network, reads back, file 0600 in a 0700 directory, holding hashes only")
    func pathMemory() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("raha-path-memory-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: base) }
        let memory = PathMemory(directory: base.appendingPathComponent("raha"))
        let key = "ss://aes-128-gcm:secret-password@127.0.0.1:8388"
        let print = PathMemory.fingerprint(ofKey: key)
        #expect(print == PathMemory.fingerprint(ofKey: " \(key)\n") && print != PathMemory.fingerprint(ofKey: key + "0"))
        #expect(memory.winner(on: "net-a") == nil)
        try memory.remember(print, on: "net-a")
        try memory.remember("other", on: "net-b")
        #expect(memory.winner(on: "net-a") == print && memory.winner(on: "net-b") == "other")
        let mode = { (path: String) in ((try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? NSNumber)?.intValue ?? -1 }
        #expect(mode(memory.file.path) == 0o600)
        #expect(mode(memory.file.deletingLastPathComponent().path) == 0o700)
        let text = try String(contentsOf: memory.file, encoding: .utf8)
        #expect(!text.contains("secret") && !text.contains("127.0.0.1"), "\(text)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: memory.file.deletingLastPathComponent().path) == ["paths.json"],
                "a temporary file was left behind")
    }
}
