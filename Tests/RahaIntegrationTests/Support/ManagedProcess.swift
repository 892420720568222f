import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A child process for one test: output captured (stdout and stderr apart
/// and interleaved), bounded waits for a line or for exit, and always
/// ended (SIGTERM, then SIGKILL) by `stop()`, by `deinit`, or at the
/// latest when the test process exits.
///
/// Should the test process die without cleaning up, children go with it
/// anyway: each is started under `setpriv --pdeathsig KILL`, and its
/// standard input is a pipe held open by this process, so the Python
/// fixtures (which exit on end of input) see EOF.
final class ManagedProcess: @unchecked Sendable {
    /// How long to wait for a line or an exit before calling it a hang.
    /// This is a guard against hanging forever, not a speed assertion.
    static let hangGuard: TimeInterval = 30

    /// What the reader threads and the termination handler share. They hold
    /// this, not the ManagedProcess, so dropping the last reference to a
    /// ManagedProcess runs its deinit (which stops the child).
    private final class State: @unchecked Sendable {
        let condition = NSCondition()
        var stdoutData = Data()
        var stderrData = Data()
        var combined = Data()
        var openStreams = 2
        var exited = false
    }

    let name: String
    let commandLine: String
    private let process = Process()
    private let stdinPipe = Pipe()
    private let state = State()
    private var stopped = false

    /// Starts `executable` with `arguments` in a clean environment (no proxy variables).
    init(_ name: String, _ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        self.name = name
        self.commandLine = ([executable] + arguments).map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ")
        if let wrapper = Self.parentDeathWrapper {
            process.executableURL = URL(fileURLWithPath: wrapper[0])
            process.arguments = Array(wrapper.dropFirst()) + [executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.lowercased().hasSuffix("_proxy") }
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = stdinPipe
        let state = self.state
        process.terminationHandler = { _ in
            state.condition.lock()
            state.exited = true
            state.condition.broadcast()
            state.condition.unlock()
        }
        try Self.spawnWithSignalsUnblocked(process)
        ProcessRegistry.shared.add(process.processIdentifier)
        // The child holds its own copies; close ours so EOF arrives when it exits.
        try? out.fileHandleForWriting.close()
        try? err.fileHandleForWriting.close()
        try? stdinPipe.fileHandleForReading.close()
        Self.startReader(out.fileHandleForReading, state: state, isStdout: true, name: name)
        Self.startReader(err.fileHandleForReading, state: state, isStdout: false, name: name)
    }

    deinit { stop() }

    /// `Process.run()` on the spawner thread (see `Spawner`).
    private static func spawnWithSignalsUnblocked(_ process: Process) throws {
        final class Outcome: @unchecked Sendable { var error: Error? }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        Spawner.shared.run {
            do { try process.run() } catch { outcome.error = error }
            done.signal()
        }
        done.wait()
        if let error = outcome.error { throw error }
    }

    /// `setpriv --pdeathsig KILL --` (util-linux) when there is one: the child
    /// is killed if the thread that spawned it (the spawner, which lives as
    /// long as this process) goes away, so even a crashed test run leaves
    /// nothing behind. Nil where setpriv is missing.
    private static let parentDeathWrapper: [String]? = {
        guard let setpriv = try? Paths.tool("setpriv", package: "util-linux") else { return nil }
        return [setpriv, "--pdeathsig", "KILL", "--"]
    }()

    var pid: Int32 { process.processIdentifier }

    private static func startReader(_ handle: FileHandle, state: State, isStdout: Bool, name: String) {
        let fd = handle.fileDescriptor
        let thread = Thread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                state.condition.lock()
                if n <= 0 {
                    state.openStreams -= 1
                    state.condition.broadcast()
                    state.condition.unlock()
                    break
                }
                let chunk = buffer.withUnsafeBytes { Data(bytes: $0.baseAddress!, count: n) }
                if isStdout { state.stdoutData.append(chunk) } else { state.stderrData.append(chunk) }
                state.combined.append(chunk)
                state.condition.broadcast()
                state.condition.unlock()
            }
            try? handle.close()
        }
        thread.name = "\(name) \(isStdout ? "stdout" : "stderr")"
        thread.start()
    }

    private func locked<T>(_ body: (State) -> T) -> T {
        state.condition.lock()
        defer { state.condition.unlock() }
        return body(state)
    }

    // MARK: Output

    var standardOutput: Data { locked { $0.stdoutData } }
    var standardOutputText: String { String(decoding: standardOutput, as: UTF8.self) }
    var standardErrorText: String { locked { String(decoding: $0.stderrData, as: UTF8.self) } }
    /// Everything written so far, stdout and stderr interleaved as read.
    var output: String { locked { String(decoding: $0.combined, as: UTF8.self) } }

    /// Waits (at most `timeout`) for a complete line on stdout or stderr that
    /// satisfies `matches`, and returns it. Fails with the output so far if
    /// the process exits first or the time runs out.
    @discardableResult
    func waitForLine(timeout: TimeInterval = ManagedProcess.hangGuard, description: String,
                     _ matches: (String) -> Bool) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        state.condition.lock()
        defer { state.condition.unlock() }
        while true {
            // Only complete lines (ending in a newline) count.
            for data in [state.stdoutData, state.stderrData] {
                guard let last = data.lastIndex(of: UInt8(ascii: "\n")) else { continue }
                let lines = String(decoding: data[..<last], as: UTF8.self).split(whereSeparator: \.isNewline).map(String.init)
                if let line = lines.first(where: matches) { return line }
            }
            if state.exited && state.openStreams == 0 {
                throw TestFailure("\(name) exited (status \(process.terminationStatus)) before printing \(description).\nCommand: \(commandLine)\nOutput:\n\(String(decoding: state.combined, as: UTF8.self))")
            }
            if !state.condition.wait(until: deadline) {
                throw TestFailure("\(name) did not print \(description) within \(Int(timeout)) s (hang guard).\nCommand: \(commandLine)\nOutput:\n\(String(decoding: state.combined, as: UTF8.self))")
            }
        }
    }

    /// Waits for a line starting with `prefix`.
    @discardableResult
    func waitForLine(startingWith prefix: String, timeout: TimeInterval = ManagedProcess.hangGuard) throws -> String {
        try waitForLine(timeout: timeout, description: "a line starting with “\(prefix)”") { $0.hasPrefix(prefix) }
    }

    /// Waits for the process to exit and its output to be read in full; returns the exit status.
    @discardableResult
    func waitForExit(timeout: TimeInterval = ManagedProcess.hangGuard) throws -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        state.condition.lock()
        while !(state.exited && state.openStreams == 0) {
            if !state.condition.wait(until: deadline) {
                state.condition.unlock()
                let text = output
                stop()
                throw TestFailure("\(name) did not exit within \(Int(timeout)) s (hang guard); killed it.\nCommand: \(commandLine)\nOutput:\n\(text)")
            }
        }
        state.condition.unlock()
        process.waitUntilExit()
        ProcessRegistry.shared.remove(process.processIdentifier)
        return process.terminationStatus
    }

    var isRunning: Bool { locked { !$0.exited } }

    /// Writes `data` to the child's standard input (which stays open until
    /// `closeStandardInput()` or `stop()`), e.g. a request for `openssl s_client -quiet`.
    /// A child that has gone makes the write fail (EPIPE), never kills the
    /// test process: SIGPIPE is blocked on this thread for the write and a
    /// pending one is consumed before the old mask returns.
    func writeToStandardInput(_ data: Data) throws {
        let fd = stdinPipe.fileHandleForWriting.fileDescriptor
        var pipeSignal = sigset_t(), previous = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &pipeSignal, &previous)
        defer {
            var pending = sigset_t()
            sigpending(&pending)
            if sigismember(&pending, SIGPIPE) == 1 {
                var zero = timespec(tv_sec: 0, tv_nsec: 0)
                _ = sigtimedwait(&pipeSignal, nil, &zero)
            }
            pthread_sigmask(SIG_SETMASK, &previous, nil)
        }
        let bytes = [UInt8](data)
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                throw TestFailure("cannot write to \(name)'s standard input (\(reason)); it is \(termination).\nOutput:\n\(output)")
            }
            written += n
        }
    }

    /// Closes the child's standard input: it reads end of file.
    func closeStandardInput() { try? stdinPipe.fileHandleForWriting.close() }

    /// How it ended ("exit status N" or "killed by signal N"), or "running".
    var termination: String {
        guard !isRunning else { return "running" }
        let how = process.terminationReason == .uncaughtSignal ? "killed by signal" : "exit status"
        return "\(how) \(process.terminationStatus)"
    }

    /// Ends the process with SIGKILL at once, as a crash or a power cut does (no
    /// cleanup of its own), and waits for it to be gone.
    func killAbruptly() {
        if stopped { return }
        kill(process.processIdentifier, SIGKILL)
        stop()
    }

    /// Ends the process: SIGTERM, up to 3 s to go, then SIGKILL. Idempotent.
    func stop() {
        if stopped { return }
        stopped = true
        let pid = process.processIdentifier
        state.condition.lock()
        if !state.exited {
            kill(pid, SIGTERM)
            let deadline = Date().addingTimeInterval(3)
            while !state.exited && state.condition.wait(until: deadline) {}
            if !state.exited {
                kill(pid, SIGKILL)
                let hardDeadline = Date().addingTimeInterval(5)
                while !state.exited && state.condition.wait(until: hardDeadline) {}
            }
        }
        state.condition.unlock()
        try? stdinPipe.fileHandleForWriting.close()
        ProcessRegistry.shared.remove(pid)
    }
}

