/// The pure state machine of the racing dialer: which transport streams go
/// through, when to probe which candidate, and when to race again. No I/O
/// and no clock: the driver (``SmartDialer``) feeds it events and performs
/// the actions it returns, in the style of swift-nio-ssh.
///
/// Candidates are numbered `0..<count` in preference order. A race probes
/// them in `order`: the first at once, each next one when the stagger timer
/// fires or at once when an earlier probe fails (RFC 8305's connection
/// attempt delay). The first verified round trip wins; later results of
/// that race are ignored.
///
/// After every candidate failed, streams fail at once and races repeat with
/// backoff; but a stream asked for once `demandSeconds` have passed since
/// then starts a race itself and waits for it, so a bridge that comes back
/// (restarted, or its link restored) is found as soon as someone needs it,
/// not only when the backoff, by then minutes long, runs out.
public struct RaceMachine: Sendable {
    /// What the driver must do.
    public enum Action: Equatable, Sendable {
        /// Probe candidate `candidate` for race `race`.
        case probe(candidate: Int, race: Int)
        /// Arm the stagger timer; when it fires, send ``staggerFired(token:)`` with `token`.
        case armStagger(token: Int)
        /// Candidate won race `race` with this round-trip latency: streams go through it now.
        case won(candidate: Int, latencyNanoseconds: Int64)
        /// Every candidate failed; the reasons in race order. Streams fail at once until a later race wins.
        case allFailed([Failure])
        /// Race again after `seconds` (the background re-probe, or the backoff after total failure);
        /// when the timer fires, send ``retryTimerFired(token:)`` with `token`.
        case scheduleRace(afterSeconds: Int64, token: Int)
        /// After `seconds`, a stream may start a race again; when the timer fires,
        /// send ``demandTimerFired(token:)`` with `token`.
        case armDemand(afterSeconds: Int64, token: Int)
    }

    public struct Failure: Equatable, Sendable {
        public var candidate: Int
        public var reason: String
        public init(candidate: Int, reason: String) {
            self.candidate = candidate
            self.reason = reason
        }
    }

    /// Where a stream should go right now.
    public enum Route: Equatable, Sendable {
        case use(Int)
        /// A race is running (or none ran yet) and nothing is known to work: wait for it.
        case wait
        /// Every candidate failed in the last race.
        case fail([Failure])
    }

    private struct Race: Sendable {
        var id: Int
        var order: [Int]
        var started = 0
        var failures: [Failure] = []
        var staggerToken: Int
        /// Streams wait for this race (it was started, or joined, by one) rather than fail at once.
        var holdsStreams = false
    }

    public let candidateCount: Int
    /// The order of a fresh race: the remembered winner first, then the rest in preference order.
    public private(set) var preference: [Int]
    /// Seconds between background races while something works.
    public let reprobeSeconds: Int64
    /// Seconds before each race again after every candidate failed; the last repeats.
    public let backoffSeconds: [Int64]
    /// Seconds after total failure before a stream may start a race of its own.
    public let demandSeconds: Int64

    private var race: Race?
    private var current: Int?
    private var lastFailures: [Failure]?
    private var consecutiveFailedRaces = 0
    private var nextRaceID = 0
    private var nextToken = 0
    private var retryToken: Int?
    private var demandToken: Int?
    private var demandReady = false

    public init(candidateCount: Int, remembered: Int? = nil, reprobeSeconds: Int64 = 300,
                backoffSeconds: [Int64] = [5, 15, 60, 300], demandSeconds: Int64 = 1) {
        precondition(candidateCount > 0, "at least one candidate")
        precondition(!backoffSeconds.isEmpty, "at least one backoff step")
        self.candidateCount = candidateCount
        preference = Self.order(candidateCount, remembered: remembered)
        self.reprobeSeconds = reprobeSeconds
        self.backoffSeconds = backoffSeconds
        self.demandSeconds = demandSeconds
    }

    private static func order(_ count: Int, remembered: Int?) -> [Int] {
        var order = Array(0..<count)
        if let remembered, order.contains(remembered) {
            order.removeAll { $0 == remembered }
            order.insert(remembered, at: 0)
        }
        return order
    }

