import Foundation
import Testing

/// How to run a command in a network namespace of its own (only a loopback
/// interface), so that `raha bridge` with its default listener (all
/// addresses, a random port) is reachable from nowhere. Nil when this
/// machine allows neither an unprivileged (`unshare -rn`) nor a root
/// (`unshare -n`) network namespace.
let isolatedNetwork: [String]? = {
    guard let unshare = try? Paths.tool("unshare", package: "util-linux") else { return nil }
    for flags in [["-rn"], ["-n"]] {
        if let result = try? runCommand("unshare", unshare, flags + ["true"], timeout: 10), result.status == 0 {
            return [unshare] + flags
        }
    }
    return nil
}()

extension RahaIntegration {
    @Suite("CLI")
    struct CLI {
        /// Runs `raha ARGS` to completion (bounded: 20 s hang guard).
        private func raha(_ arguments: [String]) throws -> CommandResult {
            try runCommand("raha \(arguments.first ?? "")", try Paths.rahaBinary(), arguments, timeout: 20)
        }

        private func errorLines(_ result: CommandResult) -> [String] {
            result.output.split(whereSeparator: \.isNewline).map(String.init).filter { $0.hasPrefix("Error:") }
        }

        @Test("raha connect with a garbage key or a bad method or PSK: non-zero exit, one Error: line naming the problem, never the secret")
        func badKeys() throws {
            let secret = "Hunter2Secret\(randomPassword(6))"
            let psk16 = randomPSK(bytes: 16)
            let cases: [(key: String, secret: String, mentions: [String])] = [
                ("ss://garbage", "garbage", ["access key 1", "expected ss://"]),
                ("ss://aes-512-cfb:\(secret)@127.0.0.1:8388", secret, ["access key 1", "unknown Shadowsocks method", "aes-512-cfb"]),
                ("ss://\(Data("rc4-md5:\(secret)".utf8).base64EncodedString())@127.0.0.1:8388#tag", secret,
                 ["access key 1", "unknown Shadowsocks method", "rc4-md5"]),
                (ssURI(method: "2022-blake3-aes-256-gcm", password: psk16, port: 8388), psk16, ["access key 1", "exactly 32 bytes"]),
                ("trojan://\(secret)@127.0.0.1:443?security=none", secret, ["access key 1", "in the clear"]),
                ("trojan://\(secret)@127.0.0.1:443?pin=abcd", secret, ["access key 1", "pin=", "SHA-256"]),
                ("trojan://\(secret)@127.0.0.1:443?type=grpc", secret, ["access key 1", "type=grpc"]),
                ("vmess://\(secret)", secret, ["access key 1", "ss://", "trojan://"]),
            ]
            for (key, secret, mentions) in cases {
                let port = try Ports.free()
                let result = try raha(["connect", key, "--listen", "127.0.0.1:\(port)"])
                #expect(result.status != 0, "raha connect \(key) exited 0: \(result.output)")
                let errors = errorLines(result)
                #expect(errors.count == 1, "raha connect \(key): expected one Error: line, got:\n\(result.output)")
                let line = errors.first ?? ""
                for word in mentions {
                    #expect(line.contains(word), "the error for \(key) does not mention “\(word)”: \(line)")
                }
                if secret != "garbage" {
                    #expect(!result.output.contains(secret), "the error for \(key) shows the secret: \(result.output)")
                    let encoded = secret.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? secret
                    #expect(!result.output.contains(encoded), "the error shows the percent-encoded secret: \(result.output)")
                }
                #expect(!Ports.isAccepting(port), "raha connect listened despite the bad key")
            }
        }

        @Test("raha connect on a port already taken: non-zero exit, one Error: line saying it cannot listen, no crash")
        func portTaken() throws {
            let key = ssURI(method: "aes-128-gcm", password: randomPassword(), port: try Ports.free())
            let (first, port) = try Peers.connect([key])
            defer { first.stop() }
            let second = try raha(["connect", key, "--listen", "127.0.0.1:\(port)", "--no-memory"])
            #expect(second.status != 0)
            #expect(errorLines(second).count == 1 && errorLines(second).first?.contains("cannot listen on 127.0.0.1:\(port)") == true, "\(second.output)")
            #expect(!second.output.contains("Fatal error") && !second.output.contains("crashed"), "\(second.output)")
        }

