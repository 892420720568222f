import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A tiny TCP man in the middle on 127.0.0.1 that records what clients
/// send. With an upstream port it relays both ways (so the client's session
/// really happens); without one it only captures the client's first bytes
/// (at least `captureBytes`, or all until the client closes) and hangs up.
final class TCPRecorder: @unchecked Sendable {
    let port: UInt16
    private let upstreamPort: UInt16?
    private let captureBytes: Int
    private var listenFD: Int32
    private let condition = NSCondition()
    private var captures: [[UInt8]] = []
    private var finished: [Bool] = []

    init(upstreamPort: UInt16?, captureBytes: Int = 64) throws {
        self.upstreamPort = upstreamPort
        self.captureBytes = captureBytes
        port = try Ports.free()
        listenFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(listenFD, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard Ports.bind(listenFD, toLoopback: port), listen(listenFD, 16) == 0 else {
            close(listenFD)
            throw TestFailure("recorder cannot listen on 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
        let fd = listenFD
        Thread { [weak self] in
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { if errno == EINTR { continue }; return }
                _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                guard let self else { Glibc.close(client); return }
                self.handle(RawTCP(adopting: client))
            }
        }.start()
    }

    deinit { stop() }

    func stop() {
        if listenFD >= 0 {
            shutdown(listenFD, Int32(SHUT_RDWR))
            close(listenFD)
            listenFD = -1
        }
    }

    private func handle(_ client: RawTCP) {
        condition.lock()
        let index = captures.count
        captures.append([])
        finished.append(false)
        condition.unlock()
        let record: ([UInt8]) -> Void = { [self] bytes in
            condition.lock(); captures[index] += bytes; condition.broadcast(); condition.unlock()
        }
        let done: () -> Void = { [self] in
            condition.lock(); finished[index] = true; condition.broadcast(); condition.unlock()
        }
        guard let upstreamPort else {
            Thread {
                var total = 0
                while total < self.captureBytes, case .success(let bytes) = client.receive(timeout: 10) {
                    record(bytes)
                    total += bytes.count
                }
                client.close()
                done()
            }.start()
            return
        }
        guard let upstream = try? RawTCP(port: upstreamPort) else { client.close(); done(); return }
        let pending = DispatchGroup()
        for (from, to, recording) in [(client, upstream, true), (upstream, client, false)] {
            pending.enter()
            Thread {
                while case .success(let bytes) = from.receive(timeout: 60) {
                    if recording { record(bytes) }
                    if (try? to.send(bytes)) == nil { break }
                }
                to.shutdownOutput()
                pending.leave()
            }.start()
        }
        Thread {
            pending.wait()
            client.close()
            upstream.close()
            done()
        }.start()
    }

    /// What the `index`th client sent (waits until that connection is over, bounded by the hang guard).
    func capture(_ index: Int, timeout: TimeInterval = ManagedProcess.hangGuard) throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !(index < finished.count && finished[index]) {
            if !condition.wait(until: deadline) {
                throw TestFailure("the recorder saw no finished connection #\(index + 1) within \(Int(timeout)) s")
            }
        }
        return captures[index]
    }
}
