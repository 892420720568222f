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
        #expect(P.differences(bridge: bridge, reference: web) == [.bytesReturned(bridge: 347, reference: 345)])
    }

    @Test func aSilentBridgeThatWaitsThenResetsIsDifferent() {
        // The classic Shadowsocks tell: reads the random probe, says nothing, resets later.
        let web = P.Reaction(bytesReturned: 345, closedBy: .serverFIN, elapsed: .milliseconds(12))
        let bridge = P.Reaction(bytesReturned: 0, closedBy: .serverRST, elapsed: .seconds(61))
        #expect(P.differences(bridge: bridge, reference: web, byteTolerance: 1_000) == [
            .bytesReturned(bridge: 0, reference: 345),
            .closedBy(bridge: .serverRST, reference: .serverFIN),
            .timing(bridgeBucket: 4, referenceBucket: 0),
        ])
        #expect(!P.isSame(bridge: bridge, reference: web))
    }
}
