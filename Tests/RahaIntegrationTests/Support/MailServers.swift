import Foundation

/// Two mail domains on loopback, as real servers: Debian's Postfix twice
/// (domestic.test and outside.test, each with its own config, queue and
/// ports, relaying to each other) and one Dovecot serving IMAP for both.
///
/// Each Postfix listens on three ports: MTA (what the other domain relays
/// to), submission with STARTTLS and login required (as 587), and
/// submission over TLS from the first byte (as 465). Dovecot listens on IMAP
/// with STARTTLS (as 143) and IMAP over TLS (as 993), and is Postfix's SASL
/// login service. Mail is delivered by Postfix's virtual agent into Maildirs
/// that Dovecot reads. One self-signed certificate (`mail.test`) serves all.
/// The machine's own /etc/postfix and /etc/dovecot are untouched.
final class MailServers {
    struct Domain {
        let name: String
        let mtaPort: UInt16
        let submissionPort: UInt16
        let submissionTLSPort: UInt16
        let configDirectory: String
    }

    static let certificateName = "mail.test"
    let certificate: TestCertificate
    let domestic: Domain
    let outside: Domain
    let imapPort: UInt16
    let imapTLSPort: UInt16
    let directory: URL
    private let dovecotConfig: String
    private var dovecot: ManagedProcess?
    private var started: [String] = []

    /// Accounts, with their passwords.
    let accounts = ["alice@domestic.test": "alice-secret", "bob@outside.test": "bob-secret", "gateway@outside.test": "gateway-secret"]

    /// With `idle: false` Dovecot does not offer IDLE after login, so clients must poll.
    init(idle: Bool = true) throws {
        directory = try Paths.temporaryDirectory("mail")
        ProcessRegistry.shared.removeAtExit(directory.path)
        certificate = try TestCertificate.make(for: Self.certificateName)
        let root = directory.path
        let mailRoot = root + "/maildirs"
        try FileManager.default.createDirectory(atPath: mailRoot, withIntermediateDirectories: true)
        _ = try runCommand("chown", try Paths.tool("chown", package: "coreutils"), ["65534:65534", mailRoot])

        imapPort = try Ports.free()
        imapTLSPort = try Ports.free()
        domestic = Domain(name: "domestic.test", mtaPort: try Ports.free(), submissionPort: try Ports.free(),
                          submissionTLSPort: try Ports.free(), configDirectory: root + "/postfix-domestic")
        outside = Domain(name: "outside.test", mtaPort: try Ports.free(), submissionPort: try Ports.free(),
                         submissionTLSPort: try Ports.free(), configDirectory: root + "/postfix-outside")

        // Dovecot first: Postfix's submission logins go to its auth socket.
        let users = accounts.map { "\($0.key):{PLAIN}\($0.value)" }.joined(separator: "\n") + "\n"
        try Data(users.utf8).write(to: directory.appendingPathComponent("users"))
        dovecotConfig = root + "/dovecot.conf"
        let config = """
        protocols = imap
        listen = 127.0.0.1
        base_dir = \(root)/dovecot-run
        state_dir = \(root)/dovecot-state
        log_path = \(root)/dovecot.log
        ssl = yes
        ssl_cert = <\(certificate.certificateFile)
        ssl_key = <\(certificate.keyFile)
        disable_plaintext_auth = yes
        auth_mechanisms = plain login
        passdb {
          driver = passwd-file
          args = scheme=PLAIN username_format=%u \(root)/users
        }
        userdb {
          driver = static
          args = uid=65534 gid=65534 home=\(mailRoot)/%d/%n
        }
        mail_location = maildir:\(mailRoot)/%d/%n
        first_valid_uid = 1
        \(idle ? "" : "imap_capability = IMAP4rev1 SASL-IR LITERAL+ ID ENABLE UIDPLUS")
        service imap-login {
          inet_listener imap {
            address = 127.0.0.1
            port = \(imapPort)
          }
          inet_listener imaps {
            address = 127.0.0.1
            port = \(imapTLSPort)
            ssl = yes
          }
        }
        service auth {
          unix_listener \(root)/auth-postfix {
            mode = 0666
          }
        }
        """
        try Data(config.utf8).write(to: URL(fileURLWithPath: dovecotConfig))
        let dovecot = try ManagedProcess("dovecot", try Paths.tool("dovecot", package: "dovecot-imapd"), ["-F", "-c", dovecotConfig])
        self.dovecot = dovecot
        try Ports.waitUntilAccepting(imapTLSPort, process: dovecot)

        for (domain, other) in [(domestic, outside), (outside, domestic)] {
            try Self.startPostfix(domain, relayingTo: other, root: root, mailRoot: mailRoot, certificate: certificate,
                                  accounts: accounts.keys.filter { $0.hasSuffix("@" + domain.name) })
            started.append(domain.configDirectory)
            try Ports.waitUntilAccepting(domain.submissionPort)
        }
    }

