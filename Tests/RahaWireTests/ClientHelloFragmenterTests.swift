import Testing
@testable import RahaWire

@Suite struct ClientHelloFragmenterTests {
    /// A ClientHello made by Python's ssl module (OpenSSL 3) for www.example.com.
    static let clientHello = hex("1603010200010001fc030389dde4922689d5f3fafdfe5d84afdce243f7ed61d713f04120eccf64f342a18e20e0103886579b7f15486f91e83a5d293d47ac0e283c8da6b92eb26caafcdc338c0024130213031301c02cc030c02bc02fcca9cca8c024c028c023c027009f009e006b006700ff0100018f00000014001200000f7777772e6578616d706c652e636f6d000b000403000102000a00160014001d0017001e0019001801000101010201030104002300000016000000170000000d002a0028040305030603080708080809080a080b080408050806040105010601030303010302040205020602002b00050403040303002d00020101003300260024001d002016983c51940bb6d5afb072f4a21ce0f42f5523f4626e6f7fe25dfd4fdcdaaf4c001500de000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000")

    func records(_ bytes: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var i = 0
        while i + 5 <= bytes.count {
            let length = Int(bytes[i + 3]) << 8 | Int(bytes[i + 4])
            out.append(Array(bytes[i..<(i + 5 + length)]))
            i += 5 + length
        }
        #expect(i == bytes.count, "records tile the output exactly")
        return out
    }

    @Test func findsTheServerName() throws {
        let range = try #require(ClientHelloFragmenter.serverNameRange(in: Self.clientHello))
        #expect(String(decoding: Self.clientHello[range], as: UTF8.self) == "www.example.com")
        #expect(ClientHelloFragmenter.serverNameRange(in: Array("GET / HTTP/1.1\r\n".utf8)) == nil)
        // Truncated anywhere: never crashes, never reads past the end.
        for cut in 0..<Self.clientHello.count {
            if let r = ClientHelloFragmenter.serverNameRange(in: Array(Self.clientHello[..<cut])) {
                #expect(r.upperBound <= cut)
            }
        }
    }

    @Test func recordSplittingKeepsTheHandshakeAndCutsTheName() {
        for sizes in [[], [1], [50, 50, 50], [200]] {
            let split = ClientHelloFragmenter.splitRecords(Self.clientHello, sizes: sizes)
            let parts = records(split)
            #expect(parts.count >= 2)
            #expect(parts.allSatisfy { $0[0] == 0x16 && $0[1] == Self.clientHello[1] && $0[2] == Self.clientHello[2] })
            #expect(parts.flatMap { $0.dropFirst(5) } == Array(Self.clientHello.dropFirst(5)), "same handshake bytes")
            #expect(!parts.contains { String(decoding: $0, as: UTF8.self).contains("www.example.com") }, "no record holds the whole name")
        }
        #expect(ClientHelloFragmenter.splitRecords([0x17, 3, 3, 0, 1, 9], sizes: [1]) == [0x17, 3, 3, 0, 1, 9], "only handshakes are re-framed")
    }

    @Test func segmentationCutsTheNameAndKeepsEveryByte() {
        var rng = SeededGenerator(seed: 9)
        for sizes in [1...1, 10...40, 600...900] {
            let segments = ClientHelloFragmenter.segments(Self.clientHello, sizes: sizes, using: &rng)
            #expect(segments.flatMap { $0 } == Self.clientHello)
            #expect(segments.count >= 2)
            #expect(!segments.contains { String(decoding: $0, as: UTF8.self).contains("www.example.com") })
            #expect(segments.dropLast().allSatisfy { $0.count <= sizes.upperBound })
        }
    }
}
