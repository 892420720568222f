import Testing
@testable import RahaLab

@Suite struct ProbeComparisonTests {
    typealias P = ProbeComparison

    @Test func timingBuckets() {
        #expect(P.timingBucket(.zero) == 0)
        #expect(P.timingBucket(.milliseconds(99)) == 0)
        #expect(P.timingBucket(.milliseconds(100)) == 1)
        #expect(P.timingBucket(.milliseconds(999)) == 1)
        #expect(P.timingBucket(.seconds(5)) == 2)
        #expect(P.timingBucket(.seconds(59)) == 3)
        #expect(P.timingBucket(.seconds(600)) == 4)
    }

    @Test func aBridgeThatAnswersLikeTheWebServerIsTheSame() {
        let web = P.Reaction(bytesReturned: 345, closedBy: .serverFIN, elapsed: .milliseconds(12))
        let bridge = P.Reaction(bytesReturned: 347, closedBy: .serverFIN, elapsed: .milliseconds(40))
        #expect(P.isSame(bridge: bridge, reference: web, byteTolerance: 4))
        #expect(P.isSame(bridge: bridge, reference: web), "byte counts are not compared unless asked")
        #expect(P.differences(bridge: bridge, reference: web, byteTolerance: 0) == [.bytesReturned(bridge: 347, reference: 345)])
    }

    @Test func aSilentBridgeThatWaitsThenResetsIsDifferent() {
        // The classic Shadowsocks tell: reads the random probe, says nothing, resets later.
        let web = P.Reaction(bytesReturned: 345, closedBy: .serverFIN, elapsed: .milliseconds(12))
        let bridge = P.Reaction(bytesReturned: 0, closedBy: .serverRST, elapsed: .seconds(61))
        #expect(P.differences(bridge: bridge, reference: web, byteTolerance: 1_000) == [
            .response(bridge: .nothing, reference: .other),
            .closedBy(bridge: .serverRST, reference: .serverFIN),
            .timing(bridgeBucket: 4, referenceBucket: 0),
        ])
        #expect(!P.isSame(bridge: bridge, reference: web))
    }

    @Test func responseKindsFromFirstBytes() {
        #expect(P.ResponseKind(firstBytes: []) == .nothing)
        #expect(P.ResponseKind(firstBytes: Array("HTTP/1.1 400 Bad Request\r\n".utf8)) == .http(400))
        #expect(P.ResponseKind(firstBytes: Array("HTTP/1.0 200".utf8)) == .http(200))
        #expect(P.ResponseKind(firstBytes: Array("HTTP/1.1 4".utf8)) == .other)
        #expect(P.ResponseKind(firstBytes: [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]) == .tlsAlert(50))
        #expect(P.ResponseKind(firstBytes: [0x15, 0x03, 0x03]) == .tlsRecord(21))
        #expect(P.ResponseKind(firstBytes: [0x16, 0x03, 0x03, 0x00, 0x7a, 0x02]) == .tlsRecord(22))
        #expect(P.ResponseKind(firstBytes: [0x16, 0x02]) == .other)
        #expect(P.ResponseKind(firstBytes: Array("SSH-2.0-OpenSSH".utf8)) == .other)
    }

    @Test func differentServersAreComparedByCoarseFeatures() {
        // Two HTTPS servers with different certificates: different sizes, the same kind.
        let nginx = P.Reaction(bytesReturned: 1_020, firstBytes: [0x16, 0x03, 0x03, 0x00, 0x7a], closedBy: .proberTimeout, elapsed: .seconds(8))
        let other = P.Reaction(bytesReturned: 1_433, firstBytes: [0x16, 0x03, 0x03, 0x00, 0x5a], closedBy: .proberTimeout, elapsed: .seconds(8))
        #expect(P.isSame(bridge: other, reference: nginx))
        // A fallback web site's 400 where the HTTPS server answered with a TLS alert.
        let alert = P.Reaction(bytesReturned: 7, firstBytes: [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46], closedBy: .serverFIN, elapsed: .milliseconds(3))
        let site = P.Reaction(bytesReturned: 150, firstBytes: Array("HTTP/1.1 400 Bad".utf8), closedBy: .serverFIN, elapsed: .milliseconds(3))
        #expect(P.differences(bridge: site, reference: alert) == [.response(bridge: .http(400), reference: .tlsAlert(70))])
        #expect(P.Difference.response(bridge: .nothing, reference: .http(400)).description == "returned nothing, not HTTP/1.x 400")
        #expect(P.Difference.timing(bridgeBucket: 2, referenceBucket: 0).description == "ended within 1-10 s, not within 100 ms")
    }
}