/// One thread, alive as long as the test process, that starts every child.
///
/// A child inherits the signal mask of the thread that spawns it, and the
/// threads Swift Testing runs tests on (libdispatch workers) block SIGTERM
/// and most other signals: ss-local and ss-server spawned from them ignore
/// SIGTERM. This thread's mask is empty. And since it never exits, it can
/// be the "parent" for `setpriv --pdeathsig`, which fires when the spawning
/// thread (not process) dies.
final class Spawner: @unchecked Sendable {
    static let shared = Spawner()
    private let condition = NSCondition()
    private var jobs: [() -> Void] = []

    private init() {
        let thread = Thread { [self] in
            var none = sigset_t()
            sigemptyset(&none)
            pthread_sigmask(SIG_SETMASK, &none, nil)
            while true {
                condition.lock()
                while jobs.isEmpty { condition.wait() }
                let job = jobs.removeFirst()
                condition.unlock()
                job()
            }
        }
        thread.name = "child process spawner"
        thread.start()
    }

    func run(_ job: @escaping () -> Void) {
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }
}

/// Every child still running, killed when the test process exits normally.
final class ProcessRegistry: @unchecked Sendable {
    static let shared: ProcessRegistry = {
        let registry = ProcessRegistry()
        atexit { ProcessRegistry.shared.killAll() }
        return registry
    }()

