import Foundation

/// Debian's nginx on 127.0.0.1, one instance per call, each with its own
/// prefix directory (config, pid file, error and access logs, temp paths,
/// site files), run in the foreground as a single process
/// (`nginx -c CONF -p PREFIX -e stderr` with `daemon off; master_process off;`)
/// so that a ManagedProcess owns all of it: `stop()` (SIGTERM) ends it, and
/// there are no worker children to outlive it. Single-process mode never
/// switches user, so it runs the same as root or not and reads its own files.
final class Nginx: @unchecked Sendable {
    /// The page the site serves at `/`: distinctive, so a test can tell it from anything else.
    static let indexPage = """
        <!DOCTYPE html>
        <html><head><title>Raha test site</title></head>
        <body><h1>A quiet little web site</h1><p>raha-nginx-site-5c1e9a</p></body></html>

        """
    /// What the CDN front serves at `/` (any path but its proxied one).
    static let frontPage = """
        <!DOCTYPE html>
        <html><head><title>Raha test CDN</title></head>
        <body><p>raha-nginx-cdn-front-0b7d42</p></body></html>

        """

    let process: ManagedProcess
    let port: UInt16
    let prefix: URL

    private init(process: ManagedProcess, port: UInt16, prefix: URL) {
        self.process = process
        self.port = port
        self.prefix = prefix
    }

    deinit { process.stop() }

    func stop() { process.stop() }

    /// nginx's error log file (for failure messages).
    var errorLog: String {
        (try? String(contentsOf: prefix.appendingPathComponent("error.log"), encoding: .utf8)) ?? ""
    }

    /// A plain HTTP web site on 127.0.0.1 (a free port), or on `host:port` in a
    /// network namespace: `indexPage` at `/` (and `/index.html`), nginx's own 404
    /// page for every other path, and nginx's own 400 page for anything that is not HTTP.
    static func website(host: String = "127.0.0.1", port: UInt16? = nil, namespace: String? = nil) throws -> Nginx {
        try start("nginx (web site)", page: indexPage, port: port, namespace: namespace) { prefix, port in
            """
            server {
                listen \(host):\(port);
                root \(prefix)/html;
                index index.html;
                location / { try_files $uri $uri/ =404; }
            }
            """
        }
    }

    /// The same site over HTTPS with `certificate`: an ordinary nginx HTTPS server,
    /// as a censor's reference for what a web server on a TLS port does.
    static func httpsWebsite(certificate: TestCertificate, host: String = "127.0.0.1", port: UInt16? = nil,
                             namespace: String? = nil) throws -> Nginx {
        try start("nginx (HTTPS web site)", page: indexPage, port: port, namespace: namespace) { prefix, port in
            """
            server {
                listen \(host):\(port) ssl;
                server_name \(certificate.name);
                ssl_certificate \(certificate.certificateFile);
                ssl_certificate_key \(certificate.keyFile);
                root \(prefix)/html;
                index index.html;
                location / { try_files $uri $uri/ =404; }
            }
            """
        }
    }

    /// A TLS "CDN front" on 127.0.0.1 (a free port) with `certificate`:
    /// `location PATH` is proxied, WebSocket upgrades included, to
    /// http://127.0.0.1:backendPort with the client's Host; every other path
    /// is a small static site (`frontPage` at `/`). No `http2` on the
    /// listener, so it speaks HTTP/1.1 whatever ALPN the client offers.
    static func cdnFront(certificate: TestCertificate, path: String, backendPort: UInt16) throws -> Nginx {
        try start("nginx (CDN front)", page: frontPage, port: nil, namespace: nil) { prefix, port in
            """
            server {
                listen 127.0.0.1:\(port) ssl;
                server_name \(certificate.name);
                ssl_certificate \(certificate.certificateFile);
                ssl_certificate_key \(certificate.keyFile);
                root \(prefix)/html;
                index index.html;
                location / { try_files $uri $uri/ =404; }
                location \(path) {
                    proxy_pass http://127.0.0.1:\(backendPort);
                    proxy_http_version 1.1;
                    proxy_set_header Upgrade $http_upgrade;
                    proxy_set_header Connection "upgrade";
                    proxy_set_header Host $host;
                    proxy_read_timeout 300s;
                }
            }
            """
        }
    }

    /// Makes the prefix (html/index.html, tmp/), writes nginx.conf around
    /// `server(prefix, port)`, checks it with `nginx -t`, starts nginx (in
    /// `namespace` if given) and waits until it listens: until the port accepts
    /// on loopback, or, in a namespace, until nginx has written its pid file,
    /// which it does only after opening its listening sockets.
    private static func start(_ name: String, page: String, port: UInt16?, namespace: String?,
                              server: (String, UInt16) -> String) throws -> Nginx {
        let nginx = try Paths.tool("nginx", package: "nginx")
        let prefix = try Paths.temporaryDirectory("nginx")
        ProcessRegistry.shared.removeAtExit(prefix.path)
        let html = prefix.appendingPathComponent("html")
        try FileManager.default.createDirectory(at: html, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: prefix.appendingPathComponent("tmp"), withIntermediateDirectories: true)
        try Data(page.utf8).write(to: html.appendingPathComponent("index.html"))
        let port = try port ?? Ports.free()
        let p = prefix.path
        let config = """
            daemon off;
            master_process off;
            worker_processes 1;
            pid \(p)/nginx.pid;
            error_log \(p)/error.log info;
            error_log stderr warn;
            events { worker_connections 512; }
            http {
                access_log \(p)/access.log;
                client_body_temp_path \(p)/tmp/body;
                proxy_temp_path \(p)/tmp/proxy;
                fastcgi_temp_path \(p)/tmp/fastcgi;
                uwsgi_temp_path \(p)/tmp/uwsgi;
                scgi_temp_path \(p)/tmp/scgi;
                types { text/html html; text/plain txt; }
                default_type application/octet-stream;
            \(server(p, port))
            }

            """
        let file = prefix.appendingPathComponent("nginx.conf")
        try Data(config.utf8).write(to: file)
        let arguments = ["-c", file.path, "-p", p + "/", "-e", "stderr"]
        // `nginx -t` binds the listening address too, so it runs where nginx will.
        let (checker, checkArguments) = try Paths.command(nginx, ["-t"] + arguments, in: namespace)
        let check = try runCommand("nginx -t", checker, checkArguments)
        guard check.status == 0 else {
            throw TestFailure("nginx -t rejects the test config (status \(check.status)):\n\(check.output)\nConfig:\n\(config)")
        }
        let (executable, fullArguments) = try Paths.command(nginx, arguments, in: namespace)
        let process = try ManagedProcess(name, executable, fullArguments)
        if namespace == nil {
            try Ports.waitUntilAccepting(port, process: process)
        } else {
            let pidFile = prefix.appendingPathComponent("nginx.pid").path
            let deadline = Date().addingTimeInterval(ManagedProcess.hangGuard)
            while !FileManager.default.fileExists(atPath: pidFile) {
                guard Date() < deadline, process.isRunning else {
                    throw TestFailure("nginx did not start listening in \(namespace!):\n\(process.output)")
                }
                usleep(20_000)
            }
        }
        return Nginx(process: process, port: port, prefix: prefix)
    }
}
