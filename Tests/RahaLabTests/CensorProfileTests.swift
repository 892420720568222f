import Testing
import RahaWire
@testable import RahaLab

private let bridge = IPv4Endpoint(IPv4Address(198, 51, 100, 10), 443)
private let web = IPv4Endpoint(IPv4Address(203, 0, 113, 80), 443)

/// Feeds a packet and returns the verdict (mutating calls cannot sit inside #expect).
private func feed(_ censor: inout some Censor, _ packet: Packet, at seconds: Double = 0) -> Verdict {
    censor.inspect(packet, at: .milliseconds(Int64(seconds * 1000)))
}

@Suite struct ProfileNameTests {
    @Test func parsesEveryProfileName() throws {
        for profile in CensorProfile.allCases {
            #expect(try CensorProfile(name: profile.rawValue) == profile)
            let censor = profile.makeCensor()
            #expect(censor.name == profile.rawValue)
        }
        #expect(try CensorProfile(name: " GFW-FET ") == .gfwFET)
        #expect(CensorProfile.allCases.map(\.rawValue) == ["open", "gfw-fet", "iran-whitelist", "sni-allowlist", "throttle-unknown", "shutdown", "active-probe"])
    }

    @Test func unknownNamesListTheValidOnes() {
        #expect(throws: UnknownCensorProfile(name: "gfw")) { try CensorProfile(name: "gfw") }
        let message = UnknownCensorProfile(name: "gfw").description
        #expect(message.contains("'gfw'"))
        for profile in CensorProfile.allCases { #expect(message.contains(profile.rawValue)) }
    }

    @Test func theFactoryPassesTheConfiguration() {
        var censor = CensorProfile.sniAllowlist.makeCensor(CensorConfiguration(allowedServerNames: ["example.com"]))
        let talk = TCPConversation(server: web)
        let verdict = censor.inspect(talk.fromClient(LabPackets.realClientHello), at: .zero)
        #expect(verdict == .accept)
        var shutdown = CensorProfile.shutdown.makeCensor(CensorConfiguration(domesticAddresses: [web.address]))
        let domestic = shutdown.inspect(talk.syn, at: .zero)
        #expect(domestic == .accept)
    }
}

@Suite struct MalformedInputTests {
    /// Every profile, fed random and half-plausible bytes, never traps and keeps its table bounded.
    @Test(arguments: CensorProfile.allCases)
    func randomBytesNeverCrash(profile: CensorProfile) {
        var censor = profile.makeCensor(CensorConfiguration(allowedServerNames: ["example.com"], domesticAddresses: [web.address]))
        var rng = LabRandom(seed: UInt64(profile.rawValue.count))
        for round in 0..<5_000 {
            let bytes: [UInt8]
            switch round % 3 {
            case 0:
                bytes = (0..<Int.random(in: 0...100, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 1:
                // A well-formed TCP packet between random endpoints with a random payload.
                let a = IPv4Endpoint(IPv4Address(UInt32.random(in: 0...UInt32.max, using: &rng)), UInt16.random(in: 0...UInt16.max, using: &rng))
                let b = IPv4Endpoint(IPv4Address(UInt32.random(in: 0...UInt32.max, using: &rng)), [53, 80, 443, 8443][round % 4])
                let payload = (0..<Int.random(in: 0...60, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                bytes = LabPackets.tcp(from: a, to: b, flags: TCPFlags(rawValue: UInt8.random(in: 0...63, using: &rng)), payload: payload)
            default:
                // A TLS-looking payload cut short anywhere.
                let hello = LabPackets.realClientHello
                let cut = Int.random(in: 0...hello.count, using: &rng)
                bytes = LabPackets.tcp(from: IPv4Endpoint(IPv4Address(10, 1, 0, 2), UInt16(round)), to: bridge, payload: Array(hello.prefix(cut)))
            }
            _ = censor.inspect(bytes: bytes, at: .milliseconds(Int64(round)))
        }
    }

    @Test func unparsableBytesGetTheProfileVerdict() {
        var open = OpenCensor()
        let a = open.inspect(bytes: [0x60, 0, 0], at: .zero)
        #expect(a == .accept)
        var shutdown = ShutdownCensor(domestic: [])
        let b = shutdown.inspect(bytes: [0x60, 0, 0], at: .zero)
        #expect(b == .drop)
    }
}

@Suite struct OpenAndShutdownTests {
    @Test func openAcceptsEverything() {
        var censor = OpenCensor()
        let talk = TCPConversation(server: bridge)
        let verdicts = talk.handshake(&censor, at: .zero) + [feed(&censor, talk.fromClient(LabPackets.fullyEncrypted(100)))]
        #expect(verdicts.allSatisfy { $0 == .accept })
    }

    @Test func shutdownLetsOnlyDomesticHostsThrough() {
        let resolver = IPv4Endpoint(IPv4Address(10, 9, 0, 53), 53)
        let mail = IPv4Endpoint(IPv4Address(10, 9, 0, 25), 25)
        var censor = ShutdownCensor(domestic: [resolver.address, mail.address])
        let client = IPv4Endpoint(IPv4Address(10, 1, 0, 2), 5353)
        let query = feed(&censor, LabPackets.parse(LabPackets.udp(from: client, to: resolver, payload: [1, 2])))
        let answer = feed(&censor, LabPackets.parse(LabPackets.udp(from: resolver, to: client, payload: [3])))
        let smtp = TCPConversation(server: mail).handshake(&censor, at: .zero)
        // The resolver recursing to the outside still works: it is domestic.
        let recursion = feed(&censor, LabPackets.parse(LabPackets.udp(from: resolver, to: IPv4Endpoint(web.address, 53), payload: [4])))
        let abroad = TCPConversation(server: web).handshake(&censor, at: .zero)
        let abroadUDP = feed(&censor, LabPackets.parse(LabPackets.udp(from: client, to: IPv4Endpoint(web.address, 53), payload: [5])))
        #expect([query, answer, recursion] == [.accept, .accept, .accept])
        #expect(smtp == [.accept, .accept, .accept])
        #expect(abroad == [.drop, .drop, .drop])
        #expect(abroadUDP == .drop)
    }
}

@Suite struct GFWFullyEncryptedTrafficTests {
    @Test func tlsAndHTTPFlowsPass() {
        var censor = FullyEncryptedTrafficCensor()
        let tls = TCPConversation(server: web)
        let tlsVerdicts = tls.handshake(&censor, at: .zero) + [feed(&censor, tls.fromClient(LabPackets.realClientHello)),
                                                             feed(&censor, tls.fromServer(LabPackets.fullyEncrypted(1000)))]
        let http = TCPConversation(server: IPv4Endpoint(web.address, 80))
        let httpVerdict = feed(&censor, http.fromClient(Array("GET / HTTP/1.1\r\n\r\n".utf8)))
        #expect(tlsVerdicts.allSatisfy { $0 == .accept })
        #expect(httpVerdict == .accept)
        #expect(!censor.isBlocked(web, at: .zero))
    }

    @Test func onlyTheFirstDataPacketIsJudged() {
        var censor = FullyEncryptedTrafficCensor()
        let talk = TCPConversation(server: bridge)
        _ = talk.handshake(&censor, at: .zero)
        let first = feed(&censor, talk.fromClient(Array("USER anonymous".utf8)))
        let second = feed(&censor, talk.fromClient(LabPackets.fullyEncrypted(200)))
        #expect([first, second] == [.accept, .accept])
        #expect(!censor.isBlocked(bridge, at: .seconds(1)))
    }

    @Test func aFullyEncryptedFirstPacketBlocksTheServerFor180Seconds() {
        var censor = FullyEncryptedTrafficCensor()
        let talk = TCPConversation(server: bridge)
        let handshake = talk.handshake(&censor, at: .zero)
        let trigger = feed(&censor, talk.fromClient(LabPackets.fullyEncrypted(300)), at: 1)
        // Both directions of the same flow now drop.
        let reply = feed(&censor, talk.fromServer([1, 2, 3]), at: 1.1)
        let more = feed(&censor, talk.fromClient(Array("GET / HTTP/1.1".utf8)), at: 2)
        // A new flow from another port to the same ip:port drops from its SYN, even if it speaks TLS.
        let other = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 3), 50_000), server: bridge)
        let otherHandshake = other.handshake(&censor, at: .seconds(100))
        let otherHello = feed(&censor, other.fromClient(LabPackets.realClientHello), at: 100)
        // Another port on the same host is not blocked.
        let sidePort = TCPConversation(server: IPv4Endpoint(bridge.address, 8443))
        let side = sidePort.handshake(&censor, at: .seconds(100))
        // The block lifts 180 s after the trigger.
        let justBefore = feed(&censor, talk.fromServer([1]), at: 180.999)
        let after = feed(&censor, other.fromClient(LabPackets.realClientHello), at: 181)
        #expect(handshake == [.accept, .accept, .accept])
        #expect(trigger == .accept, "the triggering packet itself passes")
        #expect([reply, more] == [.drop, .drop])
        #expect(otherHandshake == [.drop, .drop, .drop])
        #expect(otherHello == .drop)
        #expect(side == [.accept, .accept, .accept])
        #expect(justBefore == .drop)
        #expect(after == .accept)
        #expect(!censor.isBlocked(bridge, at: .seconds(181)))
    }

    @Test func aFlowToABlockedServerDoesNotExtendTheBlock() {
        var censor = FullyEncryptedTrafficCensor()
        let first = TCPConversation(server: bridge)
        _ = feed(&censor, first.fromClient(LabPackets.fullyEncrypted(100)), at: 0)
        let second = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 2), 40_001), server: bridge)
        let dropped = feed(&censor, second.fromClient(LabPackets.fullyEncrypted(100)), at: 170)
        #expect(dropped == .drop)
        #expect(!censor.isBlocked(bridge, at: .seconds(180)))
    }

    @Test func theBlockProbabilityIsInjectable() {
        var never = FullyEncryptedTrafficCensor(blockProbability: 0)
        let talk = TCPConversation(server: bridge)
        _ = feed(&never, talk.fromClient(LabPackets.fullyEncrypted(100)))
        #expect(!never.isBlocked(bridge, at: .seconds(1)))

        // With the paper's 26.3% and a fixed seed, some servers out of many are blocked.
        var sometimes = FullyEncryptedTrafficCensor(blockProbability: FullyEncryptedTrafficRule.blockProbability, seed: 42)
        var blocked = 0
        for i in 0..<1_000 {
            let server = IPv4Endpoint(IPv4Address(198, 51, 100, 10), UInt16(1_000 + i))
            _ = feed(&sometimes, TCPConversation(server: server).fromClient(LabPackets.fullyEncrypted(100)))
            if sometimes.isBlocked(server, at: .seconds(1)) { blocked += 1 }
        }
        #expect((200...330).contains(blocked), "\(blocked) of 1000")
    }

    @Test func udpIsNotInspected() {
        var censor = FullyEncryptedTrafficCensor()
        let packet = LabPackets.parse(LabPackets.udp(from: IPv4Endpoint(IPv4Address(10, 1, 0, 2), 5000), to: bridge, payload: LabPackets.fullyEncrypted(100)))
        let verdict = feed(&censor, packet)
        #expect(verdict == .accept)
        #expect(!censor.isBlocked(bridge, at: .zero))
    }

    @Test func theFlowTableIsBounded() {
        var censor = FullyEncryptedTrafficCensor(flowCapacity: 64)
        for i in 0..<1_000 {
            let talk = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 2), UInt16(2_000 + i)), server: web)
            _ = talk.handshake(&censor, at: .milliseconds(i))
        }
        #expect(censor.flowCount <= 64)
    }
}

