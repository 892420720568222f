import Testing
@testable import RahaWire

@Suite struct TLSPortFirstBytesTests {
    typealias F = TLSPortFirstBytes

    @Test func aTLSHandshakeGoesToTLS() {
        let hello: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]
        #expect(F(hello) == .tls)
        // Split at every byte: undecided until the 5-byte record header is complete.
        for cut in 1..<5 { #expect(F(hello.prefix(cut)) == .needMore) }
        #expect(F([UInt8]()) == .needMore)
    }

    @Test func plainBytesWithoutTheHighBitAreHTTP() {
        #expect(F(Array("GET / HTTP/1.1\r\n".utf8)) == .http)
        #expect(F([0x7f]) == .http)
        #expect(F([0x00, 0x03, 0x01, 0x00, 0x10]) == .http)
        #expect(F([0x15, 0x03, 0x03, 0x00, 0x02]) == .http, "only a handshake record is TLS to nginx")
    }

    @Test func anSSLv2StyleClientHelloIsReadToItsLengthAndNotAnswered() {
        // A ClientHello whose first byte was changed to one with the high bit: bytes 1-2 are 03 01.
        #expect(F([0x85, 0x03, 0x01, 0x02, 0x00]) == .swallowThenClose(2 + 0x0503))
        #expect(F([0x80, 0x09, 0x01, 0x00, 0x00]) == .swallowThenClose(11))
        #expect(F([0x80, 0x08, 0x01, 0x00, 0x00]) == .closeSilently, "shorter than any SSLv2 ClientHello")
        #expect(F([0xc0, 0x01, 0x01, 0x00, 0x00]) == .closeSilently, "longer than one record")
        #expect(F([0x85, 0x03, 0x01, 0x02]) == .needMore)
    }

    @Test func otherRecordHeadersAreClosedWithoutAnAlert() {
        #expect(F([0x16, 0x02, 0x01, 0x00, 0x10]) == .closeSilently)
        #expect(F([0x16, 0xfe, 0xfd, 0x00, 0x10]) == .closeSilently)
        #expect(F([0x9c, 0x41, 0x07, 0x22, 0x10, 0x00, 0x01]) == .closeSilently)
        #expect(F([0xe0, 0x03, 0x03, 0x00, 0x10]) == .closeSilently)
    }

    @Test func garbageNeverTraps() {
        var state: UInt64 = 0x1234
        for _ in 0..<2_000 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let count = Int(state >> 58)
            let bytes = (0..<count).map { UInt8(truncatingIfNeeded: state >> UInt64($0 % 56)) }
            _ = F(bytes)
        }
    }
}
