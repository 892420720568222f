/// One end of a reliable connection over an unreliable datagram channel,
/// as a pure state machine: no I/O and no clock. The caller passes the time
/// (`now`, a monotonic `Duration` since any fixed origin) into every call,
/// transmits what `nextSegment` returns, feeds in what arrives, and calls
/// again by `nextDeadline`.
///
/// Made for a DNS tunnel: the client (the polling side) may send whenever
/// it likes, each segment in a query; the server (the answering side) sends
/// only in answers, so its transport calls `answer(now:budget:)` once per
/// query. The client polls (empty segments flagged `poll`) when the server
/// said it has more, up to `Polling.maximumOutstanding` queries per round
/// trip, and otherwise at an idle interval that backs off.
///
/// Reliability: byte sequence numbers with cumulative and selective acks
/// (`ARQSegment`), retransmission on RTO (RFC 6298 estimation, Karn's rule,
/// exponential backoff between a floor and a ceiling, the timer restarted
/// by any ack that shows progress), and loss detection from later arrivals:
/// a segment is lost when `dupThreshold` segments sent after it have been
/// acked (fewer when fewer are in flight), or, RACK-style (RFC 8985), when
/// a segment sent after it was acked and it has been out for a round trip
/// plus a reordering window. When a segment declared lost turns out to have
/// arrived after all (acked before it was resent, or too soon after being
/// resent for the resend to be what arrived), the path reorders: the
/// threshold doubles and the window grows by a quarter of the minimum RTT,
/// decaying again after rounds without such surprises.
///
/// Congestion: a window counted in segments that tolerates random loss,
/// since loss on resolver paths is mostly not congestion. It grows as Reno
/// does (slow start, then a segment per round trip) whatever is lost, and
/// shrinks, at most once per two round trips, only on a sign of congestion:
/// a queue (the round's smallest RTT above the windowed minimum RTT by more
/// than the path's jitter, together with loss, or by over twice the minimum
/// alone), which shrinks the window to what the path holds without the
/// queue (x minRTT / RTT, so the queue drains); or a loss rate over the
/// last rounds above `Configuration.lossTolerance` (x(1 - rate/2)). A
/// timeout, a real outage, still collapses the window to one segment. Also
/// the peer's receive window, and an optional rate cap in segments per
/// second spaced evenly, so a client can stay under a resolver's rate limit.
///
/// Memory is bounded: at most `sendBufferLimit` bytes queued to send and
/// `receiveBufferLimit` bytes received but not yet read.
public struct ARQConnection: Sendable {
    public enum Role: Sendable { case client, server }

    public enum State: Equatable, Sendable {
        case open
        /// One side has ended its stream; the other may still send.
        case closing
        /// Both streams ended and this end's FIN was acknowledged.
        case closed
        /// Aborted: by either end, or after too many timeouts in a row.
        case reset
    }

    public struct Polling: Sendable {
        /// Idle polls start at this interval after anything arrives ...
        public var minimumInterval: Duration
        /// ... and back off, doubling, to this one.
        public var maximumInterval: Duration
        /// Queries per round trip while the server has more to send.
        public var maximumOutstanding: Int
        /// How long to keep polling once closed, so that a server whose
        /// last ack was lost can still be answered.
        public var linger: Duration

        public init(minimumInterval: Duration = .milliseconds(50), maximumInterval: Duration = .seconds(2), maximumOutstanding: Int = 8, linger: Duration = .seconds(3)) {
            self.minimumInterval = minimumInterval
            self.maximumInterval = maximumInterval
            self.maximumOutstanding = maximumOutstanding
            self.linger = linger
        }
    }

    public struct Configuration: Sendable {
        public var sendBufferLimit: Int
        public var receiveBufferLimit: Int
        public var initialRTO: Duration
        public var minimumRTO: Duration
        public var maximumRTO: Duration
        /// RTO expiries in a row without progress before the connection resets.
        public var maximumTimeouts: Int
        public var initialCongestionWindow: Int
        public var maximumCongestionWindow: Int
        /// How long an in-order segment may wait for its ack to be combined.
        public var ackDelay: Duration
        /// Segments per second this end may send at most; nil for no cap.
        public var rateLimit: Int?
        /// How the client polls (unused by a server).
        public var polling: Polling
        public var maximumBlocks: Int
        /// The loss rate (segments declared lost over the last few round
        /// trips) above which the congestion window shrinks. Below it, loss
        /// is taken for noise, not congestion.
        public var lossTolerance: Double = 0.35