@Suite struct IranWhitelistTests {
    @Test func fingerprints() {
        typealias F = IranProtocolFingerprint
        #expect(F.match(Array("GET / HTTP/1.1\r\n".utf8)) == .matches(.http))
        #expect(F.match(Array("OPTIONS * HTTP/1.1".utf8)) == .matches(.http))
        #expect(F.match(Array("GET /".utf8)) == .needsMore, "HTTP needs 8 bytes")
        #expect(F.match(Array("GE".utf8)) == .needsMore)
        #expect(F.match(Array("GETX / HTTP/1.1".utf8)) == .noMatch)
        #expect(F.match(Array("SSH-2.0-OpenSSH_9.2".utf8)) == .noMatch)
        #expect(F.match(LabPackets.realClientHello) == .matches(.tls))
        #expect(F.match([0x16, 0x03, 0x01, 0x02, 0x00]) == .needsMore)
        #expect(F.match([0x16, 0x03, 0x04, 0x02, 0x00, 0x01, 0x03, 0x03]) == .noMatch, "no such TLS record version")
        #expect(F.match([0x17, 0x03, 0x03, 0x00, 0x10, 0x01]) == .noMatch, "application data is not a handshake")
        // DNS over TCP: length 29, ID, flags 0x0100 (RD), QDCOUNT 1.
        #expect(F.match([0x00, 0x1d, 0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]) == .matches(.dns))
        #expect(F.match([0x00, 0x1d, 0xab, 0xcd, 0x81, 0x80, 0x00, 0x01, 0, 0, 0, 0, 0, 0]) == .noMatch, "a response is not a query")
        #expect(F.match([0x00, 0x1d, 0xab, 0xcd, 0x01, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0]) == .noMatch, "no question")
        #expect(F.match([0x00, 0x05]) == .noMatch, "shorter than a DNS header")
        #expect(F.match([0x00, 0x1d]) == .needsMore)
        #expect(F.match([0x00, 0x1d, 0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00]) == .needsMore)
        #expect(F.match([0x00, 0x1d, 0xab, 0xcd, 0x28, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]) == .noMatch, "opcode 5 (UPDATE) is not a query")
        #expect(F.match(LabPackets.fullyEncrypted(100)) == .noMatch)
    }

