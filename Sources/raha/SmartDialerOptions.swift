import ArgumentParser
import Foundation
import Logging
import NIOCore
import RahaProxy

/// The racing dialer's options, shared by `raha connect` and `raha doctor`.
struct ProbeOptions: ParsableArguments {
    @Option(help: "Plain http:// URL fetched through each transport to verify it gets through.")
    var probeURL = ProbeURL.androidConnectivityCheck

    @Option(help: "Seconds a probe (and a stream opening) may take before the transport counts as blocked.")
    var probeTimeout = 6.0

    func validate() throws {
        guard probeTimeout > 0, probeTimeout <= 300 else { throw ValidationError("--probe-timeout: give seconds between 0 and 300, e.g. 6") }
    }

    func makeProbe() throws -> ConnectivityProbe {
        let url: ProbeURL
        do { url = try ProbeURL(parsing: probeURL) } catch { throw UsageFailure("--probe-url: \(error)") }
        return ConnectivityProbe(url: url, deadline: .milliseconds(Int64(probeTimeout * 1000)))
    }
}

struct SmartDialerOptions: ParsableArguments {
    @OptionGroup var probe: ProbeOptions

    @Option(help: "Milliseconds between starting one transport's probe and the next (RFC 8305's attempt delay).")
    var stagger = 250

    @Option(help: "Directory for the per-network memory of which transport works (default: $XDG_STATE_HOME/raha or ~/.local/state/raha).")
    var state: String?

    @Flag(help: "Do not remember which transport works on which network.")
    var noMemory = false

    func validate() throws {
        guard stagger >= 0, stagger <= 10_000 else { throw ValidationError("--stagger: give milliseconds between 0 and 10000, e.g. 250") }
    }

    /// A SmartDialer over the keys' dialers (even just one, so a blocked key is reported clearly).
    func makeDialer(keys: [String], dialers: [StreamDialer], eventLoop: EventLoop, logger: Logger) throws -> SmartDialer {
        var configuration = SmartDialer.Configuration(probe: try probe.makeProbe())
        configuration.stagger = .milliseconds(Int64(stagger))
        let candidates = zip(keys, dialers).map { SmartDialer.Candidate(dialer: $1, fingerprint: PathMemory.fingerprint(ofKey: $0)) }
        let memory = noMemory ? nil : SmartDialer.Memory(
            store: PathMemory(directory: state.map { URL(fileURLWithPath: $0) } ?? PathMemory.defaultDirectory))
        return SmartDialer(candidates: candidates, configuration: configuration, memory: memory, eventLoop: eventLoop, logger: logger)
    }
}