        public init(sendBufferLimit: Int = 256 * 1024, receiveBufferLimit: Int = 256 * 1024, initialRTO: Duration = .seconds(1), minimumRTO: Duration = .milliseconds(200), maximumRTO: Duration = .seconds(10), maximumTimeouts: Int = 10, initialCongestionWindow: Int = 4, maximumCongestionWindow: Int = 256, ackDelay: Duration = .milliseconds(20), rateLimit: Int? = nil, polling: Polling = Polling(), maximumBlocks: Int = 16) {
            precondition(sendBufferLimit > 0 && receiveBufferLimit >= ARQSegment.windowUnit, "ARQ buffers must hold something")
            precondition(minimumRTO > .zero && minimumRTO <= maximumRTO, "the RTO floor must be positive and below the ceiling")
            precondition(initialCongestionWindow >= 1 && maximumCongestionWindow >= initialCongestionWindow, "congestion windows are at least one segment")
            precondition(rateLimit.map { $0 > 0 } ?? true, "a rate cap is at least one segment per second")
            self.sendBufferLimit = sendBufferLimit
            self.receiveBufferLimit = receiveBufferLimit
            self.initialRTO = initialRTO
            self.minimumRTO = minimumRTO
            self.maximumRTO = maximumRTO
            self.maximumTimeouts = maximumTimeouts
            self.initialCongestionWindow = initialCongestionWindow
            self.maximumCongestionWindow = maximumCongestionWindow
            self.ackDelay = ackDelay
            self.rateLimit = rateLimit
            self.polling = polling
            self.maximumBlocks = min(maximumBlocks, ARQSegment.maxBlocks)
        }
    }

    /// What happened, for tests and metrics.
    public struct Counters: Equatable, Sendable {
        public var segmentsSent = 0
        public var segmentsReceived = 0
        /// Segments sent again (after an RTO or fast retransmit).
        public var retransmissions = 0
        public var timeouts = 0
        public var fastRetransmits = 0
        /// Data that had all arrived before: acked again, not delivered again.
        public var duplicatesDropped = 0
        /// Data beyond the receive window: dropped.
        public var outOfWindowDropped = 0
        /// Segments of another session: ignored.
        public var foreignDropped = 0
        /// Segments declared lost that had arrived after all (reordering).
        public var spuriousLosses = 0
        /// Times the congestion window shrank for congestion (not timeouts).
        public var congestionReductions = 0
    }

    /// A segment sent and not yet cumulatively acked. Sequence numbers here
    /// are unwrapped (64-bit), so comparisons need no modular care.
    private struct Flight {
        var start: Int64
        var length: Int
        var fin: Bool
        var sentAt: Duration
        /// Order of (re)transmission, for loss detection by later arrivals.
        var sendOrder: Int
        var transmissions: Int
        var sacked = false
        var lost = false
        /// Declared lost by later arrivals (not by a timeout), so that its
        /// ack can show reordering.
        var markedLost = false
        var end: Int64 { start + Int64(length) + (fin ? 1 : 0) }
        var inFlight: Bool { !sacked && !lost }
    }

    /// Received bytes above a hole.
    private struct Piece {
        var start: Int64
        var bytes: [UInt8]
        var end: Int64 { start + Int64(bytes.count) }
    }

    public let session: UInt64
    public let role: Role
    public var configuration: Configuration
    public private(set) var counters = Counters()

    // Sending.
    private var sendQueue: [UInt8] = []
    /// Index in `sendQueue` of the byte at `sendUnacked`.
    private var queueHead = 0
    private var sendUnacked: Int64
    private var sendNext: Int64
    private var flights: [Flight] = []
    private var sendOrder = 0
    private var localClosed = false
    private var finSent = false
    private var finAcked = false
    private var peerWindow: Int

    // Timers and congestion.
    public private(set) var smoothedRTT: Duration?
    private var rttVariance: Duration = .zero
    /// The current RTO, backoff included.
    public private(set) var retransmissionTimeout: Duration
    private var rtoDeadline: Duration?
    private var consecutiveTimeouts = 0
    public private(set) var congestionWindow: Double
    private var slowStartThreshold: Double
    private var retransmitCredit = 0
    private var pacedUntil: Duration?
    /// The smallest RTT sample of the last one to two `minimumRTTSpan`s
    /// (a windowed minimum in two buckets), so that it follows a path
    /// whose delay grew, yet stays put while a queue comes and goes.
    public var minimumRTT: Duration? {
        guard let current = minimumRTTCurrent else { return minimumRTTPrevious }
        return minimumRTTPrevious.map { min($0, current) } ?? current
    }
    private var minimumRTTCurrent: Duration?
    private var minimumRTTPrevious: Duration?
    private var minimumRTTBucketStart: Duration = .zero
    /// A round ends when a segment sent after it began is acked.
    private var rounds = 0
    private var roundEndOrder = 0
    private var roundMinimumRTT: Duration?
    private var roundRTTSum: Duration = .zero
    private var roundSamples = 0
    private var roundDelivered = 0
    private var roundLost = 0
    /// Segments delivered and declared lost in each of the last `lossRounds` rounds.
    private var lossHistory: [(delivered: Int, lost: Int)] = []
    private var lastReduction = 0
    /// The most segments in flight this round and the round before.
    private var inFlightHigh = 0
    private var inFlightHighBefore = 0
    /// Later-sent segments acked before a segment counts as lost.
    public private(set) var dupThreshold = 3
    private var reorderWindowMultiplier = 1
    private var roundsSinceSpurious = 0
    /// RACK: the latest-sent segment known delivered, when it went, and its RTT.
    private var rackOrder = 0
    private var rackSentAt: Duration = .zero
    private var rackRTT: Duration = .zero
    /// The highest sequence number the peer has reported holding. Its acks
    /// carry only the lowest blocks, so above this nothing is known.
    private var highestSacked: Int64 = 0
    /// When a segment sent before `rackOrder` will have been out too long.
    private var reorderDeadline: Duration?