    @Test func allowedProtocolsPassOnEveryFilteredPort() {
        var censor = IranWhitelistCensor()
        for (i, port) in [53, 80, 443].enumerated() {
            for (j, payload) in [Array("GET / HTTP/1.1\r\n".utf8), LabPackets.realClientHello, [0x00, 0x1d, 0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]].enumerated() {
                let talk = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 2), UInt16(30_000 + 10 * i + j)), server: IPv4Endpoint(web.address, UInt16(port)))
                let verdicts = talk.handshake(&censor, at: .zero) + [
                    feed(&censor, talk.fromClient(payload)),
                    feed(&censor, talk.fromServer(LabPackets.fullyEncrypted(500))),
                    feed(&censor, talk.fromClient(LabPackets.fullyEncrypted(500))),
                ]
                #expect(verdicts.allSatisfy { $0 == .accept }, "port \(port) payload \(j)")
            }
        }
    }

    @Test func aFingerprintSplitOverTwoPacketsPasses() {
        var censor = IranWhitelistCensor()
        let talk = TCPConversation(server: IPv4Endpoint(web.address, 80))
        let first = feed(&censor, talk.fromClient(Array("GE".utf8)))
        let second = feed(&censor, talk.fromClient(Array("T / HTTP/1.1\r\n".utf8)))
        let third = feed(&censor, talk.fromClient(LabPackets.fullyEncrypted(100)))
        #expect([first, second, third] == [.accept, .accept, .accept])
    }

    @Test func aNonMatchingFlowDropsAfterItsFirstDataPacketFor60Seconds() {
        var censor = IranWhitelistCensor()
        let talk = TCPConversation(server: bridge)
        let handshake = talk.handshake(&censor, at: .zero)
        let first = feed(&censor, talk.fromClient(LabPackets.fullyEncrypted(100)), at: 1)
        let reply = feed(&censor, talk.fromServer([1, 2, 3]), at: 1.5)
        let later = feed(&censor, talk.fromClient(Array("GET / HTTP/1.1\r\n".utf8)), at: 30)
        let stillBlocked = feed(&censor, talk.fromClient([1]), at: 60.9)
        let released = feed(&censor, talk.fromClient([1]), at: 61)
        // A fresh, conforming flow to the same server is not affected.
        let fresh = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 2), 40_001), server: bridge)
        let freshVerdicts = fresh.handshake(&censor, at: .seconds(2)) + [feed(&censor, fresh.fromClient(LabPackets.realClientHello), at: 2)]
        #expect(handshake == [.accept, .accept, .accept])
        #expect(first == .accept, "the first data packet passes")
        #expect([reply, later, stillBlocked] == [.drop, .drop, .drop])
        #expect(released == .accept)
        #expect(freshVerdicts.allSatisfy { $0 == .accept })
    }

    @Test func twoInconclusivePacketsFailAndTheSecondIsDropped() {
        var censor = IranWhitelistCensor()
        let talk = TCPConversation(server: bridge)
        let first = feed(&censor, talk.fromClient(Array("GE".utf8)))
        let second = feed(&censor, talk.fromClient(Array("X".utf8)))
        #expect([first, second] == [.accept, .drop])
    }

    @Test func anotherFailingFlowRestartsTheTimer() {
        var censor = IranWhitelistCensor()
        let a = TCPConversation(server: bridge)
        _ = feed(&censor, a.fromClient(LabPackets.fullyEncrypted(100)), at: 0)
        let b = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 2), 40_001), server: bridge)
        _ = feed(&censor, b.fromClient(LabPackets.fullyEncrypted(100)), at: 50)
        let aAt70 = feed(&censor, a.fromServer([1]), at: 70)
        let aAt110 = feed(&censor, a.fromServer([1]), at: 110)
        #expect(aAt70 == .drop, "b's failure at 50 s extends the block to 110 s")
        #expect(aAt110 == .accept)
    }

    @Test func otherPortsAndProtocols() {
        var censor = IranWhitelistCensor()
        let client = IPv4Endpoint(IPv4Address(10, 1, 0, 2), 5353)
        let ssh = TCPConversation(server: IPv4Endpoint(web.address, 22)).handshake(&censor, at: .zero)
        let dns = feed(&censor, LabPackets.parse(LabPackets.udp(from: client, to: IPv4Endpoint(web.address, 53), payload: [1])))
        let dnsReply = feed(&censor, LabPackets.parse(LabPackets.udp(from: IPv4Endpoint(web.address, 53), to: client, payload: [2])))
        let quic = feed(&censor, LabPackets.parse(LabPackets.udp(from: client, to: IPv4Endpoint(web.address, 443), payload: [3])))
        let icmp = feed(&censor, LabPackets.parse(LabPackets.ipv4(1, from: client.address, to: web.address, transport: [8, 0, 0, 0])))
        #expect(ssh == [.drop, .drop, .drop])
        #expect([dns, dnsReply] == [.accept, .accept])
        #expect([quic, icmp] == [.drop, .drop])

        // The paper's filter left other ports alone.
        var paper = IranWhitelistCensor(blockOtherTraffic: false)
        let sshPaper = TCPConversation(server: IPv4Endpoint(web.address, 22))
        let verdicts = sshPaper.handshake(&paper, at: .zero) + [feed(&paper, sshPaper.fromClient(LabPackets.fullyEncrypted(100)))]
        #expect(verdicts.allSatisfy { $0 == .accept })
    }
}

