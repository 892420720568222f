import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Whether this process may create network namespaces (`ip netns add`, root).
let canCreateNamespaces: Bool = {
    guard geteuid() == 0, let ip = try? Paths.tool("ip", package: "iproute2") else { return false }
    let name = "raha-t-\(getpid())-probe"
    guard let result = try? runCommand("ip netns add", ip, ["netns", "add", name], timeout: 10), result.status == 0 else { return false }
    _ = try? runCommand("ip netns del", ip, ["netns", "del", name], timeout: 10)
    return true
}()

/// Namespaces still to delete when the test process exits (should a test not get to its own cleanup).
final class NamespaceRegistry: @unchecked Sendable {
    static let shared: NamespaceRegistry = {
        let registry = NamespaceRegistry()
        atexit { NamespaceRegistry.shared.removeAll() }
        return registry
    }()

    private let lock = NSLock()
    private var names = Set<String>()

    func add(_ name: String) { lock.lock(); names.insert(name); lock.unlock() }
    func remove(_ name: String) { lock.lock(); names.remove(name); lock.unlock() }

    func removeAll() {
        lock.lock()
        let all = names
        names = []
        lock.unlock()
        guard let ip = try? Paths.tool("ip", package: "iproute2") else { return }
        for name in all { _ = try? runCommand("ip netns del", ip, ["netns", "del", name], timeout: 10) }
    }
}

/// Network namespaces of one test's own (named raha-t-PID-LABEL-ROLE, loopback up),
/// joined by veth pairs; deleted when the test is done. The addresses given
/// to them exist only inside them.
final class TestNamespaces {
    let names: [String]
    private let ipTool: String
    private var removed = false

    init(_ label: String, _ roles: [String]) throws {
        ipTool = try Paths.tool("ip", package: "iproute2")
        names = roles.map { "raha-t-\(getpid())-\(label)-\($0)" }
        do {
            for name in names {
                NamespaceRegistry.shared.add(name)
                try ip(["netns", "add", name])
                try ip(["-n", name, "link", "set", "lo", "up"])
            }
        } catch {
            remove()
            throw error
        }
    }

    deinit { remove() }

    /// `ip ARGUMENTS`, expected to succeed.
    func ip(_ arguments: [String]) throws {
        let result = try runCommand("ip", ipTool, arguments, timeout: 20)
        guard result.status == 0 else {
            throw TestFailure("ip \(arguments.joined(separator: " ")) failed (status \(result.status)): \(result.output)")
        }
    }

    /// A veth pair between two namespaces, each end with its address and up.
    /// Created inside the namespaces, so the interface names cannot clash with the host's.
    func link(_ a: String, _ aDevice: String, _ aAddress: String, to b: String, _ bDevice: String, _ bAddress: String) throws {
        try ip(["-n", a, "link", "add", aDevice, "type", "veth", "peer", "name", bDevice, "netns", b])
        for (ns, device, address) in [(a, aDevice, aAddress), (b, bDevice, bAddress)] {
            try ip(["-n", ns, "addr", "add", address, "dev", device])
            try ip(["-n", ns, "link", "set", device, "up"])
        }
    }

    /// `ip netns exec NS EXECUTABLE ARGS` as a managed process.
    func start(_ name: String, in namespace: String, _ executable: String, _ arguments: [String]) throws -> ManagedProcess {
        try ManagedProcess(name, ipTool, ["netns", "exec", namespace, executable] + arguments)
    }

    /// Runs a command in a namespace to completion (bounded).
    func run(in namespace: String, _ executable: String, _ arguments: [String], timeout: TimeInterval = 20) throws -> CommandResult {
        try runCommand(URL(fileURLWithPath: executable).lastPathComponent, ipTool, ["netns", "exec", namespace, executable] + arguments, timeout: timeout)
    }

    /// Deletes the namespaces (their veth pairs go with them). Stop the processes in them first.
    func remove() {
        if removed { return }
        removed = true
        for name in names {
            _ = try? runCommand("ip netns del", ipTool, ["netns", "del", name], timeout: 10)
            NamespaceRegistry.shared.remove(name)
        }
    }
}
