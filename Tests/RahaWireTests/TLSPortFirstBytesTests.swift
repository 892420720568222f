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

    /// Each branch as nginx 1.22 with OpenSSL 3.0 answered it (see `TLSPortFirstBytes`).
    @Test func anSSLv2StyleClientHelloGetsOpenSSLsAlert() {
        typealias A = TLSPortFirstBytes.Alert
        func v2(type: UInt8 = 1, version: Int = 0x0303, ciphers: Int, session: Int = 0, challenge: Int = 16, length: Int? = nil) -> [UInt8] {
            func be16(_ n: Int) -> [UInt8] { [UInt8(n >> 8), UInt8(n & 0xff)] }
            let record = [type] + be16(version) + be16(ciphers) + be16(session) + be16(challenge) + [UInt8](repeating: 0, count: ciphers + session + challenge)
            let announced = length ?? record.count
            return [0x80 | UInt8(announced >> 8), UInt8(announced & 0xff)] + record
        }
        // Judged on the header: too short, too long.
        #expect(F([0x80, 0x03, 0x01, 0x02, 0x00]) == .alertThenClose(A.decodeError))
        #expect(F([0xc2, 0x03, 0x01, 0x02, 0x00]) == .alertThenClose(A.recordOverflow))
        // Otherwise the whole record is awaited: a real ClientHello with its first byte changed.
        #expect(F([0x85, 0x03, 0x01, 0x02, 0x00]) == .needMore)
        #expect(F([0xc1, 0x03, 0x01, 0x02, 0x00]) == .needMore, "16,643 bytes: still one record to OpenSSL")
        #expect(F([0x81, 0x03, 0x01, 0x05, 0xd0, 0x01, 0x00, 0x05, 0xcc, 0x03, 0x03] + [UInt8](repeating: 0, count: 250)) == .alertThenClose(A.illegalParameter))
        #expect(F(v2(type: 2, ciphers: 3)) == .closeSilently)
        #expect(F(v2(ciphers: 3, session: 33)) == .alertThenClose(A.illegalParameter))
        #expect(F(v2(version: 0, ciphers: 3, session: 33)) == .alertThenClose(A.illegalParameter))
        #expect(F(v2(ciphers: 3, length: 30) + [0, 0]) == .alertThenClose(A.decodeError))
        #expect(F(v2(version: 0, ciphers: 3)) == .alertThenClose(A.protocolVersion))
        #expect(F(v2(ciphers: 0)) == .alertThenClose(A.illegalParameter))
        #expect(F(v2(ciphers: 4)) == .alertThenClose(A.decodeError))
        #expect(F(v2(ciphers: 3, challenge: 8)) == .alertThenClose(A.handshakeFailure))
        #expect(F(v2(ciphers: 3)) == .alertThenClose(A.handshakeFailure))
        #expect(TLSPortFirstBytes.alertRecord(A.decodeError) == [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 50])
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
