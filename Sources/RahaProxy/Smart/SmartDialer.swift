import Logging
import NIOConcurrencyHelpers
import NIOCore
import RahaTransport
import RahaWire

/// The outcome of a race, for the one line `raha connect` prints.
public enum RaceReport: Sendable, Equatable {
    case using(label: String, latencyMilliseconds: Int64)
    case noneGotThrough([FailedTransport])

    public struct FailedTransport: Sendable, Equatable {
        public var label: String
        public var reason: String
    }

    /// "Using LABEL (verified round trip in N ms)" or
    /// "No transport got through: LABEL: REASON; …. Only message channels remain on this network."
    public var line: String {
        switch self {
        case .using(let label, let milliseconds):
            return "Using \(label) (verified round trip in \(milliseconds) ms)"
        case .noneGotThrough(let failures):
            return NoTransportError(failures: failures).description
        }
    }
}

/// A stream was asked for while every transport is blocked from this network.
public struct NoTransportError: Error, CustomStringConvertible, Sendable {
    public var failures: [RaceReport.FailedTransport]
    public var description: String {
        "No transport got through: " + failures.map { "\($0.label): \($0.reason)" }.joined(separator: "; ")
            + ". Only message channels remain on this network (mail or DNS, when available)."
    }
}

/// A dialer that races transports and streams through the winner.
///
/// Races probe each candidate with a verified round trip (``ConnectivityProbe``),
/// Happy-Eyeballs style: staggered starts, the first success wins. Streams
/// go through the winner under a dial deadline; when one fails, a new race
/// starts and that stream is retried once through the new winner. Races
/// repeat in the background (and with backoff while nothing works). The
/// decisions are ``RaceMachine``'s; this class only performs its actions.
public final class SmartDialer: StreamDialer {
    public struct Configuration: Sendable {
        public var probe: ConnectivityProbe
        /// RFC 8305's connection attempt delay.
        public var stagger: TimeAmount = .milliseconds(250)
        /// How long a stream may take to open through the winner.
        public var dialDeadline: TimeAmount
        public var reprobeSeconds: Int64 = 300
        public var backoffSeconds: [Int64] = [5, 15, 60, 300]
        /// After total failure, how long before a stream may start a race of its own.
        public var demandSeconds: Int64 = 1
        /// How often to look whether the machine moved to another network (a new
        /// default route or resolvers), which starts a race at once; nil: never.
        public var networkCheck: TimeAmount? = .seconds(10)

        public init(probe: ConnectivityProbe) {
            self.probe = probe
            dialDeadline = probe.deadline
        }
    }

    /// One transport to race: its dialer and a fingerprint to remember it by.
    public struct Candidate: Sendable {
        public var dialer: StreamDialer
        public var fingerprint: String
        public init(dialer: StreamDialer, fingerprint: String) {
            self.dialer = dialer
            self.fingerprint = fingerprint
        }
    }

    /// Where the winner per network is written down. `network` is asked each
    /// time (at start and at every win), so a machine that moves is followed.
    public struct Memory: Sendable {
        public var store: PathMemory
        public var network: @Sendable () -> String
        public init(store: PathMemory, network: @escaping @Sendable () -> String = NetworkIdentity.current) {
            self.store = store
            self.network = network
        }
    }

    private struct State {
        var machine: RaceMachine
        var waiters: [EventLoopPromise<Int>] = []
        var firstReport: EventLoopPromise<RaceReport>?
        var stopped = false
    }

    public let candidates: [Candidate]
    public let configuration: Configuration
    private let eventLoop: EventLoop
    private let logger: Logger
    private let memory: Memory?
    private let state: NIOLockedValueBox<State>
    private let firstRace: EventLoopFuture<RaceReport>
    private let network: @Sendable () -> String
    /// The network last seen, and the task that looks again.
    private let watch = NIOLockedValueBox<(network: String?, task: RepeatedTask?)>((nil, nil))