@Suite struct SNIAllowlistTests {
    let allowlist = HostAllowlist(["example.com", "allowed.test."])

    @Test func hostAllowlistMatchesExactNamesAndSubdomains() {
        #expect(allowlist.allows("example.com"))
        #expect(allowlist.allows("www.example.com"))
        #expect(allowlist.allows("A.B.Example.COM."))
        #expect(allowlist.allows("allowed.test"))
        #expect(!allowlist.allows("badexample.com"))
        #expect(!allowlist.allows("example.com.evil.test"))
        #expect(!allowlist.allows("com"))
        #expect(!allowlist.allows(""))
    }

    @Test func clientHelloViews() {
        #expect(ClientHelloView(firstPacket: LabPackets.realClientHello) == .serverName("www.example.com"))
        #expect(ClientHelloView(firstPacket: LabPackets.clientHello(serverName: "Bridge.Test")) == .serverName("bridge.test"))
        #expect(ClientHelloView(firstPacket: LabPackets.clientHello(serverName: nil)) == .noServerName)
        #expect(ClientHelloView(firstPacket: Array("GET / HTTP/1.1".utf8)) == .notTLS)
        #expect(ClientHelloView(firstPacket: [0x16]) == .unreadable, "could be the start of a record")
        #expect(ClientHelloView(firstPacket: [0x16, 0x03]) == .unreadable)
        #expect(ClientHelloView(firstPacket: [0x17]) == .notTLS)
        #expect(ClientHelloView(firstPacket: [0x16, 0x04]) == .notTLS)
        #expect(ClientHelloView(firstPacket: [0x16, 0x03, 0x01, 0x00, 0x05, 0x02, 0, 0, 1, 0]) == .unreadable,
                "a handshake record that is not a ClientHello: the one-packet parser cannot judge it")
        // Cut before the name ends: unreadable. Cut after it, though the record goes on
        // (a ClientHello longer than one segment): the name is read.
        let hello = LabPackets.realClientHello
        let name = ClientHelloFragmenter.serverNameRange(in: hello)!
        for cut in [3, 5, 9, name.lowerBound, name.upperBound - 1] {
            #expect(ClientHelloView(firstPacket: hello.prefix(cut)) == .unreadable, "cut at \(cut)")
        }
        for cut in [name.upperBound, hello.count - 1] {
            #expect(ClientHelloView(firstPacket: hello.prefix(cut)) == .serverName("www.example.com"), "cut at \(cut)")
        }
        // Record fragmentation: the name spans records.
        let fragmented = ClientHelloFragmenter.splitRecords(hello, sizes: [])
        #expect(ClientHelloView(firstPacket: fragmented) == .unreadable)
        let noName = LabPackets.clientHello(serverName: nil)
        #expect(ClientHelloView(firstPacket: ClientHelloFragmenter.splitRecords(noName, sizes: [20])) == .unreadable,
                "a split record may still hold a name in a later record")
    }

    @Test func allowlistedNamesPassAndOthersAreReset() {
        var censor = SNIAllowlistCensor(allowlist: allowlist)
        let good = TCPConversation(server: web)
        let goodVerdicts = good.handshake(&censor, at: .zero) + [
            feed(&censor, good.fromClient(LabPackets.realClientHello)),
            feed(&censor, good.fromServer(LabPackets.fullyEncrypted(1000))),
            feed(&censor, good.fromClient(LabPackets.fullyEncrypted(100))),
        ]
        #expect(goodVerdicts.allSatisfy { $0 == .accept })

        let bad = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 2), 40_001), server: bridge)
        let badHandshake = bad.handshake(&censor, at: .zero)
        let hello = feed(&censor, bad.fromClient(LabPackets.clientHello(serverName: "bridge.test")))
        let reply = feed(&censor, bad.fromServer([1]))
        #expect(badHandshake == [.accept, .accept, .accept])
        #expect([hello, reply] == [.reset, .reset], "the flow stays reset")

        let anonymous = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 2), 40_002), server: web)
        let noName = feed(&censor, anonymous.fromClient(LabPackets.clientHello(serverName: nil)))
        #expect(noName == .reset)
    }

    @Test func nonTLSIsResetOnAnyPort() {
        var censor = SNIAllowlistCensor(allowlist: allowlist)
        for (i, port) in [80, 443, 22, 8080].enumerated() {
            let talk = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 2), UInt16(41_000 + i)), server: IPv4Endpoint(web.address, UInt16(port)))
            let verdict = feed(&censor, talk.fromClient(Array("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".utf8)))
            #expect(verdict == .reset, "port \(port)")
        }
        let client = IPv4Endpoint(IPv4Address(10, 1, 0, 2), 5353)
        let dns = feed(&censor, LabPackets.parse(LabPackets.udp(from: client, to: IPv4Endpoint(web.address, 53), payload: [1])))
        let quic = feed(&censor, LabPackets.parse(LabPackets.udp(from: client, to: IPv4Endpoint(web.address, 443), payload: [1])))
        #expect([dns, quic] == [.accept, .drop])
    }

    @Test func aSplitClientHelloFailsOpenByDefaultAndClosedOnRequest() {
        let hello = LabPackets.clientHello(serverName: "bridge.test")
        let nameAt = ClientHelloFragmenter.serverNameRange(in: hello)!
        let firstSegment = Array(hello[..<(nameAt.lowerBound + 3)])
        let rest = Array(hello[(nameAt.lowerBound + 3)...])
        let recordSplit = ClientHelloFragmenter.splitRecords(hello, sizes: [])

        for failClosed in [false, true] {
            var censor = SNIAllowlistCensor(allowlist: allowlist, failClosed: failClosed)
            let expected: Verdict = failClosed ? .reset : .accept
            let segmented = TCPConversation(server: bridge)
            let first = feed(&censor, segmented.fromClient(firstSegment))
            let second = feed(&censor, segmented.fromClient(rest))
            let reply = feed(&censor, segmented.fromServer([1, 2, 3]))
            #expect([first, second, reply] == [expected, expected, expected], "segmented, failClosed \(failClosed)")

            let records = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 2), 40_001), server: bridge)
            let whole = feed(&censor, records.fromClient(recordSplit))
            #expect(whole == expected, "record-fragmented, failClosed \(failClosed)")
        }
    }
}

