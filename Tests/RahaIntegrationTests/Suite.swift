import Testing

/// Raha's integration and interop tests: real `raha` processes, Debian's
/// shadowsocks-libev, curl and Python fixtures, over 127.0.0.1 only.
///
/// Serialized (processes and ports would fight on a 2-core machine);
/// nested suites inherit that. Needs `.build/debug/raha` (from
/// `swift build --build-tests`) and `scripts/deps test`.
@Suite("Raha integration", .serialized, .timeLimit(.minutes(2)))
struct RahaIntegration {}
