import NIOCore
import Testing
@testable import RahaWire

@Suite struct EndpointTests {
    @Test func parsesTextForms() throws {
        #expect(try Endpoint(parsing: "1.2.3.4:80") == Endpoint(host: .ipv4([1, 2, 3, 4]), port: 80))
        #expect(try Endpoint(parsing: "[::1]:443") == Endpoint(host: .ipv6(Array(repeating: 0, count: 15) + [1]), port: 443))
        #expect(try Endpoint(parsing: "example.com:8388").host == .domain("example.com"))
        #expect(try Endpoint(parsing: "example.com", defaultPort: 1080).port == 1080)
        #expect(throws: WireError.self) { try Endpoint(parsing: "example.com") }
        #expect(throws: WireError.self) { try Endpoint(parsing: "example.com:0") }
        #expect(throws: WireError.self) { try Endpoint(parsing: "example.com:99999") }
        #expect(throws: WireError.self) { try Endpoint(parsing: "[::1:80") }
        #expect(throws: WireError.self) { try Endpoint(parsing: "exa mple.com:80") }
    }

    @Test func formatsIPv6Canonically() {
        #expect(Endpoint.formatIPv6(Endpoint.parseIPv6("2001:db8:0:0:0:0:2:1")!) == "2001:db8::2:1")
        #expect(Endpoint.formatIPv6(Endpoint.parseIPv6("::")!) == "::")
        #expect(Endpoint.parseIPv6("::ffff:1.2.3.4")! == Array(repeating: 0, count: 10) + [0xff, 0xff, 1, 2, 3, 4])
        #expect(Endpoint.parseIPv6("1::2::3") == nil)
        #expect(Endpoint.parseIPv6("1:2:3:4:5:6:7:8:9") == nil)
    }

    static let samples: [(Endpoint, [UInt8])] = [
        (Endpoint(host: .ipv4([127, 0, 0, 1]), port: 80), [1, 127, 0, 0, 1, 0, 80]),
        (Endpoint(host: .domain("a.io"), port: 443), [3, 4, 0x61, 0x2e, 0x69, 0x6f, 1, 0xbb]),
        (Endpoint(host: .ipv6(Array(repeating: 0, count: 15) + [1]), port: 1), [4] + Array(repeating: 0, count: 15) + [1, 0, 1]),
    ]

    @Test func binaryRoundTripAndSplitAtEveryByte() throws {
        for (endpoint, bytes) in Self.samples {
            var out = ByteBuffer()
            endpoint.write(to: &out)
            #expect(Array(out.readableBytesView) == bytes)
            #expect(endpoint.encodedLength == bytes.count)
            for cut in 0..<bytes.count {
                var partial = ByteBuffer(bytes: bytes[..<cut])
                #expect(try Endpoint.read(from: &partial) == nil)
                #expect(partial.readableBytes == cut, "reader index must be restored")
            }
            var whole = ByteBuffer(bytes: bytes + [9])
            #expect(try Endpoint.read(from: &whole) == endpoint)
            #expect(whole.readableBytes == 1)
        }
    }

    @Test func rejectsGarbage() {
        var bad = ByteBuffer(bytes: [2, 0, 0, 0])
        #expect(throws: WireError.self) { try Endpoint.read(from: &bad) }
        var empty = ByteBuffer(bytes: [3, 0, 0, 80])
        #expect(throws: WireError.self) { try Endpoint.read(from: &empty) }
    }

    /// Found by the socks5 fuzz target: a domain of bytes that are not UTF-8
    /// was decoded with repairs (each bad byte becoming three), so a relay
    /// wrote on a different name under a length byte that no longer matched it.
    @Test func rejectsADomainThatIsNotUTF8() {
        var bad = ByteBuffer(bytes: [3, 4, 0x61, 0xa9, 0xa9, 0x62, 0, 80])
        #expect(throws: WireError.self) { try Endpoint.read(from: &bad) }
        #expect(bad.readerIndex == 0)
        var good = ByteBuffer(bytes: [3, 6] + Array("ایر".utf8) + [0, 80])
        #expect(throws: Never.self) { try Endpoint.read(from: &good) }
    }
}
