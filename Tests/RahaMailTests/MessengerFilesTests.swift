import Foundation
import Testing
@testable import RahaMail
import RahaWire

/// The messenger's files (account with its password, identity key, the
/// store of messages and contacts) are the user's alone: written 0600, and
/// refused with a clear message when others can read them.
@Suite struct MessengerFilesTests {
    func setUpDirectory() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("raha-messenger-\(UUID().uuidString)").path
        let server = MailServer(host: "127.0.0.1", port: 587, security: .starttls)
        let account = MailAccount(address: "sara@domestic.test", password: "secret", smtp: server, imap: server)
        try Messenger.setUp(directory: directory, account: account)
        return directory
    }

    func mode(_ path: String) throws -> Int {
        try #require(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) & 0o777
    }

    @Test func everyFileIsPrivate() throws {
        let directory = try setUpDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for file in ["account.json", "identity.key", "mail.sqlite"] {
            #expect(try mode(directory + "/" + file) == 0o600, "\(file)")
        }
        #expect(try mode(directory) == 0o700)
    }

    @Test(arguments: ["account.json", "identity.key", "mail.sqlite"])
    func aFileOthersCanReadIsRefused(_ file: String) throws {
        let directory = try setUpDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        chmod(directory + "/" + file, 0o644)
        do {
            _ = try Messenger(directory: directory)
            Issue.record("opened a messenger whose \(file) others can read")
        } catch let error as MailError {
            #expect(error.kind == .security)
            #expect(error.reason.contains("chmod 600 \(directory)/\(file)"), "\(error.reason)")
        }
    }
}
