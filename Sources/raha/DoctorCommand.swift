import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import RahaProxy

struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Test each access key from this network and say which ones get through.",
        discussion: """
        Each key is probed three times (a verified round trip to --probe-url through it; \
        once if that fails), \
        all keys at once, each under the probe timeout; keys that work are then timed \
        downloading --download-url. Tell a trusted helper the summary line so they know \
        which kind of key to send. Exits 0 if any key works, 1 if none does.

        Example:
          raha doctor 'trojan://…' 'ss://…' --download-url http://speed.example/10MB.bin
        """
    )

    @Argument(help: "Access keys (ss://…, trojan://… or dns://…), bundles (raha:…), files or https:// URLs of key lists or SIP008 JSON.")
    var keys: [String]

    @OptionGroup var probe: ProbeOptions

    @Option(help: "Plain http:// URL downloaded through each working key to measure throughput: up to 8 MiB or twice the probe timeout (default: none, skipped).")
    var downloadURL: String?

    @Flag(help: "Print the results as JSON instead of a table.")
    var json = false

    static let probesPerKey = 3
    static let downloadLimit = 8 * 1024 * 1024

    func validate() throws {
        guard !keys.isEmpty else { throw ValidationError("give at least one access key, e.g. raha doctor 'ss://…'") }
    }

    struct Result: Encodable {
        var transport: String
        var works: Bool
        var reason: String?
        var latencyMilliseconds: Int64?
        var throughputBytesPerSecond: Int64?
    }

    func run() async throws {
        var dialers: [StreamDialer] = []
        for (index, text) in try await expandAccessKeys(keys).enumerated() {
            do { dialers.append(try makeDialer(text)) } catch { throw UsageFailure("access key \(index + 1): \(error)") }
        }
        let probe = try self.probe.makeProbe()
        var download: ProbeURL?
        if let downloadURL {
            do { download = try ProbeURL(parsing: downloadURL) } catch { throw UsageFailure("--download-url: \(error)") }
        }
        let group = MultiThreadedEventLoopGroup.singleton
        let results = try await withThrowingTaskGroup(of: (Int, Result).self) { tasks in
            for (index, dialer) in dialers.enumerated() {
                tasks.addTask { (index, try await Self.examine(dialer, probe: probe, download: download, on: group.next())) }
            }
            var results = [Result?](repeating: nil, count: dialers.count)
            for try await (index, result) in tasks { results[index] = result }
            return results.map { $0! }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(results), as: UTF8.self))
        } else {
            printTable(results, measured: download != nil)
        }
        fflush(stdout)
        if !results.contains(where: \.works) { throw ExitCode(1) }
    }

    /// Three probes one after another (the median latency; one, if it fails), then the download if it works.
    private static func examine(_ dialer: StreamDialer, probe: ConnectivityProbe, download: ProbeURL?,
                                on eventLoop: EventLoop) async throws -> Result {
        var latencies: [Int64] = []
        var reason: String?
        for _ in 0..<probesPerKey {
            do {
                latencies.append(try await probe.run(through: dialer, on: eventLoop).get().nanoseconds / 1_000_000)
            } catch {
                reason = TransportFailure.reason(for: error)
                // A key that never answered is not worth two more deadlines.
                if latencies.isEmpty { break }
            }
        }
        var result = Result(transport: dialer.label, works: !latencies.isEmpty, reason: latencies.isEmpty ? reason : nil)
        guard !latencies.isEmpty else { return result }
        result.latencyMilliseconds = latencies.sorted()[latencies.count / 2]
        if let download {
            let measured = try? await ConnectivityProbe.measureThroughput(
                of: download, through: dialer, on: eventLoop, maxBytes: downloadLimit, deadline: probe.deadline * 2).get()
            result.throughputBytesPerSecond = measured.map { Int64($0.bytesPerSecond) }
        }
        return result
    }

    private func printTable(_ results: [Result], measured: Bool) {
        let header = ["transport", "works?", "reason if not", "latency", "throughput"]
        let rows = results.map { result in
            [result.transport, result.works ? "yes" : "no", result.reason ?? "",
             result.latencyMilliseconds.map { "\($0) ms" } ?? "",
             result.throughputBytesPerSecond.map(Self.rate) ?? (result.works ? (measured ? "failed" : "not measured") : "")]
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        for row in [header] + rows {
            print(row.indices.map { row[$0].padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
                .joined(separator: " | ").trimmingCharacters(in: .whitespaces))
        }
        if !measured { print("Throughput not measured: give --download-url http://… to measure it.") }
        let works = results.filter(\.works).map(\.transport), blocked = results.filter { !$0.works }.map(\.transport)
        if works.isEmpty {
            print("Nothing works here: blocked: \(blocked.joined(separator: ", ")). Only message channels remain on this network.")
        } else {
            print("Works here: \(works.joined(separator: ", "))" + (blocked.isEmpty ? "" : "; blocked: \(blocked.joined(separator: ", "))"))
        }
    }

    private static func rate(_ bytesPerSecond: Int64) -> String {
        if bytesPerSecond >= 1_000_000 { return "\(bytesPerSecond / 100_000 / 10).\(bytesPerSecond / 100_000 % 10) MB/s" }
        return "\(bytesPerSecond / 1000) kB/s"
    }
}