    static let lossRounds = 8
    static let minimumRTTSpan: Duration = .seconds(10)

    // Receiving.
    private var receiveNext: Int64
    private var pieces: [Piece] = []
    private var delivered: [UInt8] = []
    private var peerFinAt: Int64?
    private var peerFinished = false
    private var ackDeadline: Duration?
    private var unackedSegments = 0
    private var advertisedWindow = 0

    // Polling (client).
    private var lastSentAt: Duration?
    private var idleInterval: Duration
    private var peerHasMore = false
    /// When the last `Polling.maximumOutstanding` segments were sent, oldest first.
    private var recentSends: [Duration] = []
    private var closedAt: Duration?

    private var resetState = false
    private var resetPending = false

    public init(session: UInt64, role: Role, configuration: Configuration = Configuration()) {
        self.session = session
        self.role = role
        self.configuration = configuration
        let clientStart = Int64(UInt32(truncatingIfNeeded: session))
        let serverStart = Int64(UInt32(truncatingIfNeeded: session >> 32))
        sendUnacked = role == .client ? clientStart : serverStart
        sendNext = sendUnacked
        receiveNext = role == .client ? serverStart : clientStart
        peerWindow = configuration.receiveBufferLimit
        retransmissionTimeout = configuration.initialRTO
        congestionWindow = Double(configuration.initialCongestionWindow)
        slowStartThreshold = Double(configuration.maximumCongestionWindow)
        idleInterval = configuration.polling.minimumInterval
    }

    public var state: State {
        if resetState { return .reset }
        if finAcked && peerFinished { return .closed }
        if localClosed || peerFinished { return .closing }
        return .open
    }

    /// The peer has ended its stream and every byte of it has been read or
    /// is in `readable()`.
    public var peerClosed: Bool { peerFinished }

    /// Bytes queued and not yet acknowledged.
    public var bufferedBytes: Int { sendQueue.count - queueHead }

    // MARK: Application side

    /// Queues bytes to send; returns how many were taken (the rest must be
    /// offered again once acks have made room). Nothing is taken after
    /// `close()` or a reset.
    @discardableResult
    public mutating func send(_ bytes: [UInt8]) -> Int {
        guard !localClosed, !resetState else { return 0 }
        let taken = min(bytes.count, configuration.sendBufferLimit - bufferedBytes)
        guard taken > 0 else { return 0 }
        sendQueue += bytes.prefix(taken)
        return taken
    }

    /// In-order bytes that have arrived, each byte once.
    public mutating func readable() -> [UInt8] {
        let out = delivered
        delivered = []
        // Tell the peer when reading reopened a window it may be waiting on.
        if !out.isEmpty && advertisedWindow < configuration.receiveBufferLimit / 4 && receiveWindow >= configuration.receiveBufferLimit / 2 {
            ackDeadline = ackDeadline ?? .zero
        }
        return out
    }

    /// Ends this end's stream once everything queued has been sent (FIN).
    public mutating func close() {
        localClosed = true
    }

    /// Aborts the connection both ways; the next segment tells the peer.
    public mutating func reset() {
        guard !resetState else { return }
        abort()
        resetPending = true
    }

    private mutating func abort() {
        resetState = true
        sendQueue = []
        queueHead = 0
        flights = []
        pieces = []
        rtoDeadline = nil
        ackDeadline = nil
    }

    // MARK: Inbound

    /// Handles one segment from the peer (already decoded).
    public mutating func receive(_ segment: ARQSegment, now: Duration) {
        guard segment.session == session else {
            counters.foreignDropped += 1
            return
        }
        guard !resetState else { return }
        counters.segmentsReceived += 1
        if segment.flags.contains(.reset) {
            abort()
            return
        }
        peerHasMore = segment.flags.contains(.more)
        if segment.carriesData || peerHasMore || segment.flags.contains(.fin) {
            idleInterval = configuration.polling.minimumInterval
        }
        processAck(segment, now: now)
        processData(segment, now: now)
        noteClosed(now: now)
    }

    private var sendLimit: Int64 { sendNext + (finSent ? 1 : 0) }

