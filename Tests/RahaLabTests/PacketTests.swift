import Testing
@testable import RahaLab

@Suite struct PacketTests {
    let client = IPv4Endpoint(IPv4Address(10, 1, 0, 2), 40_000)
    let server = IPv4Endpoint(IPv4Address(203, 0, 113, 7), 443)

    @Test func parsesTCP() throws {
        let bytes = LabPackets.tcp(from: client, to: server, flags: [.psh, .ack], payload: [1, 2, 3], optionWords: 3)
        let packet = try Packet(parsing: bytes)
        #expect(packet.source == client.address)
        #expect(packet.destination == server.address)
        #expect(packet.sourcePort == 40_000)
        #expect(packet.destinationPort == 443)
        #expect(packet.transport == .tcp)
        #expect(packet.tcpFlags == [.psh, .ack])
        #expect(!packet.isInitialSYN)
        #expect(!packet.isFragment)
        #expect(packet.payloadRange == 52..<55)
        #expect(Array(packet.payload) == [1, 2, 3])
    }

    @Test func parsesUDPAndSYN() throws {
        let udp = try Packet(parsing: LabPackets.udp(from: client, to: IPv4Endpoint(server.address, 53), payload: [9, 9]))
        #expect(udp.transport == .udp)
        #expect(udp.destinationPort == 53)
        #expect(udp.tcpFlags == [])
        #expect(Array(udp.payload) == [9, 9])
        let syn = try Packet(parsing: LabPackets.tcp(from: client, to: server, flags: .syn))
        #expect(syn.isInitialSYN)
        #expect(syn.payload.isEmpty)
        let synAck = try Packet(parsing: LabPackets.tcp(from: server, to: client, flags: [.syn, .ack]))
        #expect(!synAck.isInitialSYN)
    }

    @Test func ignoresTrailingBytesBeyondTheTotalLength() throws {
        // Ethernet padding after a short packet is not payload.
        let bytes = LabPackets.tcp(from: client, to: server, payload: [7]) + [0, 0, 0, 0]
        let packet = try Packet(parsing: bytes)
        #expect(Array(packet.payload) == [7])
    }

    @Test func otherProtocolsAndFragmentsParseAsFarAsTheIPHeader() throws {
        let icmp = try Packet(parsing: LabPackets.ipv4(1, from: client.address, to: server.address, transport: [8, 0, 0, 0]))
        #expect(icmp.transport == .other(1))
        #expect(icmp.sourcePort == 0 && icmp.destinationPort == 0)
        #expect(icmp.payload.count == 4)
        // A non-first fragment of a TCP packet: no TCP header to read.
        let later = try Packet(parsing: LabPackets.ipv4(6, from: client.address, to: server.address, transport: [1, 2, 3], fragment: 0x0010))
        #expect(later.isFragment)
        #expect(later.transport == .tcp)
        #expect(later.destinationPort == 0)
        // A first fragment (MF set) still has its ports.
        let first = try Packet(parsing: LabPackets.ipv4(17, from: client.address, to: server.address,
                                                       transport: [0x9c, 0x40, 0, 53, 0, 20, 0, 0], fragment: 0x2000))
        #expect(first.isFragment)
        #expect(first.destinationPort == 53)
    }

    @Test func malformedHeadersThrowDescriptiveErrors() {
        let good = LabPackets.tcp(from: client, to: server, payload: [1, 2, 3])
        #expect(throws: PacketError.truncated(needed: 20, have: 19)) { try Packet(parsing: Array(good.prefix(19))) }
        var v6 = good
        v6[0] = 0x60
        #expect(throws: PacketError.notIPv4(version: 6)) { try Packet(parsing: v6) }
        var shortIHL = good
        shortIHL[0] = 0x44
        #expect(throws: PacketError.badHeaderLength(4)) { try Packet(parsing: shortIHL) }
        // The total length claims more than was received.
        #expect(throws: PacketError.badTotalLength(43)) { try Packet(parsing: Array(good.prefix(42))) }
        var shortTotal = good
        shortTotal[2] = 0; shortTotal[3] = 30
        #expect(throws: PacketError.truncated(needed: 40, have: 30)) { try Packet(parsing: shortTotal) }
        var badOffset = good
        badOffset[32] = 0x20
        #expect(throws: PacketError.badHeaderLength(2)) { try Packet(parsing: badOffset) }
        var bigOffset = good
        bigOffset[32] = 0xF0 // 60-byte TCP header in a 43-byte packet
        #expect(throws: PacketError.truncated(needed: 80, have: 43)) { try Packet(parsing: bigOffset) }
        let message = PacketError.notIPv4(version: 6).description
        #expect(message.contains("IPv4"))
    }

