import Foundation

/// Where things are: the package root (found from this file's path), the
/// built `raha` binary, the Python fixtures.
enum Paths {
    /// The package root: the nearest directory above this file holding Package.swift.
    static let packageRoot: URL = {
        var dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while dir.path != "/" {
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) { return dir }
            dir = dir.deletingLastPathComponent()
        }
        fatalError("no Package.swift above \(#filePath)")
    }()

    static let fixtures = packageRoot.appendingPathComponent("Tests/RahaIntegrationTests/Fixtures")

    /// `.build/debug/raha` (or $RAHA_BINARY), which `swift build --build-tests` makes.
    static func rahaBinary() throws -> String {
        let path = ProcessInfo.processInfo.environment["RAHA_BINARY"]
            ?? packageRoot.appendingPathComponent(".build/debug/raha").path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestFailure("the raha binary is missing at \(path): run `swift build --build-tests` (or `swift build --product raha`) before `swift test --skip-build`")
        }
        return path
    }

    /// The absolute path of a tool on PATH (then in /usr/sbin and /sbin, where
    /// Debian puts daemons such as nginx, should PATH lack them), or a clear
    /// failure naming the Debian package.
    /// `executable arguments` as they are, or, given a network namespace,
    /// `ip netns exec NAMESPACE executable arguments`.
    static func command(_ executable: String, _ arguments: [String], in namespace: String?) throws -> (String, [String]) {
        guard let namespace else { return (executable, arguments) }
        return (try tool("ip", package: "iproute2"), ["netns", "exec", namespace, executable] + arguments)
    }

    static func tool(_ name: String, package: String) throws -> String {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin") + ":/usr/sbin:/sbin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw TestFailure("\(name) is not installed: run `scripts/deps test` (Debian package \(package))")
    }

    /// A fresh empty directory under the system temporary directory.
    static func temporaryDirectory(_ label: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("raha-it-\(label)-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// A failure in the test machinery (not an assertion), with a message that says what to do.
struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