    /// `eventLoop` runs the probes and timers; `network` names the network the machine is
    /// on (by default `memory`'s, else `NetworkIdentity.current`).
    public init(candidates: [Candidate], configuration: Configuration, memory: Memory? = nil,
                network: (@Sendable () -> String)? = nil, eventLoop: EventLoop, logger: Logger) {
        precondition(!candidates.isEmpty, "at least one candidate")
        self.candidates = candidates
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.logger = logger
        self.memory = memory
        self.network = network ?? memory?.network ?? NetworkIdentity.current
        let remembered = memory.flatMap { Self.remembered(in: $0, on: $0.network(), among: candidates) }
        let promise = eventLoop.makePromise(of: RaceReport.self)
        firstRace = promise.futureResult
        state = NIOLockedValueBox(State(
            machine: RaceMachine(candidateCount: candidates.count, remembered: remembered,
                                 reprobeSeconds: configuration.reprobeSeconds, backoffSeconds: configuration.backoffSeconds,
                                 demandSeconds: configuration.demandSeconds),
            firstReport: promise))
    }

    public var label: String { candidates.map(\.dialer.label).joined(separator: ", ") }

    /// Starts the first race (if none ran yet) and reports its outcome.
    public func start() -> EventLoopFuture<RaceReport> {
        handle { machine, _ in machine.route == .wait && !machine.isRacing ? machine.startRace() : [] }
        if let every = configuration.networkCheck {
            let now = network()
            let task = eventLoop.scheduleRepeatedTask(initialDelay: every, delay: every) { _ in self.checkNetwork() }
            let previous = watch.withLockedValue { watch in
                defer { watch = (now, task) }
                return watch.task
            }
            previous?.cancel()
        }
        return firstRace
    }

    /// The candidate written down as the winner on `network`, if any.
    private static func remembered(in memory: Memory, on network: String, among candidates: [Candidate]) -> Int? {
        memory.store.winner(on: network).flatMap { stored in candidates.firstIndex { $0.fingerprint == stored } }
    }

    /// Starts a race at once when the network changed since the last look.
    func checkNetwork() {
        let now = network()
        let changed = watch.withLockedValue { watch in
            defer { watch.network = now }
            return watch.network != nil && watch.network != now
        }
        guard changed else { return }
        logger.info("the network changed: racing the transports again")
        let remembered = memory.flatMap { Self.remembered(in: $0, on: now, among: candidates) }
        handle { machine, _ in machine.networkChanged(remembered: remembered) }
    }

