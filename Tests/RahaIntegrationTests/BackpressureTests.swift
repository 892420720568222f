import Foundation
import Testing

extension RahaIntegration {
    /// A reader that stops reading must not make either end buffer what the
    /// source keeps sending: memory stays flat, and nothing is lost once
    /// reading resumes.
    @Suite("Backpressure")
    struct Backpressure {
        static let sourceMiB = 96

        @Test("a stalled reader: client and bridge memory stay flat while 96 MiB wait, and every byte arrives afterwards",
              arguments: ["chacha20-ietf-poly1305", "2022-blake3-aes-256-gcm"])
        func stalledReader(method: String) throws {
            let running = Processes()
            defer { running.stopAll() }
            let source = try ManagedProcess("byte_source.py", try Paths.tool("python3", package: "python3"),
                                            [Paths.fixtures.appendingPathComponent("byte_source.py").path, String(Self.sourceMiB)])
            running.add(source)
            let line = try source.waitForLine(startingWith: "byte source listening on 127.0.0.1:")
            let sourcePort = try #require(UInt16(line.split(separator: ":").last ?? ""))

            let password = method.hasPrefix("2022") ? randomPSK(bytes: 32) : randomPassword()
            let (bridge, keys) = try Peers.bridge([ssURI(method: method, password: password, port: try Ports.free())])
            running.add(bridge)
            let (connect, proxyPort) = try Peers.connect(keys)
            running.add(connect)
            let baseline = (client: try residentKiB(connect.pid), bridge: try residentKiB(bridge.pid))

            let socket = try RawTCP(port: proxyPort)
            try socket.send([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, UInt8(sourcePort >> 8), UInt8(sourcePort & 0xff)])
            #expect(try socket.read(exactly: 2) == [5, 0])
            #expect(try socket.read(exactly: 10).prefix(2) == [5, 0])
            var received = try socket.read(exactly: 1 << 20)

            // Stop reading. Let the pipeline fill up until memory stops changing.
            let settled = try settle { (try residentKiB(connect.pid), try residentKiB(bridge.pid)) }
            let growth = (client: settled.0 - baseline.client, bridge: settled.1 - baseline.bridge)
            let limitKiB = 24 * 1024
            #expect(growth.client < limitKiB, "raha connect grew by \(growth.client) KiB while the reader was stalled")
            #expect(growth.bridge < limitKiB, "raha bridge grew by \(growth.bridge) KiB while the reader was stalled")

            // Resume: every byte arrives, in order.
            let rest = socket.readToEnd()
            received += rest.bytes
            #expect(rest.ending == .eof)
            #expect(received.count == Self.sourceMiB << 20)
            #expect(Self.followsPattern(received), "the stream arrived altered")
        }

        /// True when `bytes` is 0, 1, …, 250, 0, 1, … (the source's pattern).
        static func followsPattern(_ bytes: [UInt8]) -> Bool {
            let period = (0..<(251 * 261)).map { UInt8($0 % 251) }
            return bytes.withUnsafeBytes { all in
                period.withUnsafeBytes { p in
                    var offset = 0
                    while offset < all.count {
                        let n = min(p.count, all.count - offset)
                        if memcmp(all.baseAddress! + offset, p.baseAddress!, n) != 0 { return false }
                        offset += n
                    }
                    return true
                }
            }
        }

        /// Samples until two readings half a second apart differ by under
        /// 256 KiB (at most 40 samples): a settle wait, not a speed check.
        func settle(_ sample: () throws -> (Int, Int)) throws -> (Int, Int) {
            var last = try sample()
            for _ in 0..<40 {
                Thread.sleep(forTimeInterval: 0.5)
                let now = try sample()
                if abs(now.0 - last.0) < 256 && abs(now.1 - last.1) < 256 { return now }
                last = now
            }
            return last
        }

        func residentKiB(_ pid: Int32) throws -> Int {
            let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                  let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else {
                throw TestFailure("no VmRSS for process \(pid)")
            }
            return kib
        }
    }
}