    /// The machine moved to another network (`remembered`: the winner written down for
    /// it, if any): races now start with that one, and one starts at once. Streams keep
    /// using the current winner until it ends (if it fails there, they re-race anyway).
    public mutating func networkChanged(remembered: Int?) -> [Action] {
        preference = Self.order(candidateCount, remembered: remembered)
        consecutiveFailedRaces = 0
        return startRace()
    }

    public var route: Route {
        if let current { return .use(current) }
        if race?.holdsStreams == true { return .wait }
        // After total failure, background races do not hold streams up: they fail at once.
        if let lastFailures { return .fail(lastFailures) }
        return .wait // a race is running, or none ran yet (the driver starts one)
    }

    /// A stream is wanted: starts the first race if none ran yet; after total
    /// failure, starts one (or joins the running one) if `demandSeconds` have
    /// passed, so that the stream waits for it. Then ask `route`.
    public mutating func streamWanted() -> [Action] {
        guard current == nil else { return [] }
        if lastFailures == nil { return race == nil ? startRace() : [] }
        guard demandReady else { return [] }
        demandReady = false
        let actions = startRace()
        race?.holdsStreams = true
        return actions
    }

    public mutating func demandTimerFired(token: Int) -> [Action] {
        guard demandToken == token else { return [] }
        demandToken = nil
        demandReady = true
        return []
    }

    public var isRacing: Bool { race != nil }

    /// Starts a race in preference order, with `demoted` (a transport that just
    /// failed a stream) last. Nothing happens while a race is running.
    public mutating func startRace(demoting demoted: Int? = nil) -> [Action] {
        guard race == nil else { return [] }
        var order = preference
        if let demoted, let index = order.firstIndex(of: demoted) {
            order.remove(at: index)
            order.append(demoted)
        }
        retryToken = nil
        nextRaceID += 1
        race = Race(id: nextRaceID, order: order, staggerToken: -1)
        return startNext()
    }

    public mutating func staggerFired(token: Int) -> [Action] {
        guard let race, race.staggerToken == token, race.started < race.order.count else { return [] }
        return startNext()
    }

    public mutating func retryTimerFired(token: Int) -> [Action] {
        guard retryToken == token else { return [] }
        retryToken = nil
        return startRace()
    }

    public mutating func probeSucceeded(candidate: Int, race id: Int, latencyNanoseconds: Int64) -> [Action] {
        guard race?.id == id else { return [] }
        race = nil
        current = candidate
        lastFailures = nil
        consecutiveFailedRaces = 0
        return [.won(candidate: candidate, latencyNanoseconds: latencyNanoseconds), scheduleRace(after: reprobeSeconds)]
    }

    public mutating func probeFailed(candidate: Int, race id: Int, reason: String) -> [Action] {
        guard var race, race.id == id else { return [] }
        race.failures.append(Failure(candidate: candidate, reason: reason))
        self.race = race
        if race.failures.count == race.order.count {
            self.race = nil
            // A background race that found nothing also means the current one is gone.
            current = nil
            lastFailures = race.failures
            let delay = backoffSeconds[min(consecutiveFailedRaces, backoffSeconds.count - 1)]
            consecutiveFailedRaces += 1
            nextToken += 1
            demandToken = nextToken
            demandReady = false
            return [.allFailed(race.failures), .armDemand(afterSeconds: demandSeconds, token: nextToken), scheduleRace(after: delay)]
        }
        // Every started probe has failed: start the next at once rather than wait for the stagger.
        if race.failures.count == race.started && race.started < race.order.count {
            return startNext()
        }
        return []
    }

    /// A stream through `candidate` failed to open: stop using it and race
    /// again (with it last). Returns no actions if another failure already did.
    public mutating func dialFailed(candidate: Int) -> [Action] {
        guard current == candidate else { return [] }
        current = nil
        return startRace(demoting: candidate)
    }

    private mutating func startNext() -> [Action] {
        guard var race else { return [] }
        let candidate = race.order[race.started]
        race.started += 1
        var actions: [Action] = [.probe(candidate: candidate, race: race.id)]
        if race.started < race.order.count {
            nextToken += 1
            race.staggerToken = nextToken
            actions.append(.armStagger(token: nextToken))
        }
        self.race = race
        return actions
    }

    private mutating func scheduleRace(after seconds: Int64) -> Action {
        nextToken += 1
        retryToken = nextToken
        return .scheduleRace(afterSeconds: seconds, token: nextToken)
    }
}
