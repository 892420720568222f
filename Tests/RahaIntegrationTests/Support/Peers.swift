import Foundation

/// The legacy AEAD methods shadowsocks-libev 3.3.5 speaks.
let legacyMethods = ["chacha20-ietf-poly1305", "aes-256-gcm", "aes-128-gcm"]

/// A random alphanumeric password.
func randomPassword(_ length: Int = 24) -> String {
    let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    return String((0..<length).map { _ in alphabet.randomElement()! })
}

/// A random SIP022 PSK of `bytes` bytes, base64 (standard alphabet, padded).
func randomPSK(bytes: Int) -> String {
    Data((0..<bytes).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
}

/// `ss://METHOD:PASSWORD@HOST:PORT` (HOST 127.0.0.1 by default), the password percent-encoded.
func ssURI(method: String, password: String, port: UInt16, host: String = "127.0.0.1") -> String {
    let unreserved = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
    return "ss://\(method):\(password.addingPercentEncoding(withAllowedCharacters: unreserved)!)@\(host):\(port)"
}

/// `trojan://PASSWORD@HOST:PORT?NAME=VALUE&…` (HOST 127.0.0.1 by default), the password and
/// values percent-encoded, parameters in the order given (e.g. `[("security", "tls"), ("sni", "bridge.raha.test")]`).
func trojanURI(password: String, port: UInt16, _ parameters: [(String, String)], host: String = "127.0.0.1") -> String {
    // Unreserved characters, plus / (paths) and : (pins with colons) which a query may hold as they are.
    let plain = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
    let query = parameters.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: plain.union(CharacterSet(charactersIn: "/:")))!)" }
    return "trojan://\(password.addingPercentEncoding(withAllowedCharacters: plain)!)@\(host):\(port)"
        + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
}

/// Starting the programs under test and their peers, each ready before it is returned.
enum Peers {
    static let connectReadyPrefix = "Local proxy (SOCKS5 and HTTP) listening on 127.0.0.1:"

    /// The schemes of the access keys a bridge prints, one key per line.
    static let keySchemes = ["ss://", "trojan://", "dns://"]

    /// `raha bridge URI... [extra]`; returns the process and the access keys
    /// it printed (one per listener: lines starting with ss:// or trojan://).
    static func bridge(_ listeners: [String], allowPrivate: Bool = true, extra: [String] = [],
                       namespace: String? = nil) throws -> (ManagedProcess, [String]) {
        let arguments = ["bridge"] + listeners + (allowPrivate ? ["--allow-private"] : []) + ["--no-qr"] + extra
        let (executable, fullArguments) = try Paths.command(try Paths.rahaBinary(), arguments, in: namespace)
        let process = try ManagedProcess("raha bridge", executable, fullArguments)
        var keys: [String] = []
        while keys.count < max(1, listeners.count) {
            let index = keys.count
            let line = try process.waitForLine(description: "access key \(index + 1) (a line starting with ss:// or trojan://)") { line in
                keySchemes.contains { line.hasPrefix($0) } && !keys.contains(line)
            }
            keys.append(line)
        }
        return (process, keys)
    }

    /// `raha bridge trojan://… --data TMP [--cert FILE --key FILE] [--fallback 127.0.0.1:PORT] [extra]`:
    /// a Trojan bridge with a fresh data directory of its own (where it keeps
    /// the self-signed certificate it makes when given none).
    static func trojanBridge(_ listeners: [String], certificate: TestCertificate? = nil, fallbackPort: UInt16? = nil,
                             allowPrivate: Bool = true, extra: [String] = [], namespace: String? = nil) throws -> (ManagedProcess, [String]) {
        let data = try Paths.temporaryDirectory("bridge-data")
        ProcessRegistry.shared.removeAtExit(data.path)
        var arguments = ["--data", data.path]
        if let certificate { arguments += ["--cert", certificate.certificateFile, "--key", certificate.keyFile] }
        if let fallbackPort { arguments += ["--fallback", "127.0.0.1:\(fallbackPort)"] }
        return try bridge(listeners, allowPrivate: allowPrivate, extra: arguments + extra, namespace: namespace)
    }

    /// `raha connect KEY... --listen 127.0.0.1:PORT [extra]`, ready once it says so
    /// (listening; the first race may still run). Unless `extra` says otherwise, it
    /// probes the loopback origin (never the default probe URL on the internet) and
    /// remembers nothing (--no-memory).
    static func connect(_ keys: [String], extra: [String] = [], environment: [String: String] = [:]) throws -> (ManagedProcess, UInt16) {
        let port = try Ports.free()
        var defaults: [String] = []
        if !extra.contains("--probe-url") { defaults += ["--probe-url", try Origin.shared().smallURL] }
        if !extra.contains("--state") { defaults += ["--no-memory"] }
        let process = try ManagedProcess("raha connect", try Paths.rahaBinary(),
                                         ["connect"] + keys + ["--listen", "127.0.0.1:\(port)"] + defaults + extra,
                                         environment: environment)
        let line = try process.waitForLine(startingWith: connectReadyPrefix)
        guard line.hasPrefix(connectReadyPrefix + "\(port),") else {
            throw TestFailure("raha connect announced “\(line)”, not port \(port)")
        }
        return (process, port)
    }