    private let lock = NSLock()
    private var pids = Set<Int32>()
    private var paths: [String] = []

    /// Deletes `path` (a temporary directory) when the test process exits.
    func removeAtExit(_ path: String) { lock.lock(); paths.append(path); lock.unlock() }

    func add(_ pid: Int32) { lock.lock(); pids.insert(pid); lock.unlock() }
    func remove(_ pid: Int32) { lock.lock(); pids.remove(pid); lock.unlock() }

    func killAll() {
        lock.lock()
        let all = pids, directories = paths
        pids = []
        paths = []
        lock.unlock()
        for pid in all { kill(pid, SIGKILL) }
        for path in directories { try? FileManager.default.removeItem(atPath: path) }
    }
}

/// Runs a short-lived command to completion (bounded by the hang guard).
struct CommandResult {
    let status: Int32
    let stdout: Data
    let stderrText: String
    /// Decoded on demand only: decoding megabytes of binary as UTF-8 repairs
    /// every bad byte, and Swift Testing records a backtrace for each repair's thrown error.
    var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    var output: String { stdoutText + stderrText }
}

func runCommand(_ name: String, _ executable: String, _ arguments: [String],
                timeout: TimeInterval = ManagedProcess.hangGuard) throws -> CommandResult {
    let process = try ManagedProcess(name, executable, arguments)
    defer { process.stop() }
    let status = try process.waitForExit(timeout: timeout)
    return CommandResult(status: status, stdout: process.standardOutput, stderrText: process.standardErrorText)
}