    private mutating func processAck(_ segment: ARQSegment, now: Duration) {
        let ack = Self.unwrap(segment.acknowledgement, near: sendUnacked)
        guard ack >= sendUnacked, ack <= sendLimit else { return } // stale, or acks what was never sent
        peerWindow = segment.windowBytes
        var newlyAcked = 0
        var roundEnded = false
        var sample: Duration?
        let progressed = ack > sendUnacked
        if progressed {
            let dataAck = min(ack, sendNext)
            queueHead += Int(dataAck - sendUnacked)
            sendUnacked = dataAck
            if finSent && ack == sendNext + 1 { finAcked = true }
            if queueHead > 4096 && queueHead * 2 > sendQueue.count {
                sendQueue.removeFirst(queueHead)
                queueHead = 0
            }
            while let first = flights.first, first.end <= ack {
                if !first.sacked {
                    newlyAcked += 1
                    noteDelivery(of: first, now: now, sample: &sample, roundEnded: &roundEnded)
                }
                flights.removeFirst()
            }
            if !flights.isEmpty && flights[0].start < ack {
                let cut = Int(ack - flights[0].start)
                flights[0].start = ack
                flights[0].length -= cut
            }
            consecutiveTimeouts = 0
            retransmissionTimeout = baseRTO
        }
        for block in segment.blocks {
            let start = Self.unwrap(block.start, near: ack)
            let end = start + Int64(block.end &- block.start)
            highestSacked = max(highestSacked, end)
            for i in flights.indices where !flights[i].sacked && flights[i].start >= start && flights[i].end <= end {
                noteDelivery(of: flights[i], now: now, sample: &sample, roundEnded: &roundEnded)
                flights[i].sacked = true
                flights[i].lost = false
                newlyAcked += 1
            }
        }
        if let sample { updateRTT(sample, now: now) }
        if newlyAcked > 0 {
            roundDelivered += newlyAcked
            // Grow only a window in use (RFC 7661), not one an idle sender never filled.
            if Double(max(inFlightHigh, inFlightHighBefore)) * 2 >= congestionWindow { grow(by: newlyAcked) }
            if roundEnded { endRound() }
        }
        detectLosses(now: now)
        if progressed || newlyAcked > 0 { armRTO(now: now) }
    }

    /// Bookkeeping for a segment the peer has acked (cumulatively or selectively).
    private mutating func noteDelivery(of flight: Flight, now: Duration, sample: inout Duration?, roundEnded: inout Bool) {
        let elapsed = now - flight.sentAt
        // Only a segment sent after any known delivered gives an RTT sample:
        // an older one may have waited unreported (acks carry only the
        // lowest blocks) for holes below it to fill.
        if flight.transmissions == 1 && flight.sendOrder > rackOrder { sample = elapsed }
        // An ack sooner than any round trip after the last transmission is for an earlier one.
        let forEarlier = flight.transmissions > 1 && elapsed < (minimumRTT ?? .zero) * 3 / 4
        if flight.markedLost && (flight.lost || forEarlier) { noteSpuriousLoss() }
        if flight.sendOrder > rackOrder && !(flight.transmissions > 1 && elapsed < (minimumRTT ?? .zero)) {
            rackOrder = flight.sendOrder
            rackSentAt = flight.sentAt
            rackRTT = elapsed
        }
        if flight.sendOrder > roundEndOrder { roundEnded = true }
    }

    /// A segment declared lost had arrived: the path reorders more than
    /// loss detection allowed for, so allow more, and take back the loss.
    private mutating func noteSpuriousLoss() {
        counters.spuriousLosses += 1
        roundLost -= 1
        roundsSinceSpurious = 0
        dupThreshold = min(dupThreshold * 2, max(3, configuration.maximumCongestionWindow))
        reorderWindowMultiplier = min(reorderWindowMultiplier + 1, 16)
    }

    /// The RACK reordering window: a quarter of the minimum RTT per step of
    /// reordering seen, at most an RTO's worth (srtt + 4 x rttvar).
    private var reorderWindow: Duration {
        guard let minimumRTT else { return (smoothedRTT ?? rackRTT) / 4 }
        return min(minimumRTT / 4 * reorderWindowMultiplier, (smoothedRTT ?? minimumRTT) + rttVariance * 4)
    }

    /// The RTO restarts whenever an ack shows something new arrived (RFC
    /// 6298 restarts it on cumulative progress; selective progress counts
    /// too, since acks report only the lowest blocks and a segment above
    /// them can wait unreported for the holes below to fill). While acks
    /// come, later arrivals find losses; the RTO is for when they stop.
    private mutating func armRTO(now: Duration) {
        rtoDeadline = flights.contains(where: { !$0.sacked }) ? now + retransmissionTimeout : nil
    }

