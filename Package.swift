// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Raha",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "raha", targets: ["raha"]),
        .executable(name: "raha-censor", targets: ["raha-censor"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
    ],
    targets: [
        // Pure wire formats and protocol state machines: bytes in, bytes out, no I/O.
        .target(
            name: "RahaWire",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                "CLibCrypto",
                "CZlib",
            ]
        ),
        // OpenSSL's libcrypto from Debian (libssl-dev): AEAD on ByteBuffer memory in place.
        .systemLibrary(name: "CLibCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        // zlib from Debian (zlib1g-dev): raw DEFLATE for `raha:` bundles.
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // Censor detectors as pure functions (and later the namespace lab).
        .target(name: "RahaLab", dependencies: ["RahaWire"]),
        // Transports: thin SwiftNIO adapters over RahaWire.
        .target(
            name: "RahaTransport",
            dependencies: [
                "RahaWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Local fronts (SOCKS5 + HTTP on one port) and the dialer.
        .target(name: "RahaProxy", dependencies: ["RahaTransport", .product(name: "Crypto", package: "swift-crypto")]),
        // The bridge service: listeners, exit policy, key storage.
        .target(
            name: "RahaBridge",
            dependencies: [
                "RahaTransport",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // HTML to compact readable text with numbered links (the text-only browser's renderer).
        .target(name: "RahaText"),
        // Store-and-forward over mail: SMTP and IMAP clients (pure machines plus thin NIO handlers).
        .target(
            name: "RahaMail",
            dependencies: [
                "RahaWire", "RahaTransport", "RahaText",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                // SQLite through GRDB (Debian's libsqlite3-dev): the courier's durable store.
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        // libqrencode from Debian (libqrencode-dev) for terminal QR codes.
        .systemLibrary(name: "CQREncode", pkgConfig: "libqrencode", providers: [.apt(["libqrencode-dev"])]),
        .target(name: "RahaQR", dependencies: ["CQREncode", "CZlib"]),
        .executableTarget(
            name: "raha",
            dependencies: [
                "RahaProxy", "RahaBridge", "RahaTransport", "RahaLab", "RahaQR", "RahaMail", "RahaText",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // libnetfilter_queue from Debian (libnetfilter-queue-dev): the lab router's
        // userspace verdicts. Only raha-censor links it, not raha.
        .systemLibrary(
            name: "CNetfilterQueue", pkgConfig: "libnetfilter_queue", providers: [.apt(["libnetfilter-queue-dev"])]
        ),
        // The censor lab's router program: an NFQUEUE verdict loop around a RahaLab censor.
        .executableTarget(
            name: "raha-censor",
            dependencies: [
                "RahaLab", "CNetfilterQueue",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Fuzz targets over every parser that reads untrusted bytes (RahaFuzz),
        // and raha-fuzz, their libFuzzer binary (scripts/fuzz builds it with
        // -sanitize=fuzzer,address).
        .target(name: "RahaFuzz", dependencies: ["RahaWire", "RahaText"]),
        .executableTarget(name: "raha-fuzz", dependencies: ["RahaFuzz"]),
        .testTarget(name: "RahaFuzzTests", dependencies: ["RahaFuzz"], exclude: ["Regressions"]),
        .testTarget(name: "RahaWireTests", dependencies: ["RahaWire"]),
        .testTarget(name: "RahaLabTests", dependencies: ["RahaLab", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(name: "RahaQRTests", dependencies: ["RahaQR"]),
        .testTarget(name: "RahaTextTests", dependencies: ["RahaText"], resources: [.copy("Pages")]),
        .testTarget(name: "RahaMailTests", dependencies: ["RahaMail", .product(name: "GRDB", package: "GRDB.swift")]),
        .testTarget(
            name: "RahaTransportTests",
            dependencies: ["RahaTransport", .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl")]
        ),
        .testTarget(
            name: "RahaBridgeTests",
            dependencies: ["RahaBridge", .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl")]
        ),
        .testTarget(
            name: "RahaProxyTests",
            dependencies: ["RahaProxy", .product(name: "NIOEmbedded", package: "swift-nio")]
        ),
        .testTarget(
            name: "RahaIntegrationTests",
            dependencies: ["RahaProxy", "RahaBridge", "RahaMail"],
            exclude: ["Fixtures"]
        ),
    ],
    swiftLanguageModes: [.v5]
)
