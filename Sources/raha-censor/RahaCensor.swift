import ArgumentParser
import CNetfilterQueue
import Foundation
import RahaLab
#if canImport(Glibc)
import Glibc
#endif

/// The censor lab's router program (issue 4): takes the packets an iptables NFQUEUE rule
/// queues, feeds each to a RahaLab censor and applies its verdict.
@main
struct RahaCensor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raha-censor",
        abstract: "Apply a censor profile to the packets of an NFQUEUE queue (needs root).",
        discussion: """
            Put packets in the queue first, e.g. in the router's namespace:
              iptables -A FORWARD -j NFQUEUE --queue-num 0
            Prints one line when the queue is bound; on SIGTERM or SIGINT prints a summary \
            of the verdicts and exits 0. Every decision is printed as it is made, one line: \
            "raha-censor: event ACTION SERVER-IP:PORT REASON" (ACTION: \(CensorEvent.Action.allCases.map(\.rawValue).joined(separator: ", "))); \
            active-probe also prints one line per probe: "raha-censor: probe SERVER KIND: suspect REACTION; reference REF REACTION". \
            Profiles: \(CensorProfile.allCases.map(\.rawValue).joined(separator: ", ")).
            """
    )

    @Option(help: "The NFQUEUE queue number (as in iptables' --queue-num).")
    var queue: UInt16

    @Option(help: "The censor profile.")
    var profile: String

    @Option(name: .customLong("allow-sni"), help: "A server name that sni-allowlist and throttle-unknown trust (repeatable).")
    var allowSNI: [String] = []

    @Option(help: "An IPv4 address that shutdown still lets through (repeatable).")
    var domestic: [String] = []

    @Option(help: "gfw-fet: the probability of blocking a non-exempt flow.")
    var probability: Double = 1.0

    @Option(help: "gfw-fet: the seed of the coin when --probability is below 1.")
    var seed: UInt64 = 0

    @Flag(name: .customLong("fail-closed"), help: "sni-allowlist: reset flows whose server name cannot be read from one packet.")
    var failClosed = false

    @Option(help: "active-probe: the plain web server (IP:PORT) suspects are compared with.")
    var reference: String?

    @Option(name: .customLong("reference-tls"), help: "active-probe: the HTTPS server (IP:PORT) suspects on port 443 are compared with (default: --reference).")
    var referenceTLS: String?

    @Option(name: .customLong("block-seconds"), help: "active-probe: how long a server that reacts unlike a web server is blocked.")
    var blockSeconds: Int = 600

    @Option(name: .customLong("probe-timeout"), help: "active-probe: seconds a probe waits for the server to end the connection.")
    var probeTimeout: Int = 8

    func validate() throws {
        guard (0...1).contains(probability) else { throw ValidationError("--probability must be between 0 and 1, not \(probability)") }
        guard blockSeconds > 0, probeTimeout > 0 else { throw ValidationError("--block-seconds and --probe-timeout must be positive") }
    }

    /// Parses "a.b.c.d:port" for the option named `option`.
    private func endpoint(_ text: String?, _ option: String) throws -> IPv4Endpoint? {
        guard let text else { return nil }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPv4Address(String(parts[0])), let port = UInt16(parts[1]), port > 0 else {
            throw ValidationError("\(option) \(text) is not an IPv4 address and port (a.b.c.d:port)")
        }
        return IPv4Endpoint(address, port)
    }

    func run() throws {
        let profile: CensorProfile
        do { profile = try CensorProfile(name: self.profile) } catch { throw ValidationError("\(error)") }
        var domesticAddresses = Set<IPv4Address>()
        for text in domestic {
            guard let address = IPv4Address(text) else {
                throw ValidationError("--domestic \(text) is not an IPv4 address (a.b.c.d)")
            }
            domesticAddresses.insert(address)
        }
        let probeReference = try endpoint(reference, "--reference")
        let probeReferenceTLS = try endpoint(referenceTLS, "--reference-tls")
        if profile == .activeProbe, probeReference == nil {
            throw ValidationError("active-probe needs --reference IP:PORT, a plain web server to compare suspects with")
        }
        guard geteuid() == 0 else {
            throw CensorError("raha-censor must run as root (it binds an NFQUEUE queue and sends raw packets)")
        }
        let censor = profile.makeCensor(CensorConfiguration(
            allowedServerNames: allowSNI, domesticAddresses: domesticAddresses,
            blockProbability: probability, seed: seed, failClosed: failClosed,
            probeReference: probeReference, probeReferenceTLS: probeReferenceTLS, probeBlockDuration: .seconds(blockSeconds)))

        // SIGTERM and SIGINT are taken with sigwait on this thread: block them before the
        // loop thread starts, so it inherits the mask.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let loop = try VerdictLoop(queue: queue, censor: censor, prober: Prober(timeout: .seconds(probeTimeout)))
        print("raha-censor: queue \(queue), profile \(profile.rawValue)")
        fflush(stdout)
        loop.start()

        var received: Int32 = 0
        while sigwait(&signals, &received) != 0 {}
        let counts = loop.counts
        print("raha-censor: summary: accepted \(counts.accepted), dropped \(counts.dropped), reset \(counts.reset) (signal \(received))")
        fflush(stdout)
        if let failure = loop.failure {
            FileHandle.standardError.write(Data("raha-censor: the verdict loop had stopped: \(failure)\n".utf8))
        }
        Glibc.exit(0)
    }
}

struct CensorError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
