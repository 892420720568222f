import ArgumentParser
import Foundation
import Logging

@main
struct Raha: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raha",
        abstract: "Censorship circumvention: a bridge outside, a local proxy inside.",
        discussion: """
        Outside the censor's reach:   raha bridge
        Inside, with the printed key: raha connect 'ss://…'
        then point a browser or app at SOCKS5/HTTP proxy 127.0.0.1:1080.
        """,
        subcommands: [BridgeCommand.self, ConnectCommand.self, KeyCommand.self, DoctorCommand.self, MailCommand.self, TextCommand.self, BrowseCommand.self, GatewayCommand.self, ShareCommand.self]
    )

    /// ArgumentParser's own main, after making every file raha creates
    /// (keys, accounts, the circle, the mail store and SQLite's journals
    /// beside it, QR pictures) readable by this user alone from its first
    /// byte, whatever the shell's umask.
    static func main() async {
        umask(0o077)
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// Options every long-running command shares.
struct LoggingOptions: ParsableArguments {
    @Flag(name: .shortAndLong, help: "Log debugging detail (still never destinations or client addresses).")
    var verbose = false

    func makeLogger(label: String) -> Logger {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var logger = Logger(label: label)
        logger.logLevel = verbose ? .debug : .info
        return logger
    }
}

/// Prints a one-line reason and exits non-zero: for bad input a person can fix.
struct UsageFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Each line of standard output goes out when it is complete, so a watcher
/// reading through a pipe sees events as they happen.
func lineBufferedOutput() {
    setvbuf(stdout, nil, _IOLBF, 0)
}
