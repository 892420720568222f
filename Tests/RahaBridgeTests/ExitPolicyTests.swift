import NIOCore
import NIOPosix
import Testing
@testable import RahaBridge
@testable import RahaWire

@Suite struct ExitPolicyTests {
    let policy = ExitPolicy()

    func allows(_ ip: String) throws -> Bool {
        try policy.allows(SocketAddress(ipAddress: ip, port: 80))
    }

    @Test(arguments: [
        "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
        "169.254.169.254", "100.64.0.1", "0.0.0.0", "0.1.2.3", "224.0.0.1", "255.255.255.255", "198.18.0.1",
        "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "fec0::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1", "64:ff9b::a00:1",
        // IPv4 carried in other IPv6 forms: translated, 6to4, local NAT64; Teredo; discard; documentation.
        "::ffff:0:7f00:1", "::ffff:0:c0a8:101", "2002:7f00:1::1", "2002:a00:1::", "2002:c0a8:101::1", "64:ff9b:1::a00:1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2", "100::1", "2001:db8::1", "192.0.2.1", "198.51.100.7", "203.0.113.9",
    ])
    func refusesPrivateLoopbackLinkLocalAndTheirMappedForms(ip: String) throws {
        #expect(try !allows(ip), "\(ip) must be refused")
        #expect(try ExitPolicy(allowPrivate: true).allows(SocketAddress(ipAddress: ip, port: 80)))
    }

    @Test(arguments: ["1.1.1.1", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:1.1.1.1", "64:ff9b::808:808",
                            "::ffff:0:808:808", "2002:808:808::1", "2001:4860:4860::8888"])
    func allowsPublicAddresses(ip: String) throws {
        #expect(try allows(ip), "\(ip) is public")
    }

    @Test func resolvedNamesAreJudgedByTheirAddresses() throws {
        // A name that resolves to loopback (DNS rebinding) gets no exit.
        let exit = Exit(policy: policy, threadPool: .singleton)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let addresses = try exit.resolve(Endpoint(host: .domain("localhost"), port: 80), on: loop).wait()
        #expect(!addresses.isEmpty)
        #expect(addresses.allSatisfy { !policy.allows($0) })
        // Address literals sent as names (curl --socks5-hostname does this) need no lookup.
        let literal = try exit.resolve(Endpoint(host: .domain("10.0.0.1"), port: 80), on: loop).wait()
        #expect(literal.count == 1 && !policy.allows(literal[0]))
    }
}