@Suite struct SNIAllowlistAgainstRahaSegmentationTests {
    /// Raha's own ClientHello segmentation (`ClientHelloFragmenter.segments`, a cut
    /// always inside the name), with random segment sizes: fail-open lets every split
    /// through, fail-closed resets every one, and the whole ClientHello is reset either way.
    @Test func segmentedClientHellos() {
        var rng = LabRandom(seed: 2025)
        let hello = LabPackets.clientHello(serverName: "bridge.test")
        for round in 0..<200 {
            let segments = ClientHelloFragmenter.segments(hello, sizes: 1...300, using: &rng)
            for failClosed in [false, true] {
                var censor = SNIAllowlistCensor(allowlist: HostAllowlist(["example.com"]), failClosed: failClosed)
                let talk = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 2), UInt16(20_000 + round)), server: bridge)
                _ = talk.handshake(&censor, at: .zero)
                let verdicts = segments.map { censor.inspect(talk.fromClient($0), at: .zero) }
                #expect(verdicts.allSatisfy { $0 == (failClosed ? .reset : .accept) }, "round \(round), first segment \(segments[0].count) bytes")
            }
        }
        var censor = SNIAllowlistCensor(allowlist: HostAllowlist(["example.com"]))
        let whole = feed(&censor, TCPConversation(server: bridge).fromClient(hello))
        #expect(whole == .reset)
    }
}