        @Test("raha key new --host 192.0.2.1 --no-qr prints one key that raha connect accepts; a key from key new works end to end")
        func keyNew() throws {
            let result = try raha(["key", "new", "--host", "192.0.2.1", "--no-qr"])
            #expect(result.status == 0, "\(result.output)")
            let lines = result.stdoutText.split(whereSeparator: \.isNewline).map(String.init)
            #expect(lines.count == 1, "--no-qr printed more than the key: \(result.stdoutText)")
            let key = try #require(lines.first)
            #expect(key.hasPrefix("ss://") && key.contains("@192.0.2.1:"), "not a key for 192.0.2.1: \(key)")
            // Accepted. (Given with 127.0.0.1 in place of 192.0.2.1: raha connect probes its keys at once.)
            let running = Processes()
            defer { running.stopAll() }
            let (connect, _) = try Peers.connect([key.replacingOccurrences(of: "@192.0.2.1:", with: "@127.0.0.1:")])
            running.add(connect)
            #expect(connect.output.contains("through 1 access key"))
            connect.stop()

            // A key made by `key new` for 127.0.0.1 serves as a bridge listener and a client key.
            let port = try Ports.free()
            let made = try raha(["key", "new", "--host", "127.0.0.1", "--port", String(port), "--method", "2022-blake3-chacha20-poly1305", "--no-qr"])
            let listener = made.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(made.status == 0 && listener.hasPrefix("ss://"), "\(made.output)")
            let (bridge, keys) = try Peers.bridge([listener])
            running.add(bridge)
            let (client, proxyPort) = try Peers.connect([try #require(keys.first)])
            running.add(client)
            try expectFetchesBoth(["--socks5-hostname", "127.0.0.1:\(proxyPort)"], via: "a key from raha key new", processes: [bridge, client])
        }

        @Test("raha key new --transport trojan prints a key raha connect accepts; raha bridge refuses --cert without --key and a key file others can read")
        func trojanKeysAndCertificates() throws {
            let made = try raha(["key", "new", "--transport", "trojan", "--host", "bridge.example.org", "--port", "443", "--ws", "--no-qr"])
            #expect(made.status == 0, "\(made.output)")
            let key = made.stdoutText.split(whereSeparator: \.isNewline).map(String.init).first { $0.hasPrefix("trojan://") } ?? ""
            #expect(key.contains("@bridge.example.org:443") && key.contains("type=ws") && key.contains("path=/"), "key new printed “\(key)”")

            let alone = try raha(["bridge", "trojan://pw@127.0.0.1:443?sni=a.test", "--cert", "/nonexistent.pem"])
            #expect(alone.status != 0 && alone.output.contains("--cert and --key go together"), "\(alone.output)")

            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("raha-cli-cert-\(getpid())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let certificate = try TestCertificate.make(for: "a.test")
            let readable = directory.appendingPathComponent("key.pem").path
            try FileManager.default.copyItem(atPath: certificate.keyFile, toPath: readable)
            try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: readable)
            let refused = try raha(["bridge", "trojan://pw@127.0.0.1:\(try Ports.free())?sni=a.test", "--cert", certificate.certificateFile,
                                    "--key", readable, "--data", directory.path, "--no-qr"])
            let errors = errorLines(refused)
            #expect(refused.status != 0 && errors.count == 1 && (errors.first ?? "").contains("chmod 600"), "\(refused.output)")
        }

        @Test("raha bridge --data DIR: makes DIR/shadowsocks.key (mode 0600), prints the same key next time, refuses it once world-readable",
              .enabled(if: isolatedNetwork != nil, "needs a network namespace (unshare -rn or root) so the default all-address listener is reachable from nowhere"))
        func defaultKeyStore() throws {
            let wrapper = try #require(isolatedNetwork)
            let directory = try Paths.temporaryDirectory("data")
            defer { try? FileManager.default.removeItem(at: directory) }
            let data = directory.appendingPathComponent("raha") // not there yet: the bridge makes it
            let keyFile = data.appendingPathComponent("shadowsocks.key").path
            let arguments = Array(wrapper.dropFirst()) + [try Paths.rahaBinary(), "bridge", "--data", data.path, "--host", "127.0.0.1", "--no-qr"]

            func start() throws -> (output: String, key: String) {
                let bridge = try ManagedProcess("raha bridge (isolated)", wrapper[0], arguments)
                defer { bridge.stop() }
                let key = try bridge.waitForLine(startingWith: "ss://")
                return (bridge.output, key)
            }

            let first = try start()
            #expect(first.output.contains("Made a new bridge key in \(data.path)/shadowsocks.key"), "\(first.output)")
            let attributes = try FileManager.default.attributesOfItem(atPath: keyFile)
            let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
            #expect(mode == 0o600, "the key file has mode \(String(mode, radix: 8)), expected 600")
            let stored = try String(contentsOfFile: keyFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(stored.hasPrefix("ss://"), "the key file holds “\(stored)”")
            // The printed key is the stored one, with the advertised host in place of 0.0.0.0.
            let storedSecret = stored.split(separator: "@").first, printedSecret = first.key.split(separator: "@").first
            #expect(storedSecret != nil && storedSecret == printedSecret, "printed \(first.key) but stored \(stored)")

            let second = try start()
            #expect(second.key == first.key, "the second start printed another key")
            #expect(!second.output.contains("Made a new bridge key"), "the second start made a new key: \(second.output)")
            #expect(try String(contentsOfFile: keyFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) == stored)

            #expect(chmod(keyFile, 0o644) == 0)
            let refused = try runCommand("raha bridge (isolated)", wrapper[0], arguments, timeout: 20)
            #expect(refused.status != 0, "a world-readable key file was used: \(refused.output)")
            let errors = errorLines(refused)
            #expect(errors.count == 1 && errors[0].contains("chmod"), "expected one Error: line mentioning chmod, got:\n\(refused.output)")
            #expect(!refused.output.contains(String(storedSecret ?? "")), "the refusal shows the key: \(refused.output)")
        }
    }
}
