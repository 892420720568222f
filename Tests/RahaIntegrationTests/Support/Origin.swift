import Foundation

/// The origin web server every test fetches from: `python3 -m http.server`
/// (HTTP/1.1, keep-alive) on 127.0.0.1, serving a 3 MB random file and a
/// small text file. One per test run, started on first use.
final class Origin: @unchecked Sendable {
    static let bigName = "big.bin"
    static let smallName = "small.txt"

    let port: UInt16
    let directory: URL
    let big: Data
    let small: Data
    private let server: ManagedProcess

    private static let lock = NSLock()
    nonisolated(unsafe) private static var started: Result<Origin, Error>?

    /// The shared origin (started once; a failure to start is remembered and rethrown).
    static func shared() throws -> Origin {
        lock.lock()
        defer { lock.unlock() }
        if started == nil { started = Result { try Origin() } }
        return try started!.get()
    }

    private init() throws {
        directory = try Paths.temporaryDirectory("origin")
        big = try Self.randomBytes(3 * 1024 * 1024 + 123)
        small = Data("Raha integration test: a small file.\nسلام\n".utf8)
        try big.write(to: directory.appendingPathComponent(Self.bigName))
        try small.write(to: directory.appendingPathComponent(Self.smallName))
        port = try Ports.free()
        let python = try Paths.tool("python3", package: "python3")
        // `python3 -m http.server --protocol HTTP/1.1 --bind 127.0.0.1 PORT --directory DIR`,
        // run through runpy behind a watchdog that exits when our end of its stdin
        // closes, so the server never outlives a crashed test process.
        let arguments = ["http.server", "--protocol", "HTTP/1.1", "--bind", "127.0.0.1", String(port), "--directory", directory.path]
        let launcher = """
            import os, runpy, sys, threading
            def watch():
                while sys.stdin.buffer.read(4096): pass
                os._exit(0)
            threading.Thread(target=watch, daemon=True).start()
            sys.argv = sys.argv[1:]
            runpy.run_module("http.server", run_name="__main__", alter_sys=True)
            """
        server = try ManagedProcess("origin http.server", python, ["-c", launcher] + arguments)
        ProcessRegistry.shared.removeAtExit(directory.path)
        try Ports.waitUntilAccepting(port, process: server)
    }

    private static func randomBytes(_ count: Int) throws -> Data {
        guard let urandom = FileHandle(forReadingAtPath: "/dev/urandom") else { throw TestFailure("cannot open /dev/urandom") }
        defer { try? urandom.close() }
        let data = urandom.readData(ofLength: count)
        guard data.count == count else { throw TestFailure("short read from /dev/urandom") }
        return data
    }

    private let filesLock = NSLock()
    private var madeFiles: [String: Data] = [:]

    /// A file of `bytes` random bytes that the origin serves as `name` (made
    /// on first use; later calls with the same name return the same bytes).
    func randomFile(_ name: String, bytes: Int) throws -> Data {
        filesLock.lock()
        defer { filesLock.unlock() }
        if let made = madeFiles[name] { return made }
        let data = try Self.randomBytes(bytes)
        try data.write(to: directory.appendingPathComponent(name))
        madeFiles[name] = data
        return data
    }

    deinit {
        server.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// http://127.0.0.1:PORT/NAME
    func url(_ name: String) -> String { "http://127.0.0.1:\(port)/\(name)" }
    var bigURL: String { url(Self.bigName) }
    var smallURL: String { url(Self.smallName) }
}

/// Runs curl (bounded: --max-time and the hang guard) and returns its exit status, body bytes and stderr.
enum Curl {
    struct Result {
        let status: Int32
        let body: Data
        let stderr: String
    }

    static func fetch(_ arguments: [String], maxTime: Int = 25) throws -> Result {
        let curl = try Paths.tool("curl", package: "curl")
        let result = try runCommand("curl", curl,
            ["--silent", "--show-error", "--max-time", String(maxTime), "--connect-timeout", "10"] + arguments,
            timeout: TimeInterval(maxTime + 10))
        return Result(status: result.status, body: result.stdout, stderr: result.stderrText)
    }
}
