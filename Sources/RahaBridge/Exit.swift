#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#else
import Darwin
#endif
import NIOCore
import NIOPosix
import RahaWire

/// Opens the bridge's side of a proxied stream: resolves the destination
/// (off the event loop), applies the exit policy to every address, and
/// connects to the first allowed one that answers.
///
/// In a relay chain (`onward` set: a domestic relay in front of a bridge
/// abroad) streams go on through that access key instead: names are
/// resolved at the far end, never here, and address literals still meet
/// this bridge's policy. UDP goes on through the key's UDP association.
public struct Exit: Sendable {
    public var policy: ExitPolicy
    public var connectTimeout: TimeAmount
    public var onward: StreamDialer?
    let threadPool: NIOThreadPool

    public init(policy: ExitPolicy, threadPool: NIOThreadPool, connectTimeout: TimeAmount = .seconds(10), onward: StreamDialer? = nil) {
        self.policy = policy
        self.threadPool = threadPool
        self.connectTimeout = connectTimeout
        self.onward = onward
    }

    public enum ExitError: Error, CustomStringConvertible {
        case refusedByPolicy
        case unresolvable
        public var description: String {
            switch self {
            case .refusedByPolicy: return "the destination is a private, loopback or link-local address, which this bridge refuses (start it with --allow-private to allow)"
            case .unresolvable: return "the destination name did not resolve"
            }
        }
    }

    /// Connects to `target`, directly or through the onward key.
    public func connect(to target: Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<Channel> {
        if let onward {
            guard !refusesOnward(target) else { return eventLoop.makeFailedFuture(ExitError.refusedByPolicy) }
            return onward.dial(target, on: eventLoop)
        }
        return resolve(target, on: eventLoop).flatMap { addresses in
            let allowed = addresses.filter { policy.allows($0) }
            guard !allowed.isEmpty else {
                return eventLoop.makeFailedFuture(addresses.isEmpty ? ExitError.unresolvable : ExitError.refusedByPolicy)
            }
            return connectFirst(allowed[...], on: eventLoop, lastError: nil)
        }
    }

    /// In a relay chain: whether `target` is an address literal this bridge's
    /// policy refuses (names go on unresolved, to be judged at the far end).
    func refusesOnward(_ target: Endpoint) -> Bool {
        guard let literal = try? SocketAddress(ipAddress: target.hostText, port: Int(target.port)) else { return false }
        return !policy.allows(literal)
    }

    private func connectFirst(_ addresses: ArraySlice<SocketAddress>, on eventLoop: EventLoop, lastError: Error?) -> EventLoopFuture<Channel> {
        guard let address = addresses.first else {
            return eventLoop.makeFailedFuture(lastError ?? ExitError.unresolvable)
        }
        return ClientBootstrap.rahaStream(group: eventLoop, connectTimeout: connectTimeout)
            .connect(to: address)
            .flatMapError { error in
                connectFirst(addresses.dropFirst(), on: eventLoop, lastError: error)
            }
    }

    func resolve(_ target: Endpoint, on eventLoop: EventLoop) -> EventLoopFuture<[SocketAddress]> {
        switch target.host {
        case .ipv4, .ipv6:
            do {
                return eventLoop.makeSucceededFuture([try SocketAddress(ipAddress: target.hostText, port: Int(target.port))])
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
        case .domain(let name):
            let port = target.port
            // Clients such as curl --socks5-hostname send address literals as names.
            if let literal = try? SocketAddress(ipAddress: name, port: Int(port)) {
                return eventLoop.makeSucceededFuture([literal])
            }
            return threadPool.runIfActive(eventLoop: eventLoop) { Self.getaddrinfo(name, port: port) }
        }
    }

    /// Blocking name resolution; run it on the thread pool.
    static func getaddrinfo(_ name: String, port: UInt16) -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Darwin)
        hints.ai_socktype = SOCK_STREAM
        #else
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #endif
        var result: UnsafeMutablePointer<addrinfo>?
        guard Glibc.getaddrinfo(name, String(port), &hints, &result) == 0, let first = result else { return [] }
        defer { freeaddrinfo(first) }
        var out: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            if let sa = info.pointee.ai_addr {
                switch Int32(sa.pointee.sa_family) {
                case AF_INET:
                    let v4 = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
                    out.append(SocketAddress(v4, host: name))
                case AF_INET6:
                    let v6 = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee }
                    out.append(SocketAddress(v6, host: name))
                default: break
                }
            }
            cursor = info.pointee.ai_next
        }
        return out
    }
}