    /// One round trip's worth of acks has come back: judge whether the path
    /// is congested, and shrink the window if so.
    private mutating func endRound() {
        rounds += 1
        roundEndOrder = sendOrder
        inFlightHighBefore = inFlightHigh
        inFlightHigh = 0
        let lostThisRound = max(0, roundLost)
        lossHistory.append((roundDelivered, lostThisRound))
        if lossHistory.count > Self.lossRounds { lossHistory.removeFirst() }
        roundDelivered = 0
        roundLost = 0
        let roundMinimum = roundMinimumRTT
        let roundMean = roundSamples > 0 ? roundRTTSum / roundSamples : nil
        roundMinimumRTT = nil
        roundRTTSum = .zero
        roundSamples = 0
        roundsSinceSpurious += 1
        if roundsSinceSpurious >= 16 {
            roundsSinceSpurious = 0
            dupThreshold = max(3, dupThreshold / 2)
            reorderWindowMultiplier = max(1, reorderWindowMultiplier - 1)
        }
        // The round after a reduction was mostly sent before it.
        guard rounds >= lastReduction + 2 else { return }
        var queueing = false
        if let roundMinimum, let roundMean, let minimumRTT {
            // A standing queue lifts every sample of the round alike; a
            // jittery path lifts the minimum less than it spreads the
            // samples. A little queueing counts only with loss (the queue
            // overflowed), since on a jittery path delay alone would
            // throttle for nothing; much queueing (over twice the minimum
            // RTT, and the noise) counts alone.
            let delay = roundMinimum - minimumRTT
            let noise = max(roundMean - roundMinimum, rttVariance * 2)
            queueing = (lostThisRound > 0 && delay > max(minimumRTT / 4, .milliseconds(10), noise))
                || delay > max(minimumRTT * 2, .milliseconds(40), noise * 2)
        }
        let delivered = lossHistory.reduce(0) { $0 + $1.delivered }
        let lost = lossHistory.reduce(0) { $0 + $1.lost }
        let lossRate = delivered + lost >= 50 ? Double(lost) / Double(delivered + lost) : 0
        let lossy = lossRate > configuration.lossTolerance
        guard queueing || lossy else { return }
        var factor = 1.0
        // To what the path holds without the queue: the window times the
        // minimum over the round's smallest RTT; then the queue drains and
        // the minimum RTT can be measured again.
        if let roundMinimum, let minimumRTT, queueing { factor = minimumRTT / roundMinimum }
        if lossy { factor = min(factor, max(0.5, 1 - lossRate / 2)) }
        congestionWindow = max(2, congestionWindow * factor)
        slowStartThreshold = congestionWindow
        lastReduction = rounds
        lossHistory.removeAll()
        counters.congestionReductions += 1
    }

    /// A segment is lost when `dupThreshold` segments sent after it have
    /// been acked (while no reordering has been seen, with fewer in flight,
    /// all the others: early retransmit, RFC 5827), or when a segment sent
    /// after it has been acked and it has been out for that segment's RTT
    /// plus the reordering window (RACK); `reorderDeadline` is when the next
    /// such verdict falls due. Losses do not shrink the window (`endRound`
    /// judges the loss rate).
    private mutating func detectLosses(now: Duration) {
        reorderDeadline = nil
        guard rackOrder > 0 || flights.contains(where: \.sacked) else { return }
        let threshold = dupThreshold > 3 ? dupThreshold : min(3, max(1, flights.count - 1))
        let window = reorderWindow
        var laterSacked = 0
        var newLoss = false
        for i in flights.indices.sorted(by: { flights[$0].sendOrder > flights[$1].sendOrder }) {
            if flights[i].sacked {
                laterSacked += 1
                continue
            }
            // Above what the peer reported, it may have arrived unreported.
            guard !flights[i].lost, flights[i].start < highestSacked else { continue }
            var lost = laterSacked >= threshold
            if !lost && flights[i].sendOrder < rackOrder {
                let due = flights[i].sentAt + rackRTT + window
                if due <= now {
                    lost = true
                } else {
                    reorderDeadline = min(reorderDeadline ?? due, due)
                }
            }
            if lost {
                flights[i].lost = true
                flights[i].markedLost = true
                counters.fastRetransmits += 1
                roundLost += 1
                newLoss = true
            }
        }
        if newLoss { retransmitCredit = 1 }
    }

    private mutating func grow(by segments: Int) {
        if congestionWindow < slowStartThreshold {
            congestionWindow += Double(segments)
        } else {
            congestionWindow += Double(segments) / congestionWindow
        }
        congestionWindow = min(congestionWindow, Double(configuration.maximumCongestionWindow))
    }

    /// RFC 6298, section 2; also the windowed minimum and the round's minimum.
    private mutating func updateRTT(_ sample: Duration, now: Duration) {
        if now - minimumRTTBucketStart >= Self.minimumRTTSpan {
            minimumRTTPrevious = minimumRTTCurrent
            minimumRTTCurrent = nil
            minimumRTTBucketStart = now
        }
        minimumRTTCurrent = min(minimumRTTCurrent ?? sample, sample)
        roundMinimumRTT = min(roundMinimumRTT ?? sample, sample)
        roundRTTSum += sample
        roundSamples += 1
        if let srtt = smoothedRTT {
            let error = srtt > sample ? srtt - sample : sample - srtt
            rttVariance = rttVariance * 3 / 4 + error / 4
            smoothedRTT = srtt * 7 / 8 + sample / 8
        } else {
            smoothedRTT = sample
            rttVariance = sample / 2
        }
        retransmissionTimeout = baseRTO
    }