    @Test func everyTruncationOfAPacketIsHandled() {
        let good = LabPackets.tcp(from: client, to: server, payload: Array(0..<40), optionWords: 2)
        for cut in 0..<good.count {
            #expect((try? Packet(parsing: Array(good.prefix(cut)))) == nil, "cut at \(cut)")
        }
    }

    @Test func randomBytesNeverTrap() {
        var rng = LabRandom(seed: 4)
        var parsed = 0
        for round in 0..<20_000 {
            let count = Int.random(in: 0...80, using: &rng)
            var bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Bias half of the inputs towards plausible headers so the deeper paths run.
            if round.isMultiple(of: 2), bytes.count >= 20 {
                bytes[0] = 0x45
                bytes[2] = 0
                bytes[3] = UInt8(truncatingIfNeeded: Int.random(in: 0...bytes.count, using: &rng))
                bytes[6] = 0
                bytes[9] = [6, 17, 1][round / 2 % 3]
            }
            if let packet = try? Packet(parsing: bytes) {
                parsed += 1
                #expect(packet.payloadRange.upperBound <= bytes.count)
                #expect(packet.payloadRange.lowerBound >= 20)
            }
        }
        #expect(parsed > 100, "the biased inputs reach the transport parsers")
    }

    /// Verifies the IPv4 header checksum and the TCP checksum over the pseudo-header.
    func checksumsAreValid(_ bytes: [UInt8]) -> Bool {
        let tcp = Array(bytes[20...])
        let pseudo = Array(bytes[12..<20]) + [0, 6, 0, UInt8(tcp.count)]
        return Packet.internetChecksum(Array(bytes[..<20])) == 0 && Packet.internetChecksum(pseudo + tcp) == 0
    }

    @Test func resetPacketsForADataSegment() throws {
        let data = try Packet(parsing: LabPackets.tcp(from: client, to: server, flags: [.ack, .psh], payload: Array(repeating: 7, count: 100),
                                                     seq: 0xFFFF_FFF0, ack: 5000))
        let resets = data.resetPackets
        #expect(resets.count == 2)
        let forward = try Packet(parsing: resets[0])
        #expect(forward.sourceEndpoint == client && forward.destinationEndpoint == server)
        #expect(forward.tcpFlags == .rst)
        #expect(forward.sequenceNumber == 0x54, "0xFFFFFFF0 + 100 wraps")
        let backward = try Packet(parsing: resets[1])
        #expect(backward.sourceEndpoint == server && backward.destinationEndpoint == client)
        #expect(backward.tcpFlags == [.rst, .ack])
        #expect(backward.sequenceNumber == 5000)
        #expect(backward.acknowledgementNumber == 0x54)
        #expect(resets.allSatisfy(checksumsAreValid))
        #expect(resets.allSatisfy { $0.count == 40 })
    }

    @Test func resetPacketsForASYNAndNone() throws {
        let syn = try Packet(parsing: LabPackets.tcp(from: client, to: server, flags: .syn, seq: 1000))
        let resets = syn.resetPackets
        let backward = try Packet(parsing: resets[1])
        #expect(backward.tcpFlags == [.rst, .ack])
        #expect(backward.sequenceNumber == 0)
        #expect(backward.acknowledgementNumber == 1001, "the SYN consumes one sequence number")
        #expect(resets.allSatisfy(checksumsAreValid))
        let rst = try Packet(parsing: LabPackets.tcp(from: client, to: server, flags: .rst))
        #expect(rst.resetPackets.isEmpty)
        let udp = try Packet(parsing: LabPackets.udp(from: client, to: server, payload: [1]))
        #expect(udp.resetPackets.isEmpty)
        // The checksum of the test builder's own header is valid too.
        #expect(Packet.internetChecksum(Array(LabPackets.tcp(from: client, to: server)[..<20])) == 0)
    }

