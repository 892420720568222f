import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import RahaBridge
import RahaWire

struct BridgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bridge",
        abstract: "Run a bridge outside the censor's reach and print its access key.",
        discussion: """
        With no URI, makes a key once (kept in the data directory, mode 0600) and listens \
        on a random port on all addresses, TCP and UDP. Each URI is one more listener, in \
        access-key form; its host and port are where to listen.

        Examples:
          raha bridge
          raha bridge --host 203.0.113.7
          raha bridge 'ss://chacha20-ietf-poly1305:PASSWORD@0.0.0.0:8388'
          raha bridge 'ss://2022-blake3-aes-256-gcm:BASE64KEY@0.0.0.0:8389'
        """
    )

    @Argument(help: "Listeners as access keys (ss://…). Default: the stored default listener.")
    var listeners: [String] = []

    @Option(help: "Data directory for keys (default: $XDG_DATA_HOME/raha or ~/.local/share/raha).")
    var data: String?

    @Option(help: "Public address or name to put in printed access keys (default: this machine's first non-loopback address).")
    var host: String?

    @Flag(help: "Allow destinations in private, loopback and link-local ranges (off: the bridge is not a door into its own network).")
    var allowPrivate = false

    @Option(help: "Seconds before an idle connection closes (failed handshakes close after the same time).")
    var idleTimeout: Int64 = 300

    @Flag(help: "Print only the key text, no QR code.")
    var noQR = false

    @Option(help: "Event-loop threads (default: one per core).")
    var threads: Int?

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        raiseDescriptorLimit()
        var keys: [ShadowsocksKey] = []
        for text in listeners {
            do { keys.append(try ShadowsocksKey(parsing: text)) } catch { throw UsageFailure("listener \(keys.count + 1): \(error)") }
        }
        let directory = DataDirectory(path: data ?? DataDirectory.defaultPath)
        if keys.isEmpty {
            do {
                let (key, created) = try DefaultListener.loadOrCreate(in: directory)
                if created { print("Made a new bridge key in \(directory.path)/\(DefaultListener.fileName)") }
                keys.append(key)
            } catch { throw UsageFailure("\(error)") }
        }
        let logger = logging.makeLogger(label: "raha.bridge")
        let bridge = Bridge(
            configuration: .init(listeners: keys, policy: ExitPolicy(allowPrivate: allowPrivate), idleTimeout: .seconds(idleTimeout)),
            group: MultiThreadedEventLoopGroup(numberOfThreads: threads ?? System.coreCount), threadPool: NIOThreadPool.singleton, logger: logger)
        do { try await bridge.start() } catch { throw UsageFailure("cannot listen: \(error)") }

        let advertised = host ?? primaryAddress() ?? "127.0.0.1"
        for (key, bound) in zip(keys, bridge.boundAddresses) {
            let port = UInt16(bound.port ?? Int(key.server.port))
            let listenHost = key.server.hostText
            let wildcard = listenHost == "0.0.0.0" || listenHost == "::"
            var server = try Endpoint(parsing: wildcard ? advertised : listenHost, defaultPort: port)
            server.port = port
            let shown = try ShadowsocksKey(method: key.method, password: key.password, server: server, prefix: key.prefix, tag: key.tag)
            var listening = key.server
            listening.port = port
            print("Bridge listening on \(listening) (TCP and UDP), \(key.method.rawValue)")
            print("Access key: paste it into `raha connect`, or scan or paste it into the Outline app:")
            printAccessKey(shown.uri, qr: !noQR)
        }
        if host == nil {
            print("(If this machine is behind NAT, run with --host PUBLIC-ADDRESS so the key names an address others can reach.)")
        }
        fflush(stdout)
        while true { try await Task.sleep(for: .seconds(3600)) }
    }
}

/// The first up, non-loopback IPv4 address of this machine, if any.
func primaryAddress() -> String? {
    var list: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&list) == 0, let first = list else { return nil }
    defer { freeifaddrs(first) }
    var cursor: UnsafeMutablePointer<ifaddrs>? = first
    while let entry = cursor {
        cursor = entry.pointee.ifa_next
        let flags = Int32(entry.pointee.ifa_flags)
        guard flags & Int32(IFF_UP) != 0, flags & Int32(IFF_LOOPBACK) == 0,
              let addr = entry.pointee.ifa_addr, addr.pointee.sa_family == sa_family_t(AF_INET) else { continue }
        var sin = addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
        var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        guard inet_ntop(AF_INET, &sin.sin_addr, &buffer, socklen_t(buffer.count)) != nil else { continue }
        return String(cString: buffer)
    }
    return nil
}
