#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Foundation
import RahaWire

/// Where a bridge keeps its keys: a directory of mode 0700 holding files of
/// mode 0600. Files that others can read are refused, not silently used.
public struct DataDirectory: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// `$XDG_DATA_HOME/raha`, else `~/.local/share/raha`.
    public static var defaultPath: String {
        let env = ProcessInfo.processInfo.environment
        if let xdg = env["XDG_DATA_HOME"], !xdg.isEmpty { return xdg + "/raha" }
        let home = env["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return home + "/.local/share/raha"
    }

    public struct StorageError: Error, CustomStringConvertible {
        public let description: String
    }

    public func ensureExists() throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw StorageError(description: "\(path) exists but is not a directory: choose another --data") }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw StorageError(description: "cannot create the data directory \(path): \(error.localizedDescription)")
        }
    }

    /// Reads a secret file; nil when it does not exist.
    public func readSecret(_ name: String) throws -> String? {
        let file = path + "/" + name
        guard try Self.refuseIfReadableByOthers(file) else { return nil }
        guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
            throw StorageError(description: "cannot read \(file)")
        }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Throws when `file` exists and other users may read it; false when it does not exist.
    @discardableResult
    public static func refuseIfReadableByOthers(_ file: String) throws -> Bool {
        var st = stat()
        guard stat(file, &st) == 0 else { return false }
        guard st.st_mode & 0o077 == 0 else {
            throw StorageError(description: "\(file) can be read by other users (mode \(String(st.st_mode & 0o777, radix: 8))): run `chmod 600 \(file)` and start again")
        }
        return true
    }

    /// Writes a secret file with mode 0600, atomically (temporary file, then rename).
    public func writeSecret(_ name: String, _ contents: String) throws {
        try ensureExists()
        let file = path + "/" + name
        let temporary = file + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_TRUNC, 0o600)
        guard fd >= 0 else { throw StorageError(description: "cannot write \(temporary): \(String(cString: strerror(errno)))") }
        let bytes = Array((contents + "\n").utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == bytes.count, synced == 0, rename(temporary, file) == 0 else {
            unlink(temporary)
            throw StorageError(description: "cannot write \(file): \(String(cString: strerror(errno)))")
        }
    }
}

/// The listener `raha bridge` runs when given no access key: made once,
/// then kept in the data directory so the key people hold keeps working.
public enum DefaultListener {
    public static let fileName = "shadowsocks.key"

    /// Loads the stored key, or creates one (chacha20-ietf-poly1305, a
    /// random high port, an Outline prefix) listening on all IPv4 addresses.
    public static func loadOrCreate(in directory: DataDirectory) throws -> (key: ShadowsocksKey, created: Bool) {
        if let text = try directory.readSecret(fileName) {
            do {
                return (try ShadowsocksKey(parsing: text), false)
            } catch {
                throw DataDirectory.StorageError(description: "\(directory.path)/\(fileName) does not hold a valid access key (\(error)): remove it to make a new one")
            }
        }
        let port = UInt16.random(in: 20000...60000)
        let key = ShadowsocksKey.generate(method: .chacha20IETFPoly1305, server: Endpoint(host: .ipv4([0, 0, 0, 0]), port: port), tag: "Raha")
        try directory.writeSecret(fileName, key.uri)
        return (key, true)
    }
}

/// The bridge's DNS tunnel key pair (X25519): made once, then kept in the
/// data directory, so that `dns://` keys already given out keep working.
public enum DNSTunnelIdentity {
    public static let fileName = "dns-tunnel.key"

    public static func loadOrCreate(in directory: DataDirectory) throws -> (keyPair: NoiseKeyPair, created: Bool) {
        if let text = try directory.readSecret(fileName) {
            guard let bytes = Base64.decode(text), let keyPair = try? NoiseKeyPair(privateKey: bytes) else {
                throw DataDirectory.StorageError(description: "\(directory.path)/\(fileName) does not hold a DNS tunnel private key: remove it to make a new one (clients then need the new key)")
            }
            return (keyPair, false)
        }
        let keyPair = NoiseKeyPair.generate()
        try directory.writeSecret(fileName, Base64.encode(keyPair.privateKey, urlSafe: true, padded: false))
        return (keyPair, true)
    }
}
