import Testing
@testable import RahaLab

private let client = IPv4Endpoint(IPv4Address(10, 1, 0, 2), 40_000)

/// Feeds packets and returns the events the censor made meanwhile.
private func events(_ censor: inout some Censor, _ packets: [Packet], at now: Duration = .zero) -> [CensorEvent] {
    for packet in packets { _ = censor.inspect(packet, at: now) }
    return censor.takeEvents()
}

/// A conversation's handshake, a first data packet, and a few more packets both ways.
private func flow(_ talk: TCPConversation, first: [UInt8], more: Int = 4) -> [Packet] {
    [talk.syn, talk.synAck, talk.ack, talk.fromClient(first)]
        + (0..<more).flatMap { _ in [talk.fromServer(LabPackets.fullyEncrypted(100)), talk.fromClient(LabPackets.fullyEncrypted(100))] }
}

@Suite struct CensorEventTests {
    @Test func eventsPrintAsActionServerReason() {
        let event = CensorEvent(.reset, server: IPv4Endpoint(IPv4Address(10, 200, 2, 2), 443), reason: "no SNI / not TLS")
        #expect(event.description == "reset 10.200.2.2:443 no SNI / not TLS")
        #expect(twoDecimals(4.0166) == "4.02")
        #expect(twoDecimals(3.9) == "3.90")
    }

    @Test func theLogIsBounded() {
        var log = CensorEventLog(capacity: 2)
        for port in 1...5 { log.append(CensorEvent(.dropped, server: IPv4Endpoint(IPv4Address(1), UInt16(port)), reason: "x")) }
        #expect(log.take().map(\.server.port) == [1, 2])
        #expect(log.overflow == 3)
        #expect(log.take().isEmpty)
    }

    @Test func openMakesNone() {
        var censor = OpenCensor()
        #expect(events(&censor, flow(TCPConversation(server: IPv4Endpoint(IPv4Address(1, 2, 3, 4), 8388)), first: LabPackets.fullyEncrypted(50))).isEmpty)
    }

    @Test func gfwFETBlocksOnceWithThePopcount() {
        var censor = FullyEncryptedTrafficCensor()
        let server = IPv4Endpoint(IPv4Address(198, 51, 100, 10), 8388)
        let made = events(&censor, flow(TCPConversation(client: client, server: server), first: LabPackets.fullyEncrypted(120)))
        #expect(made == [CensorEvent(.blocked, server: server, client: client,
                                     reason: "first packet looks fully encrypted (popcount 4.00/byte, no exemption)")])
        // A second flow to the blocked server is dropped without a new decision.
        let second = TCPConversation(client: IPv4Endpoint(client.address, 40_001), server: server)
        #expect(events(&censor, flow(second, first: LabPackets.fullyEncrypted(120))).isEmpty)
        let tls = TCPConversation(server: IPv4Endpoint(server.address, 443))
        #expect(events(&censor, flow(tls, first: LabPackets.realClientHello)).isEmpty)
    }

    @Test func iranWhitelistDropsOncePerFlowWithTheRule() {
        var censor = IranWhitelistCensor()
        let server = IPv4Endpoint(IPv4Address(198, 51, 100, 10), 443)
        let made = events(&censor, flow(TCPConversation(client: client, server: server), first: LabPackets.fullyEncrypted(120)))
        #expect(made == [CensorEvent(.dropped, server: server, client: client, reason: "flow's first data is not DNS/HTTP/TLS")])
        let other = IPv4Endpoint(server.address, 8388)
        let otherPort = events(&censor, flow(TCPConversation(client: client, server: other), first: Array("GET / HTTP/1.1\r\n\r\n".utf8)))
        #expect(otherPort == [CensorEvent(.dropped, server: other, client: client, reason: "TCP port 8388 is not 53/80/443")])
        let udp = IPv4Endpoint(server.address, 443)
        let quic = events(&censor, [LabPackets.parse(LabPackets.udp(from: client, to: udp, payload: [1])),
                                    LabPackets.parse(LabPackets.udp(from: client, to: udp, payload: [2]))])
        #expect(quic == [CensorEvent(.dropped, server: udp, client: client, reason: "UDP port 443 is not 53")])
        let http = TCPConversation(client: client, server: IPv4Endpoint(server.address, 80))
        #expect(events(&censor, flow(http, first: Array("GET / HTTP/1.1\r\n\r\n".utf8))).isEmpty)
    }

    @Test func sniAllowlistResetsOncePerFlowAndSaysWhy() {
        var censor = SNIAllowlistCensor(allowlist: HostAllowlist(["example.com"]))
        let server = IPv4Endpoint(IPv4Address(198, 51, 100, 10), 443)
        let named = events(&censor, flow(TCPConversation(client: client, server: server), first: LabPackets.clientHello(serverName: "bridge.example")))
        #expect(named == [CensorEvent(.reset, server: server, client: client, reason: "SNI \"bridge.example\" not allowlisted")])
        let raw = TCPConversation(client: IPv4Endpoint(client.address, 40_001), server: server)
        #expect(events(&censor, flow(raw, first: LabPackets.fullyEncrypted(80))) == [
            CensorEvent(.reset, server: server, client: raw.client, reason: "no SNI / not TLS"),
        ])
        let allowed = TCPConversation(client: IPv4Endpoint(client.address, 40_002), server: server)
        #expect(events(&censor, flow(allowed, first: LabPackets.clientHello(serverName: "www.example.com"))).isEmpty)
        let quic = IPv4Endpoint(server.address, 443)
        let udp = events(&censor, [LabPackets.parse(LabPackets.udp(from: client, to: quic, payload: [1])),
                                   LabPackets.parse(LabPackets.udp(from: client, to: quic, payload: [2]))])
        #expect(udp == [CensorEvent(.dropped, server: quic, client: client, reason: "UDP port 443 is not 53")])
    }

    @Test func throttleUnknownReportsTheFreezeOnce() {
        var censor = ThrottleUnknownCensor(allowlist: HostAllowlist(["example.com"]), limit: 1_000)
        let server = IPv4Endpoint(IPv4Address(198, 51, 100, 10), 443)
        let talk = TCPConversation(client: client, server: server)
        let packets = [talk.syn, talk.synAck, talk.ack, talk.fromClient(LabPackets.fullyEncrypted(50))]
            + (0..<20).map { _ in talk.fromServer(LabPackets.fullyEncrypted(100)) }
        #expect(events(&censor, packets) == [
            CensorEvent(.throttled, server: server, client: client, reason: "froze after 1000 bytes: not TLS to an allowlisted name"),
        ])
    }

    @Test func shutdownReportsEachDestinationOncePerInterval() {
        let resolver = IPv4Endpoint(IPv4Address(10, 9, 0, 53), 53)
        var censor = ShutdownCensor(domestic: [resolver.address], reportInterval: .seconds(60))
        let abroad = IPv4Endpoint(IPv4Address(203, 0, 113, 80), 443)
        let talk = TCPConversation(client: client, server: abroad)
        let first = events(&censor, [talk.syn, talk.syn, talk.syn])
        #expect(first == [CensorEvent(.dropped, server: abroad, client: client, reason: "international traffic during shutdown")])
        #expect(events(&censor, [talk.syn], at: .seconds(59)).isEmpty)
        #expect(events(&censor, [talk.syn], at: .seconds(61)).count == 1)
        #expect(events(&censor, [TCPConversation(client: client, server: resolver).syn]).isEmpty)
    }
}
