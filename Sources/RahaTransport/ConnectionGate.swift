import Logging
import NIOConcurrencyHelpers
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Caps the connections a process's listeners hold open at what its
/// descriptor limit can carry: each proxied connection needs two (the
/// accepted socket, and the one to the bridge or the destination), and some
/// are kept back for listeners, files, lookups and UDP.
///
/// A connection past the cap is accepted and closed at once, so that its
/// client learns straight away rather than waiting in the accept queue of a
/// process that can no longer accept, and the connections already open carry
/// on. (Should the limit be hit anyway, by mux streams each opening an exit,
/// the socket that cannot be made fails like a refused connection, and
/// SwiftNIO backs off accepting instead of spinning.)
public final class ConnectionGate: Sendable {
    /// The gate every listener of this process shares, sized from the soft
    /// descriptor limit when first used (after `raha` raised it to the hard one).
    public static let process = ConnectionGate(capacity: capacity(forDescriptorLimit: softDescriptorLimit()))

    public let capacity: Int
    private let state = NIOLockedValueBox(State())
    private let logger = Logger(label: "raha.gate")

    private struct State {
        var open = 0
        /// Refused since the gate last let one through: logged once when
        /// refusing starts, and again (with the count) when it ends.
        var refused = 0
    }

    public init(capacity: Int) {
        self.capacity = capacity
    }

    /// Connections at once for a descriptor limit: two each, after keeping
    /// back a sixteenth of the limit (at least 32).
    public static func capacity(forDescriptorLimit limit: Int) -> Int {
        max(1, (limit - max(32, limit / 16)) / 2)
    }

    public var openConnections: Int { state.withLockedValue { $0.open } }

    /// Takes a place for a new connection; false when there is none.
    public func admit() -> Bool {
        let (admitted, refusedBefore) = state.withLockedValue { state -> (Bool, Int) in
            guard state.open < capacity else {
                state.refused += 1
                return (false, state.refused - 1)
            }
            state.open += 1
            defer { state.refused = 0 }
            return (true, state.refused)
        }
        if !admitted && refusedBefore == 0 {
            logger.warning("refusing new connections: \(capacity) are open, all the descriptor limit allows; raise `ulimit -n` (hard limit) to carry more")
        } else if admitted && refusedBefore > 0 {
            logger.notice("accepting connections again (\(refusedBefore) turned away while full)")
        }
        return admitted
    }

    public func release() {
        state.withLockedValue { $0.open -= 1 }
    }

    /// Raises the soft descriptor limit to the hard one (each proxied
    /// connection needs two); `raha` does this first thing in every serving
    /// command. Returns the soft limit now in force.
    @discardableResult
    public static func raiseDescriptorLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(descriptorResource, &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(descriptorResource, &limit)
        }
        return softDescriptorLimit()
    }

    static func softDescriptorLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(descriptorResource, &limit) == 0 else { return 1024 }
        return Int(min(limit.rlim_cur, 1 << 20)) // "unlimited" is a huge number
    }

    #if canImport(Glibc)
    private static let descriptorResource = Int32(RLIMIT_NOFILE.rawValue)
    #else
    private static let descriptorResource = RLIMIT_NOFILE
    #endif
}

/// On a listening channel, ahead of SwiftNIO's acceptor: lets each accepted
/// socket through while the gate has room (giving the place back when the
/// connection closes), and closes it otherwise.
final class ConnectionGateHandler: ChannelInboundHandler {
    typealias InboundIn = Channel
    typealias InboundOut = Channel

    private let gate: ConnectionGate

    init(gate: ConnectionGate) { self.gate = gate }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let child = unwrapInboundIn(data)
        guard gate.admit() else {
            child.close(promise: nil)
            return
        }
        child.closeFuture.whenComplete { [gate] _ in gate.release() }
        context.fireChannelRead(data)
    }
}
