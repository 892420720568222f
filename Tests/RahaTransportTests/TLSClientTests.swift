import NIOCore
import NIOEmbedded
import NIOSSL
import Testing
@testable import RahaTransport
@testable import RahaWire

@Suite struct ClientHelloFragmentingHandlerTests {
    /// The TLS records in `bytes`: (content type, payload).
    func records(_ bytes: [UInt8]) -> [(UInt8, [UInt8])] {
        var out: [(UInt8, [UInt8])] = []
        var index = 0
        while index + 5 <= bytes.count {
            let length = Int(bytes[index + 3]) << 8 | Int(bytes[index + 4])
            guard index + 5 + length <= bytes.count else { break }
            out.append((bytes[index], Array(bytes[index + 5 ..< index + 5 + length])))
            index += 5 + length
        }
        return out
    }

    @Test func theServerNameNeverTravelsWholeInOneRecordOrSegment() throws {
        let name = "blocked.example.org"
        let channel = EmbeddedChannel()
        let tls = try TLSClient(serverName: name, check: .none, alpn: ["http/1.1"])
        try channel.pipeline.syncOperations.addHandlers([ClientHelloFragmentingHandler(sizes: 4...9), try tls.makeHandler()])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()

        var segments: [[UInt8]] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { segments.append(Array(buffer.readableBytesView)) }
        let nameBytes = Array(name.utf8)
        #expect(segments.count > 3, "several TCP segments, each flushed alone")
        #expect(segments.count < 60, "only the start is cut small")
        for segment in segments {
            #expect(!segment.contains(subsequence: nameBytes), "a segment holds the whole name")
        }
        let stream = segments.flatMap { $0 }
        let parsed = records(stream)
        #expect(parsed.count > 1 && parsed.allSatisfy { $0.0 == 0x16 }, "several handshake records")
        #expect(parsed.reduce(0) { $0 + 5 + $1.1.count } == stream.count, "whole records, nothing else")
        for record in parsed {
            #expect(!record.1.contains(subsequence: nameBytes), "a record holds the whole name")
        }
        // Joined again, the records carry one ordinary ClientHello with the name.
        let hello = parsed.flatMap { $0.1 }
        #expect(hello.first == 0x01, "a ClientHello")
        #expect(Int(hello[1]) << 16 | Int(hello[2]) << 8 | Int(hello[3]) == hello.count - 4)
        #expect(hello.contains(subsequence: nameBytes))
        // The handler has stepped aside.
        #expect((try? channel.pipeline.syncOperations.handler(type: ClientHelloFragmentingHandler.self)) == nil)
        _ = try? channel.finish()
    }

    @Test func pinsAreCheckedAgainstTheLeafCertificate() throws {
        #expect(CertificateCheck(pin: [1, 2], allowInsecure: true) == .pinned([1, 2]), "a pin still applies with allowInsecure")
        #expect(CertificateCheck(pin: nil, allowInsecure: true) == .none)
        #expect(CertificateCheck(pin: nil, allowInsecure: false) == .system)
    }
}

extension Array where Element == UInt8 {
    func contains(subsequence: [UInt8]) -> Bool {
        guard subsequence.count <= count else { return false }
        return (0...(count - subsequence.count)).contains { self[$0 ..< $0 + subsequence.count].elementsEqual(subsequence) }
    }
}