@Suite struct ThrottleUnknownTests {
    let allowlist = HostAllowlist(["example.com"])

    /// Sends `total` bytes from the server in chunks and returns the verdicts.
    func serverSends(_ total: Int, chunk: Int, on talk: TCPConversation, to censor: inout ThrottleUnknownCensor, at seconds: Double = 1) -> [Verdict] {
        var verdicts: [Verdict] = []
        var sent = 0
        while sent < total {
            let n = min(chunk, total - sent)
            verdicts.append(feed(&censor, talk.fromServer(Array(repeating: 0xAB, count: n)), at: seconds))
            sent += n
        }
        return verdicts
    }

    @Test func unknownFlowsFreezeAfterExactly16KB() {
        var censor = ThrottleUnknownCensor(allowlist: allowlist)
        let talk = TCPConversation(server: bridge)
        let handshake = talk.handshake(&censor, at: .zero)
        let hello = feed(&censor, talk.fromClient(LabPackets.clientHello(serverName: "bridge.test")))
        let upTo = serverSends(16 * 1024, chunk: 1000, on: talk, to: &censor)
        let oneMore = feed(&censor, talk.fromServer([0]))
        let clientAfter = feed(&censor, talk.fromClient([1, 2]))
        let serverAfter = feed(&censor, talk.fromServer([1]))
        #expect(handshake == [.accept, .accept, .accept])
        #expect(hello == .accept)
        #expect(upTo.count == 17)
        #expect(upTo.allSatisfy { $0 == .accept }, "16384 bytes get through")
        #expect(oneMore == .drop, "byte 16385 does not")
        #expect([clientAfter, serverAfter] == [.drop, .drop], "the flow is frozen")
    }