    /// The RTO without backoff.
    private var baseRTO: Duration {
        guard let srtt = smoothedRTT else { return configuration.initialRTO }
        return min(max(srtt + max(rttVariance * 4, .milliseconds(1)), configuration.minimumRTO), configuration.maximumRTO)
    }

    private var receiveWindow: Int { max(0, configuration.receiveBufferLimit - delivered.count) }

    private mutating func processData(_ segment: ARQSegment, now: Duration) {
        let fin = segment.flags.contains(.fin)
        guard segment.carriesData || fin else { return }
        let start = Self.unwrap(segment.sequence, near: receiveNext)
        let end = start + Int64(segment.payload.count)
        let windowEnd = receiveNext + Int64(receiveWindow)
        if end + (fin ? 1 : 0) <= receiveNext {
            counters.duplicatesDropped += 1
            ackDeadline = now
            return
        }
        guard start < windowEnd || (start == windowEnd && segment.payload.isEmpty) else {
            counters.outOfWindowDropped += 1
            ackDeadline = now
            return
        }
        if fin && end <= windowEnd && peerFinAt == nil { peerFinAt = end }
        let low = max(start, receiveNext)
        let high = min(end, windowEnd)
        let inOrder = start <= receiveNext && pieces.isEmpty
        var added = false
        if low < high {
            let slice = segment.payload[Int(low - start) ..< Int(high - start)]
            added = insert(slice, at: low)
        }
        if !added && !(fin && !peerFinished) { counters.duplicatesDropped += 1 }
        while let first = pieces.first, first.start == receiveNext {
            delivered += first.bytes
            receiveNext = first.end
            pieces.removeFirst()
        }
        if let finAt = peerFinAt, finAt == receiveNext, !peerFinished {
            receiveNext += 1
            peerFinished = true
        }
        unackedSegments += 1
        if inOrder && added && unackedSegments < 2 && !peerFinished {
            let delayed = now + configuration.ackDelay
            ackDeadline = ackDeadline.map { min($0, delayed) } ?? delayed
        } else {
            ackDeadline = now
        }
    }

    /// Stores the parts of `bytes` (at `start`) not held yet; true if any were new.
    private mutating func insert(_ bytes: ArraySlice<UInt8>, at start: Int64) -> Bool {
        let end = start + Int64(bytes.count)
        var cursor = start
        var i = pieces.firstIndex(where: { $0.end > start }) ?? pieces.count
        var added = false
        while cursor < end {
            if i < pieces.count && pieces[i].start <= cursor {
                cursor = max(cursor, pieces[i].end)
                i += 1
                continue
            }
            let next = i < pieces.count ? min(pieces[i].start, end) : end
            let from = bytes.startIndex + Int(cursor - start)
            pieces.insert(Piece(start: cursor, bytes: Array(bytes[from ..< from + Int(next - cursor)])), at: i)
            added = true
            i += 1
            cursor = next
        }
        return added
    }

    // MARK: Outbound

    /// What to transmit now, in at most `budget` bytes: a reset, then
    /// retransmissions, then new data (or FIN) within the congestion and
    /// peer windows, then a pure ack or poll when one is due. Nil when
    /// nothing is due or the rate cap says wait; call again by `nextDeadline()`.
    public mutating func nextSegment(now: Duration, budget: Int) -> ARQSegment? {
        if resetPending {
            resetPending = false
            return stamp(ARQSegment(session: session, flags: .reset, sequence: 0, acknowledgement: 0, window: 0), now: now)
        }
        guard !resetState, budget >= ARQSegment.headerLength else { return nil }
        expireTimer(now: now)
        if resetState { return nextSegment(now: now, budget: budget) }
        if let due = reorderDeadline, due <= now { detectLosses(now: now) }
        if let paced = pacedUntil, now < paced { return nil }
        var segment = header(budget: budget)
        let room = budget - segment.encodedLength
        if room > 0, let index = flights.firstIndex(where: { $0.lost }), canRetransmit {
            return stamp(retransmit(index, room: room, into: segment, now: now), now: now)
        }
        if case let (length, fin)? = newData(room: room) {
            let start = sendNext
            segment.sequence = UInt32(truncatingIfNeeded: start)
            segment.payload = Array(sendQueue[queueHead + Int(start - sendUnacked) ..< queueHead + Int(start - sendUnacked) + length])
            if fin { segment.flags.insert(.fin); finSent = true }
            sendNext += Int64(length)
            flights.append(Flight(start: start, length: length, fin: fin, sentAt: now, sendOrder: nextOrder(), transmissions: 1))
            if rtoDeadline == nil { rtoDeadline = now + retransmissionTimeout }
            return stamp(segment, now: now)
        }
        let ackDue = ackDeadline.map { $0 <= now } ?? false
        let pipelineDue = pipelineDeadline().map { $0 <= now } ?? false
        let idleDue = idleDeadline().map { $0 <= now } ?? false
        guard ackDue || pipelineDue || idleDue else { return nil }
        if role == .client {
            segment.flags.insert(.poll)
            if idleDue && !ackDue && !pipelineDue && !peerHasMore {
                idleInterval = min(idleInterval * 2, configuration.polling.maximumInterval)
            }
        }
        return stamp(segment, now: now)
    }