    /// Debian's ss-server on 127.0.0.1 (TCP, plus UDP with `udp`), or on
    /// `host:port` in a network namespace (ready once it logs "listening at").
    static func ssServer(method: String, password: String, udp: Bool = false,
                         host: String = "127.0.0.1", port: UInt16? = nil, namespace: String? = nil) throws -> (ManagedProcess, UInt16) {
        let port = try port ?? Ports.free()
        let (executable, arguments) = try Paths.command(try Paths.tool("ss-server", package: "shadowsocks-libev"),
            ["-s", host, "-p", String(port), "-k", password, "-m", method, "-t", "30"] + (udp ? ["-u"] : []), in: namespace)
        let process = try ManagedProcess("ss-server", executable, arguments)
        try waitUntilListening(process, port: port, namespace: namespace)
        return (process, port)
    }

    /// Debian's ss-local on 127.0.0.1 towards a server on serverHost:serverPort (TCP, plus
    /// UDP with `udp`), optionally in a network namespace (ready once it logs "listening at").
    static func ssLocal(method: String, password: String, serverPort: UInt16, udp: Bool = false,
                        serverHost: String = "127.0.0.1", namespace: String? = nil) throws -> (ManagedProcess, UInt16) {
        let port = try Ports.free()
        let (executable, arguments) = try Paths.command(try Paths.tool("ss-local", package: "shadowsocks-libev"),
            ["-s", serverHost, "-p", String(serverPort), "-b", "127.0.0.1", "-l", String(port),
             "-k", password, "-m", method, "-t", "30"] + (udp ? ["-u"] : []), in: namespace)
        let process = try ManagedProcess("ss-local", executable, arguments)
        try waitUntilListening(process, port: port, namespace: namespace)
        return (process, port)
    }

    /// A shadowsocks-libev program is ready when its port accepts on loopback, or, in a
    /// namespace (whose ports this process cannot reach), when it logs "listening at".
    private static func waitUntilListening(_ process: ManagedProcess, port: UInt16, namespace: String?) throws {
        if namespace == nil {
            try Ports.waitUntilAccepting(port, process: process)
        } else {
            try process.waitForLine(description: "“listening at”") { $0.contains("listening at") }
        }
    }

    /// The UDP echo fixture on 127.0.0.1; returns its port. With `report` it
    /// prints "echoed N bytes" for every datagram it receives.
    static func udpEcho(report: Bool = false) throws -> (ManagedProcess, UInt16) {
        let process = try ManagedProcess("udp_echo.py", try Paths.tool("python3", package: "python3"),
                                         [Paths.fixtures.appendingPathComponent("udp_echo.py").path] + (report ? ["--report"] : []))
        let line = try process.waitForLine(startingWith: "UDP echo listening on 127.0.0.1:")
        guard let port = UInt16(line.split(separator: ":").last ?? "") else { throw TestFailure("udp_echo.py said “\(line)”") }
        return (process, port)
    }

    /// Runs the SOCKS5 UDP ASSOCIATE fixture against a proxy and an echo
    /// server; `sizes` are the exact payload sizes, used in turn;
    /// `sequential` sends each datagram once the previous one came back.
    static func socksUDPClient(proxyPort: UInt16, echoPort: UInt16, count: Int = 8, sizes: [Int]? = nil,
                               sequential: Bool = false) throws -> CommandResult {
        try runCommand("socks5_udp_client.py", try Paths.tool("python3", package: "python3"),
            [Paths.fixtures.appendingPathComponent("socks5_udp_client.py").path,
             "--proxy", "127.0.0.1:\(proxyPort)", "--target", "127.0.0.1:\(echoPort)",
             "--count", String(count), "--resends", "5", "--timeout", sequential ? "2" : "1"]
            + (sizes.map { ["--sizes", $0.map(String.init).joined(separator: ",")] } ?? [])
            + (sequential ? ["--sequential"] : []), timeout: 90)
    }
}

/// Stops every process when the scope ends, last started first.
final class Processes {
    private var list: [ManagedProcess] = []
    func add(_ process: ManagedProcess) { list.append(process) }
    func stopAll() { for process in list.reversed() { process.stop() }; list = [] }
    deinit { stopAll() }
}
