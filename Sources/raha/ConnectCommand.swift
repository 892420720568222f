import ArgumentParser
import NIOCore
import NIOPosix
import RahaProxy
import RahaTransport
import RahaWire

struct ConnectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connect",
        abstract: "Run the local proxy (SOCKS5 and HTTP on one port) through one or more access keys.",
        discussion: """
        The keys are raced (in order, with staggered starts): each is tested with a verified \
        round trip to --probe-url, and the first that gets through carries the streams. When \
        a stream fails through it, the keys are raced again; races repeat in the background. \
        The winner is remembered per network (a hash, in --state) and tried first next time. \
        Domain names are resolved at the bridge, never locally.

        Examples:
          raha connect 'ss://…'
          raha connect 'trojan://…' 'ss://…' --listen 127.0.0.1:1080
          raha connect 'raha:1.…' --rules iran
          raha connect https://example.org/servers.json
          curl --socks5-hostname 127.0.0.1:1080 https://example.org/
          curl --proxy http://127.0.0.1:1080 https://example.org/
        """
    )

    @Argument(help: "Access keys (ss://…, trojan://… or dns://…), bundles (raha:…), files or https:// URLs of key lists or SIP008 JSON.")
    var keys: [String]

    @Option(help: "Split routing: a rules file (lines of `direct|proxy|block PATTERN`) or a built-in set (\(RoutingRules.builtIn.keys.sorted().joined(separator: ", "))).")
    var rules: String?

    @Option(help: "Where the local proxy listens, HOST:PORT.")
    var listen = "127.0.0.1:1080"

    @Option(help: "Require this user name (SOCKS5 username/password, HTTP Proxy-Authorization Basic).")
    var user: String?

    @Option(help: "The password that goes with --user.")
    var password: String?

    @Option(help: "Event-loop threads (default: one per core).")
    var threads: Int?

    @OptionGroup var smart: SmartDialerOptions

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard !keys.isEmpty else { throw ValidationError("give at least one access key, e.g. raha connect 'ss://…'") }
        guard (user == nil) == (password == nil) else { throw ValidationError("--user and --password go together") }
    }

    func run() async throws {
        ConnectionGate.raiseDescriptorLimit()
        var dialers: [StreamDialer] = []
        let keys = try await expandAccessKeys(self.keys)
        let rules = try loadRoutingRules(self.rules)
        for (index, text) in keys.enumerated() {
            do {
                dialers.append(try makeDialer(text))
            } catch {
                throw UsageFailure("access key \(index + 1): \(error)")
            }
        }
        let listenAt: Endpoint
        do { listenAt = try Endpoint(parsing: listen, defaultPort: 1080) } catch { throw UsageFailure("--listen: \(error)") }
        var credentials: ProxyCredentials?
        if let user, let password { credentials = ProxyCredentials(username: user, password: password) }
        let logger = logging.makeLogger(label: "raha.connect")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads ?? System.coreCount)
        let tunnel = try smart.makeDialer(keys: keys, dialers: dialers, eventLoop: group.next(), logger: logger)
        let front = ProxyFront(configuration: .init(listen: listenAt, credentials: credentials),
                               dialer: rules.map { RoutingDialer(rules: $0, tunnel: tunnel, logger: logger) } ?? tunnel,
                               group: group, logger: logger)
        do { try await front.start() } catch { throw UsageFailure("cannot listen on \(listen): \(error)") }
        let bound = front.localAddress.map { "\($0.ipAddress ?? listenAt.hostText):\($0.port ?? 0)" } ?? listen
        print("Local proxy (SOCKS5 and HTTP) listening on \(bound), through \(dialers.count) access key\(dialers.count == 1 ? "" : "s")")
        fflush(stdout)
        print(try await tunnel.start().get().line)
        fflush(stdout)
        // The proxy runs until the process is stopped; keep what it needs alive until then.
        while true {
            try await Task.sleep(for: .seconds(3600))
            withExtendedLifetime((front, tunnel)) {}
        }
    }
}

/// The dialer for one access key, by its scheme.
func makeDialer(_ text: String) throws -> StreamDialer {
    switch try AccessKey(text) {
    case .shadowsocks(let key): return try ShadowsocksDialer(key: key)
    case .trojan(let key): return try TrojanDialer(key: key)
    case .dns(let key): return DNSTunnelDialer(key: key)
    }
}