    @Test func aPacketCrossingTheLimitIsDropped() {
        var censor = ThrottleUnknownCensor(allowlist: allowlist)
        let talk = TCPConversation(server: bridge)
        _ = feed(&censor, talk.fromClient(LabPackets.fullyEncrypted(50)))
        let first = serverSends(16_000, chunk: 1000, on: talk, to: &censor)
        let crossing = feed(&censor, talk.fromServer(Array(repeating: 1, count: 1000)))
        #expect(first.allSatisfy { $0 == .accept })
        #expect(crossing == .drop)
    }

    @Test func allowlistedTLSIsNeverLimited() {
        var censor = ThrottleUnknownCensor(allowlist: allowlist)
        let talk = TCPConversation(server: web)
        _ = feed(&censor, talk.fromClient(LabPackets.realClientHello))
        let verdicts = serverSends(1_000_000, chunk: 1400, on: talk, to: &censor)
        #expect(verdicts.allSatisfy { $0 == .accept })
    }

    @Test func splitClientHellosAndServerFirstFlowsAreLimited() {
        var censor = ThrottleUnknownCensor(allowlist: allowlist)
        let hello = LabPackets.realClientHello
        let split = TCPConversation(server: web)
        _ = feed(&censor, split.fromClient(Array(hello.prefix(100))))
        _ = feed(&censor, split.fromClient(Array(hello.dropFirst(100))))
        let splitVerdicts = serverSends(20_000, chunk: 1000, on: split, to: &censor)
        #expect(splitVerdicts.filter { $0 == .accept }.count == 16)

        // A server that speaks first, before any client data, is counted too.
        let banner = TCPConversation(client: IPv4Endpoint(IPv4Address(10, 1, 0, 2), 40_001), server: IPv4Endpoint(bridge.address, 25))
        _ = banner.handshake(&censor, at: .zero)
        let bannerVerdicts = serverSends(17_000, chunk: 17_000, on: banner, to: &censor)
        #expect(bannerVerdicts == [.drop])
    }

    @Test func udpPasses() {
        var censor = ThrottleUnknownCensor(allowlist: allowlist)
        let packet = LabPackets.parse(LabPackets.udp(from: bridge, to: IPv4Endpoint(IPv4Address(10, 1, 0, 2), 5000), payload: Array(repeating: 0, count: 1400)))
        var verdicts: [Verdict] = []
        for _ in 0..<20 { verdicts.append(feed(&censor, packet)) }
        #expect(verdicts.allSatisfy { $0 == .accept })
    }

    @Test func frozenFlowsIdleOut() {
        var censor = ThrottleUnknownCensor(allowlist: allowlist)
        let talk = TCPConversation(server: bridge)
        _ = talk.handshake(&censor, at: .zero)
        _ = serverSends(20_000, chunk: 10_000, on: talk, to: &censor, at: 0)
        let frozen = feed(&censor, talk.fromClient([1]), at: 299)
        // 300 s after the last packet the flow is forgotten, so the same tuple is a new flow.
        let forgotten = feed(&censor, talk.fromServer([1]), at: 600)
        #expect(frozen == .drop)
        #expect(forgotten == .accept)
    }
}
