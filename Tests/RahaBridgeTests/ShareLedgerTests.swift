import Foundation
import NIOCore
import NIOEmbedded
import Testing
import RahaTransport
import RahaWire
@testable import RahaBridge

@Suite struct ShareLedgerTests {
    static let service = ShareService(host: "203.0.113.7", shadowsocksPort: 31000, trojanPort: 32000, sni: "share.example.org", pin: nil)

    func temporaryDirectory() -> DataDirectory {
        DataDirectory(path: FileManager.default.temporaryDirectory.appendingPathComponent("raha-share-\(UUID().uuidString)").path)
    }

    func openChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    @Test func requestsChangeTheRosterAndRevocationClosesEverythingOfThatInviteeAlone() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory.path) }
        let ledger = ShareLedger(circle: Circle(service: Self.service), directory: directory)
        #expect(ledger.handle(.invite(name: "Ali", limits: ShareLimits())).error == nil)
        #expect(ledger.handle(.invite(name: "Bahar", limits: ShareLimits())).error == nil)
        #expect(ledger.roster.shadowsocks.map(\.id) == ["Ali", "Bahar"] && ledger.roster.trojan.map(\.id) == ["Ali", "Bahar"])

        let ali = try #require(ledger.account(for: "Ali")), bahar = try #require(ledger.account(for: "Bahar"))
        let aliConnection = try openChannel(), aliStream = try openChannel(), baharStream = try openChannel()
        #expect(ali.attach(connection: aliConnection) && ali.admit(stream: aliStream) && bahar.admit(stream: baharStream))
        #expect(ali.openStreams == 1)

        let reply = ledger.handle(.revoke(name: "Ali"))
        #expect(reply.error == nil && reply.invitee?.isActive == false)
        #expect(!aliConnection.isActive && !aliStream.isActive, "the revoked invitee's connections stayed open")
        #expect(baharStream.isActive, "another invitee's connection was closed")
        #expect(ledger.roster.shadowsocks.map(\.id) == ["Bahar"])
        #expect(try !ali.mayUse && !ali.admit(stream: try openChannel()) && !ali.count(100, .up))
        #expect(ledger.handle(.revoke(name: "Ali")).error?.contains("was revoked") == true)
    }

    @Test func theConnectionLimitCountsOpenStreamsAndChangesLive() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory.path) }
        let ledger = ShareLedger(circle: Circle(service: Self.service), directory: directory)
        _ = ledger.handle(.invite(name: "Cyrus", limits: ShareLimits(maxConnections: 2)))
        let cyrus = try #require(ledger.account(for: "Cyrus"))
        let first = try openChannel(), second = try openChannel()
        #expect(cyrus.admit(stream: first) && cyrus.admit(stream: second))
        #expect(!cyrus.admit(stream: try openChannel()), "a third stream got past a limit of 2")
        _ = try first.close().wait()
        first.embeddedEventLoop.run()
        #expect(cyrus.admit(stream: try openChannel()), "a closed stream still counted")
        _ = ledger.handle(.limit(name: "Cyrus", change: ShareLimitsChange(maxConnections: .set(4))))
        #expect(cyrus.admit(stream: try openChannel()))
        #expect(second.isActive, "changing the limit closed a connection")
    }

    @Test func reachingTheQuotaCutsTheInviteeOffUntilItIsRaised() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory.path) }
        let ledger = ShareLedger(circle: Circle(service: Self.service), directory: directory)
        _ = ledger.handle(.invite(name: "Dara", limits: ShareLimits(monthlyQuota: 1_000_000)))
        let dara = try #require(ledger.account(for: "Dara"))
        let stream = try openChannel()
        #expect(dara.admit(stream: stream))
        #expect(dara.count(600_000, .down) && dara.count(300_000, .up))
        #expect(!dara.count(100_000, .down), "traffic past the quota was allowed")
        #expect(try !stream.isActive && !dara.admit(stream: try openChannel()))
        let listed = try #require(ledger.handle(.list).circle?.first)
        #expect(listed.invitee.usage.total == 1_000_000 && listed.invitee.overQuota(at: Date()))
        _ = ledger.handle(.limit(name: "Dara", change: ShareLimitsChange(monthlyQuota: .set(5_000_000))))
        #expect(try dara.mayUse && dara.admit(stream: try openChannel()))
    }

    @Test func aQuotaReachedLastMonthNoLongerHoldsWhenTheMonthTurns() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory.path) }
        let ledger = ShareLedger(circle: Circle(service: Self.service), directory: directory)
        _ = ledger.handle(.invite(name: "Dara", limits: ShareLimits(monthlyQuota: 1_000_000)))
        let dara = try #require(ledger.account(for: "Dara"))
        #expect(!dara.count(1_000_000, .down))
        ledger.record()
        #expect(!dara.mayUse, "the quota stopped holding within the month")
        ledger.record(at: Date().addingTimeInterval(32 * 86_400))
        #expect(dara.mayUse, "a new month did not lift last month's quota")
    }

    @Test func theCircleIsSavedPrivatelyAndABrokenFileIsExplained() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory.path) }
        #expect(try ShareLedger.load(from: directory) == nil)
        let ledger = ShareLedger(circle: Circle(service: Self.service, totalRate: 1_250_000), directory: directory)
        _ = ledger.handle(.invite(name: "مریم", limits: ShareLimits(rate: 250_000)))
        let file = directory.path + "/" + ShareLedger.fileName
        let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as! Int
        #expect(mode == 0o600)
        let loaded = try #require(try ShareLedger.load(from: directory))
        #expect(loaded.invitees.map(\.name) == ["مریم"] && loaded.totalRate == 1_250_000 && loaded.service == Self.service)

        try directory.writeSecret(ShareLedger.fileName, "{ not json")
        #expect { try ShareLedger.load(from: directory) } throws: { "\($0)".contains("is not a readable circle") }
        chmod(file, 0o644)
        #expect { try ShareLedger.load(from: directory) } throws: { "\($0)".contains("chmod 600") }
    }
}