    public func dial(_ target: Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<Channel> {
        through(on: eventLoop, retry: true) { dialer in
            withDeadline(dialer.dial(target, on: eventLoop), self.configuration.dialDeadline) { $0.close(promise: nil) }
        }
    }

    public func associate(on eventLoop: EventLoop, receive: @escaping @Sendable (Endpoint, ByteBuffer) -> Void) -> EventLoopFuture<PacketAssociation> {
        through(on: eventLoop, retry: true) { dialer in
            withDeadline(dialer.associate(on: eventLoop, receive: receive), self.configuration.dialDeadline) { $0.close() }
        }
    }

    /// Opens through the current winner (waiting for a running race); on
    /// failure reports it, and with `retry` tries once more through the next winner.
    private func through<T>(on eventLoop: EventLoop, retry: Bool,
                            _ open: @escaping (StreamDialer) -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        winner(on: eventLoop).flatMap { index in
            open(self.candidates[index].dialer).flatMapError { error in
                self.logger.info("\(self.candidates[index].dialer.label): a stream failed (\(TransportFailure.reason(for: error))); racing again")
                self.handle { machine, _ in machine.dialFailed(candidate: index) }
                guard retry else { return eventLoop.makeFailedFuture(error) }
                return self.through(on: eventLoop, retry: false, open)
            }
        }
    }

    /// The candidate to use now, after any running race (bounded by the dial deadline).
    private func winner(on eventLoop: EventLoop) -> EventLoopFuture<Int> {
        var route = RaceMachine.Route.wait
        var waiter: EventLoopPromise<Int>?
        handle { machine, waiters in
            let actions = machine.streamWanted()
            route = machine.route
            if route == .wait {
                waiter = eventLoop.makePromise(of: Int.self)
                waiters.append(waiter!)
            }
            return actions
        }
        switch route {
        case .use(let index): return eventLoop.makeSucceededFuture(index)
        case .fail(let failures): return eventLoop.makeFailedFuture(noTransport(failures))
        case .wait:
            let deadline = configuration.probe.deadline + configuration.stagger * Int64(candidates.count)
            return withDeadline(waiter!.futureResult, deadline) { _ in }
        }
    }

    private func noTransport(_ failures: [RaceMachine.Failure]) -> NoTransportError {
        NoTransportError(failures: failures.map { .init(label: candidates[$0.candidate].dialer.label, reason: $0.reason) })
    }

    /// Feeds one event to the machine under the lock, then performs its
    /// actions outside it. When a race ends, the streams waiting for it are
    /// taken in the same critical section, so none of a later race is answered early.
    private func handle(_ event: (inout RaceMachine, inout [EventLoopPromise<Int>]) -> [RaceMachine.Action]) {
        let (actions, waiters, first) = state.withLockedValue { state -> ([RaceMachine.Action], [EventLoopPromise<Int>], EventLoopPromise<RaceReport>?) in
            guard !state.stopped else { return ([], [], nil) }
            let actions = event(&state.machine, &state.waiters)
            guard actions.contains(where: \.endsRace) else { return (actions, [], nil) }
            defer { state.waiters = []; state.firstReport = nil }
            return (actions, state.waiters, state.firstReport)
        }
        for action in actions {
            switch action {
            case .probe(let candidate, let race):
                configuration.probe.run(through: candidates[candidate].dialer, on: eventLoop).whenComplete { result in
                    switch result {
                    case .success(let latency):
                        self.handle { machine, _ in machine.probeSucceeded(candidate: candidate, race: race, latencyNanoseconds: latency.nanoseconds) }
                    case .failure(let error):
                        let reason = TransportFailure.reason(for: error)
                        self.logger.info("\(self.candidates[candidate].dialer.label): blocked (\(reason))")
                        self.handle { machine, _ in machine.probeFailed(candidate: candidate, race: race, reason: reason) }
                    }
                }
            case .armStagger(let token):
                eventLoop.scheduleTask(in: configuration.stagger) {
                    self.handle { machine, _ in machine.staggerFired(token: token) }
                }
            case .scheduleRace(let seconds, let token):
                eventLoop.scheduleTask(in: .seconds(seconds)) {
                    self.handle { machine, _ in machine.retryTimerFired(token: token) }
                }
            case .armDemand(let seconds, let token):
                eventLoop.scheduleTask(in: .seconds(seconds)) {
                    self.handle { machine, _ in machine.demandTimerFired(token: token) }
                }
            case .won(let candidate, let latency):
                let label = candidates[candidate].dialer.label
                logger.info("using \(label) (verified in \(latency / 1_000_000) ms)")
                if let memory {
                    do { try memory.store.remember(candidates[candidate].fingerprint, on: memory.network()) } catch {
                        logger.warning("cannot remember the transport that works on this network: \(error)")
                    }
                }
                first?.succeed(.using(label: label, latencyMilliseconds: latency / 1_000_000))
                waiters.forEach { $0.succeed(candidate) }
            case .allFailed(let failures):
                let error = noTransport(failures)
                first?.succeed(.noneGotThrough(error.failures))
                waiters.forEach { $0.fail(error) }
            }
        }
    }

    /// Stops racing: no more probes or timers (streams already open are not touched).
    /// Whoever still waits for a race, or for the first one's report, is told so.
    public func stop() {
        watch.withLockedValue { $0.task }?.cancel()
        let (waiters, first) = state.withLockedValue { state in
            defer { state.waiters = []; state.firstReport = nil; state.stopped = true }
            return (state.waiters, state.firstReport)
        }
        let stopping = TransportFailure("the proxy is shutting down")
        waiters.forEach { $0.fail(stopping) }
        first?.fail(stopping)
    }

    deinit { stop() }
}

extension RaceMachine.Action {
    /// Whether this action ends a race (a winner, or every candidate failed).
    var endsRace: Bool {
        switch self {
        case .won, .allFailed: return true
        case .probe, .armStagger, .scheduleRace, .armDemand: return false
        }
    }
}