    private static func startPostfix(_ domain: Domain, relayingTo other: Domain, root: String, mailRoot: String,
                                     certificate: TestCertificate, accounts: [String]) throws {
        let config = domain.configDirectory
        let postconf = try Paths.tool("postconf", package: "postfix")
        let postfix = try Paths.tool("postfix", package: "postfix")
        for sub in ["", "-spool", "-data"] {
            try FileManager.default.createDirectory(atPath: config + sub, withIntermediateDirectories: true)
        }
        _ = try runCommand("chown", try Paths.tool("chown", package: "coreutils"), ["postfix", config + "-data"])
        try FileManager.default.copyItem(atPath: "/usr/share/postfix/main.cf.debian", toPath: config + "/main.cf")
        try Data("\(other.name) smtp:[127.0.0.1]:\(other.mtaPort)\n".utf8).write(to: URL(fileURLWithPath: config + "/transport"))
        let mailboxes = accounts.map { account -> String in
            let user = account.split(separator: "@")[0]
            return "\(account) \(domain.name)/\(user)/"
        }.joined(separator: "\n") + "\n"
        try Data(mailboxes.utf8).write(to: URL(fileURLWithPath: config + "/vmailbox"))
        // Three smtpd services on loopback ports of their own, and the usual internals.
        let submissionOptions = [
            "-o syslog_name=postfix/submission", "-o smtpd_sasl_auth_enable=yes",
            "-o smtpd_client_restrictions=permit_sasl_authenticated,reject",
            "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject",
        ].map { "  " + $0 }.joined(separator: "\n")
        var master = try String(contentsOfFile: "/etc/postfix/master.cf", encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.hasPrefix("smtp      inet") }
            .joined(separator: "\n")
        master += """

        127.0.0.1:\(domain.mtaPort) inet n - n - - smtpd
        127.0.0.1:\(domain.submissionPort) inet n - n - - smtpd
          -o smtpd_tls_security_level=encrypt
        \(submissionOptions)
        127.0.0.1:\(domain.submissionTLSPort) inet n - n - - smtpd
          -o smtpd_tls_wrappermode=yes
        \(submissionOptions)

        """
        try Data(master.utf8).write(to: URL(fileURLWithPath: config + "/master.cf"))
        let settings = [
            "queue_directory = \(config)-spool", "data_directory = \(config)-data",
            "myhostname = mail.\(domain.name)", "mydomain = \(domain.name)", "myorigin = \(domain.name)",
            "mydestination =", "inet_interfaces = 127.0.0.1", "inet_protocols = ipv4", "mynetworks = 127.0.0.0/8",
            "relay_domains =", "transport_maps = texthash:\(config)/transport",
            "virtual_mailbox_domains = \(domain.name)", "virtual_mailbox_base = \(mailRoot)",
            "virtual_mailbox_maps = texthash:\(config)/vmailbox", "virtual_minimum_uid = 1",
            "virtual_uid_maps = static:65534", "virtual_gid_maps = static:65534",
            "smtpd_peername_lookup = no", "smtp_dns_support_level = disabled", "disable_dns_lookups = yes",
            "maillog_file_prefixes = \(root)", "maillog_file = \(config).log", "alias_maps =", "alias_database =",
            "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
            "smtpd_tls_cert_file = \(certificate.certificateFile)", "smtpd_tls_key_file = \(certificate.keyFile)",
            "smtpd_tls_security_level = may", "smtp_tls_security_level = may",
            "smtpd_sasl_type = dovecot", "smtpd_sasl_path = \(root)/auth-postfix",
            "compatibility_level = 3.6", "message_size_limit = 20480000",
        ]
        let set = try runCommand("postconf -e", postconf, ["-c", config, "-e"] + settings)
        guard set.status == 0 else { throw TestFailure("postconf refused the test config:\n\(set.output)") }
        _ = try runCommand("postconf -F", postconf, ["-c", config, "-F", "*/*/chroot = n"])
        let start = try runCommand("postfix start", postfix, ["-c", config, "start"])
        guard start.status == 0 else { throw TestFailure("postfix -c \(config) start failed:\n\(start.output)") }
    }

    /// Postfix's and Dovecot's logs, for failure messages.
    var logs: String {
        [domestic.configDirectory + ".log", outside.configDirectory + ".log", directory.path + "/dovecot.log"]
            .map { path in "== \(path)\n" + ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "(none)") }
            .joined(separator: "\n")
    }

    func stop() {
        if let postfix = try? Paths.tool("postfix", package: "postfix") {
            for config in started { _ = try? runCommand("postfix stop", postfix, ["-c", config, "stop"]) }
        }
        started = []
        dovecot?.stop()
        dovecot = nil
    }

    deinit { stop() }
}