    @Test func addressesAndFlowKeys() {
        #expect(IPv4Address("192.0.2.1") == IPv4Address(192, 0, 2, 1))
        #expect(IPv4Address(192, 0, 2, 1).description == "192.0.2.1")
        for bad in ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "a.b.c.d", "1..2.3", "01234.1.1.1", "+1.2.3.4"] {
            #expect(IPv4Address(bad) == nil, "\(bad)")
        }
        let out = LabPackets.parse(LabPackets.tcp(from: client, to: server))
        let back = LabPackets.parse(LabPackets.tcp(from: server, to: client))
        #expect(FlowKey(out) == FlowKey(back))
        let other = LabPackets.parse(LabPackets.tcp(from: IPv4Endpoint(client.address, 40_001), to: server))
        #expect(FlowKey(out) != FlowKey(other))
        let udp = LabPackets.parse(LabPackets.udp(from: client, to: server, payload: []))
        #expect(FlowKey(out) != FlowKey(udp), "the protocol is part of the key")
    }
}

@Suite struct FlowTableTests {
    let server = IPv4Endpoint(IPv4Address(203, 0, 113, 7), 443)

    @Test func theSYNSenderIsTheClientInBothDirections() {
        var table = FlowTable<Int>(capacity: 8)
        let talk = TCPConversation(server: server)
        let first = table.withFlow(talk.syn, at: .zero, initial: 0) { flow, direction in (flow.client, direction) }
        #expect(first.0 == talk.client)
        #expect(first.1 == .clientToServer)
        let reply = table.withFlow(talk.synAck, at: .zero, initial: 0) { _, direction in direction }
        #expect(reply == .serverToClient)
        let data = table.withFlow(talk.fromServer([1, 2, 3]), at: .zero, initial: 0) { flow, _ in flow.serverPayloadBytes }
        #expect(data == 3)
        #expect(table.count == 1)
    }

    @Test func aFlowFirstSeenAtItsSYNACKStillKnowsItsClient() {
        var table = FlowTable<Int>(capacity: 8)
        let talk = TCPConversation(server: server)
        let client = table.withFlow(talk.synAck, at: .zero, initial: 0) { flow, direction in (flow.client, direction) }
        #expect(client.0 == talk.client)
        #expect(client.1 == .serverToClient)
    }

    @Test func aNewSYNOnAUsedTupleStartsAFreshFlow() {
        var table = FlowTable<Int>(capacity: 8)
        let talk = TCPConversation(server: server)
        table.withFlow(talk.syn, at: .zero, initial: 0) { flow, _ in flow.state = 7 }
        table.withFlow(talk.fromClient([1]), at: .zero, initial: 0) { _, _ in () }
        let retransmittedSYN = table.withFlow(talk.syn, at: .seconds(1), initial: 0) { flow, _ in flow.state }
        #expect(retransmittedSYN == 0, "data had flowed, so this SYN opens a new connection")
    }

    @Test func idleFlowsExpire() {
        var table = FlowTable<Int>(capacity: 8, idleTimeout: .seconds(10))
        let talk = TCPConversation(server: server)
        table.withFlow(talk.syn, at: .zero, initial: 0) { flow, _ in flow.state = 1 }
        #expect(table.flow(for: FlowKey(talk.ack), at: .seconds(9))?.state == 1)
        #expect(table.flow(for: FlowKey(talk.ack), at: .seconds(10)) == nil)
    }

    @Test func theTableIsBoundedAndEvictsTheOldest() {
        var table = FlowTable<Int>(capacity: 100)
        for i in 0..<1_000 {
            let talk = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 2), UInt16(10_000 + i)), server: server)
            table.withFlow(talk.syn, at: .milliseconds(i), initial: i) { _, _ in () }
            #expect(table.count <= 100)
        }
        let newest = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 2), 10_999), server: server)
        let oldest = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 2), 10_000), server: server)
        #expect(table.flow(for: FlowKey(newest.syn), at: .seconds(1))?.state == 999)
        #expect(table.flow(for: FlowKey(oldest.syn), at: .seconds(1)) == nil)
    }

    @Test func expiringTableDropsExpiredEntriesBeforeLiveOnes() {
        var table = ExpiringTable<Int, String>(capacity: 4)
        table.set("long", for: 1, at: .zero, expires: .seconds(100))
        for key in 2...4 { table.set("short", for: key, at: .seconds(1), expires: .seconds(2)) }
        table.set("new", for: 5, at: .seconds(3), expires: .seconds(100))
        #expect(table.value(for: 1, at: .seconds(3)) == "long", "the oldest write survives because others had expired")
        #expect(table.value(for: 5, at: .seconds(3)) == "new")
        #expect(table.count == 2)
    }
}