    /// The server's answer to one query: what `nextSegment` gives, or else a
    /// pure ack (or a reset once the connection is reset), so that every
    /// query is answered.
    public mutating func answer(now: Duration, budget: Int) -> ARQSegment {
        if let segment = nextSegment(now: now, budget: budget) { return segment }
        if resetState { return ARQSegment(session: session, flags: .reset, sequence: 0, acknowledgement: 0, window: 0) }
        return stamp(header(budget: budget), now: now)
    }

    /// A poll sent now whether or not one is due (client): after data went
    /// up, so that the server holds a query for the reply. Nil once reset.
    public mutating func poll(now: Duration, budget: Int) -> ARQSegment? {
        guard role == .client, !resetState, budget >= ARQSegment.headerLength else { return nil }
        var segment = header(budget: budget)
        segment.flags.insert(.poll)
        return stamp(segment, now: now)
    }

    /// When to call `nextSegment` again at the latest: an RTO, a delayed
    /// ack, a poll, or the rate cap's next slot when something waits.
    /// Nil when nothing will be due without new input.
    public func nextDeadline() -> Duration? {
        if resetPending { return .zero }
        guard !resetState else { return nil }
        var deadlines: [Duration] = []
        if let rto = rtoDeadline { deadlines.append(rto) }
        if let reorder = reorderDeadline { deadlines.append(reorder) }
        for pure in [ackDeadline, pipelineDeadline(), idleDeadline()].compactMap({ $0 }) { deadlines.append(max(pure, pacedUntil ?? pure)) }
        if (flights.contains(where: { $0.lost }) && canRetransmit) || newData(room: Int.max) != nil {
            deadlines.append(pacedUntil ?? .zero)
        }
        return deadlines.min()
    }

    /// Whether something is due at `now` that an answer should carry: data
    /// (a retransmission, new data or FIN), a reset, or a timer that expired
    /// (RTO, reordering, delayed ack). A server holding a query answers it at
    /// once when this is true, and otherwise lets it wait for data.
    public func hasSegmentToSend(now: Duration) -> Bool {
        resetPending || (nextDeadline().map { $0 <= now } ?? false)
            || (flights.contains(where: { $0.lost }) && canRetransmit) || newData(room: Int.max) != nil
    }

    private var canRetransmit: Bool {
        retransmitCredit > 0 || Double(flights.filter(\.inFlight).count) < congestionWindow.rounded(.down)
    }

    /// Length of new data and whether FIN goes with it, or nil if nothing may go.
    private func newData(room: Int) -> (Int, Bool)? {
        guard !finSent, room > 0 else { return nil }
        guard Double(flights.filter(\.inFlight).count) < max(1, congestionWindow.rounded(.down)) else { return nil }
        let unsent = Int(Int64(bufferedBytes) - (sendNext - sendUnacked))
        let allowed = Int(sendUnacked + Int64(peerWindow) - sendNext)
        // With nothing in flight, probe a closed window with one byte.
        var length = min(unsent, room, flights.isEmpty ? max(allowed, 1) : allowed)
        length = max(length, 0)
        let fin = localClosed && length == unsent
        guard length > 0 || fin else { return nil }
        return (length, fin)
    }

    private var polls: Bool { role == .client && !(state == .closed && lingerOver) }

    /// While the server says it has more, the client keeps up to
    /// `maximumOutstanding` queries per round trip going. Counting sends per
    /// round trip rather than answers per query keeps duplicated answers
    /// (resolver retries) from multiplying the polls.
    private func pipelineDeadline() -> Duration? {
        guard polls, peerHasMore else { return nil }
        guard recentSends.count >= configuration.polling.maximumOutstanding, let oldest = recentSends.first else { return lastSentAt ?? .zero }
        return oldest + (smoothedRTT ?? configuration.polling.minimumInterval)
    }

    /// When the client polls with nothing else to do (at once before anything was sent).
    private func idleDeadline() -> Duration? {
        guard polls else { return nil }
        return lastSentAt.map { $0 + idleInterval } ?? .zero
    }

    private var lingerOver: Bool {
        guard let closedAt, let lastSentAt else { return false }
        return lastSentAt >= closedAt + configuration.polling.linger
    }

    private mutating func expireTimer(now: Duration) {
        guard let deadline = rtoDeadline, deadline <= now else { return }
        guard flights.contains(where: { !$0.sacked }) else {
            rtoDeadline = nil
            return
        }
        counters.timeouts += 1
        consecutiveTimeouts += 1
        if consecutiveTimeouts > configuration.maximumTimeouts {
            reset()
            return
        }
        let inFlight = flights.filter(\.inFlight).count
        for i in flights.indices where !flights[i].sacked {
            flights[i].lost = true
            flights[i].markedLost = false
        }
        // Further timeouts in a row (an outage) leave the threshold where
        // the first put it, so that the window comes back fast.
        if consecutiveTimeouts == 1 { slowStartThreshold = max(Double(inFlight) / 2, 2) }
        congestionWindow = 1
        reorderDeadline = nil
        lossHistory.removeAll()
        roundDelivered = 0
        roundLost = 0
        roundEndOrder = sendOrder
        lastReduction = rounds
        retransmissionTimeout = min(retransmissionTimeout * 2, configuration.maximumRTO)
        rtoDeadline = now + retransmissionTimeout
    }

    private mutating func retransmit(_ index: Int, room: Int, into header: ARQSegment, now: Duration) -> ARQSegment {
        if flights[index].length > room {
            var tail = flights[index]
            tail.start += Int64(room)
            tail.length -= room
            flights[index].length = room
            flights[index].fin = false
            flights.insert(tail, at: index + 1)
        }
        retransmitCredit = max(0, retransmitCredit - 1)
        counters.retransmissions += 1
        flights[index].lost = false
        flights[index].transmissions += 1
        flights[index].sentAt = now
        flights[index].sendOrder = nextOrder()
        if rtoDeadline == nil { rtoDeadline = now + retransmissionTimeout }
        let flight = flights[index]
        var segment = header
        segment.sequence = UInt32(truncatingIfNeeded: flight.start)
        let offset = queueHead + Int(flight.start - sendUnacked)
        segment.payload = Array(sendQueue[offset ..< offset + flight.length])
        if flight.fin { segment.flags.insert(.fin) }
        return segment
    }

    private mutating func nextOrder() -> Int {
        inFlightHigh = max(inFlightHigh, flights.count(where: \.inFlight) + 1)
        sendOrder += 1
        return sendOrder
    }

    /// A segment with this end's ack, window and as many blocks as fit in a
    /// third of the budget.
    private func header(budget: Int) -> ARQSegment {
        let window = receiveWindow / ARQSegment.windowUnit
        var segment = ARQSegment(session: session, sequence: UInt32(truncatingIfNeeded: sendNext), acknowledgement: UInt32(truncatingIfNeeded: receiveNext), window: UInt16(min(window, Int(UInt16.max))))
        let blockBudget = (budget - ARQSegment.headerLength) / 3
        var merged: [(Int64, Int64)] = []
        for piece in pieces {
            if let last = merged.last, last.1 == piece.start {
                merged[merged.count - 1].1 = piece.end
            } else {
                merged.append((piece.start, piece.end))
            }
        }
        for (start, end) in merged.prefix(configuration.maximumBlocks) {
            let block = ARQSegment.Block(start: UInt32(truncatingIfNeeded: start), end: UInt32(truncatingIfNeeded: end))
            guard ARQSegment.encodedLength(of: segment.blocks + [block], acknowledgement: segment.acknowledgement) <= blockBudget else { break }
            segment.blocks.append(block)
        }
        return segment
    }

    /// Bookkeeping for every segment that leaves.
    private mutating func stamp(_ segment: ARQSegment, now: Duration) -> ARQSegment {
        var segment = segment
        if role == .server && hasPendingOutput { segment.flags.insert(.more) }
        counters.segmentsSent += 1
        lastSentAt = now
        if role == .client {
            recentSends.append(now)
            if recentSends.count > configuration.polling.maximumOutstanding { recentSends.removeFirst() }
        }
        ackDeadline = nil
        unackedSegments = 0
        advertisedWindow = segment.windowBytes
        if let rate = configuration.rateLimit { pacedUntil = now + .seconds(1) / rate }
        noteClosed(now: now)
        return segment
    }

    private var hasPendingOutput: Bool {
        flights.contains(where: { $0.lost }) || sendNext - sendUnacked < Int64(bufferedBytes) || (localClosed && !finSent)
    }

    private mutating func noteClosed(now: Duration) {
        if closedAt == nil && state == .closed { closedAt = now }
    }

    /// The 64-bit sequence number nearest `reference` whose low 32 bits are `value`.
    static func unwrap(_ value: UInt32, near reference: Int64) -> Int64 {
        reference + Int64(Int32(bitPattern: value &- UInt32(truncatingIfNeeded: reference)))
    }
}
