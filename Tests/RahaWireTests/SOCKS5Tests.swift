import NIOCore
import Testing
@testable import RahaWire


private func bytes(_ buffer: ByteBuffer) -> [UInt8] { Array(buffer.readableBytesView) }

/// Checks a stream parser on one message: every proper prefix gives nil with
/// the reader index restored, the whole message plus a trailing byte gives
/// the value and leaves exactly the trailing byte.
private func checkIncremental<T: Equatable>(_ encoded: [UInt8], expect value: T,
                                            _ read: (inout ByteBuffer) throws -> T?,
                                            sourceLocation: SourceLocation = #_sourceLocation) throws {
    for cut in 0..<encoded.count {
        var partial = ByteBuffer(bytes: encoded[..<cut])
        #expect(try read(&partial) == nil, "prefix of \(cut) bytes", sourceLocation: sourceLocation)
        #expect(partial.readableBytes == cut, "reader index restored after \(cut) bytes", sourceLocation: sourceLocation)
    }
    var whole = ByteBuffer(bytes: encoded + [0xAB])
    #expect(try read(&whole) == value, sourceLocation: sourceLocation)
    #expect(bytes(whole) == [0xAB], sourceLocation: sourceLocation)
}

private let example443 = Endpoint(host: .domain("example.com"), port: 443)
private let example443Bytes: [UInt8] = [3, 11] + Array("example.com".utf8) + [0x01, 0xBB]

@Suite struct SOCKS5CodecTests {
    @Test func constantTimeEqualsComparesWholeArrays() {
        #expect(constantTimeEquals([], []))
        #expect(constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2]))
        #expect(!constantTimeEquals([1, 2], [1, 2, 3]))
        #expect(!constantTimeEquals([], [0]))
        // A longer array padded with zeros must not compare equal to its prefix.
        #expect(!constantTimeEquals([7, 0], [7]))
        #expect(!constantTimeEquals([0x80], [0x00]))
    }

    @Test func greetingRoundTripAndSplits() throws {
        let greeting = SOCKS5Greeting(methods: [.noAuthentication, .usernamePassword])
        var out = ByteBuffer()
        #expect(greeting.write(to: &out) == 4)
        #expect(bytes(out) == [5, 2, 0, 2])
        try checkIncremental([5, 2, 0, 2], expect: greeting) { try SOCKS5Greeting.read(from: &$0) }
        try checkIncremental([5, 0], expect: SOCKS5Greeting(methods: [])) { try SOCKS5Greeting.read(from: &$0) }
        var bad = ByteBuffer(bytes: [4, 1, 0])
        #expect(throws: WireError.self) { try SOCKS5Greeting.read(from: &bad) }
        #expect(bad.readableBytes == 3)
    }

    @Test func methodSelectionRoundTrip() throws {
        var out = ByteBuffer()
        SOCKS5MethodSelection(method: .noAcceptableMethods).write(to: &out)
        #expect(bytes(out) == [5, 0xFF])
        try checkIncremental([5, 2], expect: SOCKS5MethodSelection(method: .usernamePassword)) {
            try SOCKS5MethodSelection.read(from: &$0)
        }
        var bad = ByteBuffer(bytes: [1, 0])
        #expect(throws: WireError.self) { try SOCKS5MethodSelection.read(from: &bad) }
    }

    @Test func usernamePasswordRoundTrip() throws {
        let request = try SOCKS5UsernamePasswordRequest(username: "user", password: "pässword")
        var out = ByteBuffer()
        #expect(request.write(to: &out) == 3 + 4 + 9)
        let expected: [UInt8] = [1, 4] + Array("user".utf8) + [9] + Array("pässword".utf8)
        #expect(bytes(out) == expected)
        try checkIncremental(expected, expect: request) { try SOCKS5UsernamePasswordRequest.read(from: &$0) }
        var badVersion = ByteBuffer(bytes: [5, 1, 0x61, 1, 0x62])
        #expect(throws: WireError.self) { try SOCKS5UsernamePasswordRequest.read(from: &badVersion) }
        let tooLong = String(repeating: "x", count: 256)
        #expect(throws: WireError.self) { try SOCKS5UsernamePasswordRequest(username: tooLong, password: "p") }

        var status = ByteBuffer()
        SOCKS5UsernamePasswordStatus.failure.write(to: &status)
        #expect(bytes(status) == [1, 1])
        try checkIncremental([1, 0], expect: SOCKS5UsernamePasswordStatus.success) {
            try SOCKS5UsernamePasswordStatus.read(from: &$0)
        }
        #expect(SOCKS5UsernamePasswordStatus.success.succeeded)
        #expect(!SOCKS5UsernamePasswordStatus(status: 0x42).succeeded)
    }

    @Test func requestRoundTripForEachAddressType() throws {
        let cases: [(SOCKS5Request, [UInt8])] = [
            (SOCKS5Request(command: .connect, destination: example443), [5, 1, 0] + example443Bytes),
            (SOCKS5Request(command: .udpAssociate, destination: Endpoint(host: .ipv4([0, 0, 0, 0]), port: 0)),
             [5, 3, 0, 1, 0, 0, 0, 0, 0, 0]),
            (SOCKS5Request(command: .connect, destination: Endpoint(host: .ipv6([0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1]), port: 80)),
             [5, 1, 0, 4, 0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1, 0, 80]),
        ]
        for (request, encoded) in cases {
            var out = ByteBuffer()
            #expect(request.write(to: &out) == encoded.count)
            #expect(bytes(out) == encoded)
            try checkIncremental(encoded, expect: request) { try SOCKS5Request.read(from: &$0) }
        }
        var unknownType = ByteBuffer(bytes: [5, 1, 0, 9, 1, 2])
        #expect { try SOCKS5Request.read(from: &unknownType) } throws: { ($0 as? WireError)?.code == .unsupported }
        var emptyDomain = ByteBuffer(bytes: [5, 1, 0, 3, 0, 0, 80])
        #expect { try SOCKS5Request.read(from: &emptyDomain) } throws: { ($0 as? WireError)?.code == .malformed }
    }

    @Test func responseRoundTrip() throws {
        let response = SOCKS5Response(reply: .succeeded, bound: Endpoint(host: .ipv4([127, 0, 0, 1]), port: 1080))
        let encoded: [UInt8] = [5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0x38]
        var out = ByteBuffer()
        response.write(to: &out)
        #expect(bytes(out) == encoded)
        try checkIncremental(encoded, expect: response) { try SOCKS5Response.read(from: &$0) }
        var badCode = ByteBuffer(bytes: [5, 9, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(throws: WireError.self) { try SOCKS5Response.read(from: &badCode) }
        #expect(SOCKS5Reply.allCases.map(\.rawValue) == Array(0...8))
    }

    @Test func udpDatagramParseAndWrite() throws {
        let encoded: [UInt8] = [0, 0, 0] + example443Bytes + Array("hello".utf8)
        let datagram = try SOCKS5UDPDatagram.parse(ByteBuffer(bytes: encoded))
        #expect(datagram.fragment == 0)
        #expect(!datagram.isFragment)
        #expect(datagram.destination == example443)
        #expect(bytes(datagram.payload) == Array("hello".utf8))
        var out = ByteBuffer()
        #expect(datagram.write(to: &out) == encoded.count)
        #expect(bytes(out) == encoded)

        let fragment = try SOCKS5UDPDatagram.parse(ByteBuffer(bytes: [0, 0, 1, 1, 10, 0, 0, 1, 0, 53]))
        #expect(fragment.isFragment)
        #expect(fragment.fragment == 1)
        #expect(fragment.destination == Endpoint(host: .ipv4([10, 0, 0, 1]), port: 53))
        #expect(fragment.payload.readableBytes == 0)

        // A datagram is whole: every cut inside the header is malformed; a
        // cut after it is a shorter payload.
        let headerLength = 3 + example443Bytes.count
        for cut in 0..<headerLength {
            #expect(throws: WireError.self) { try SOCKS5UDPDatagram.parse(ByteBuffer(bytes: encoded[..<cut])) }
        }
        for cut in headerLength...encoded.count {
            let parsed = try SOCKS5UDPDatagram.parse(ByteBuffer(bytes: encoded[..<cut]))
            #expect(parsed.payload.readableBytes == cut - headerLength)
        }
        #expect { try SOCKS5UDPDatagram.parse(ByteBuffer(bytes: [0, 0, 0, 7, 1, 2, 3])) } throws: {
            ($0 as? WireError)?.code == .unsupported
        }
    }

    @Test func parsersSurviveGarbage() {
        var rng = SeededGenerator(seed: 0x5150_C55)
        for _ in 0..<3000 {
            let length = Int.random(in: 0..<40, using: &rng)
            var garbage = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Bias half the inputs towards valid-looking headers to reach deeper code.
            if length > 1 && Bool.random(using: &rng) { garbage[0] = 5 }
            if length > 3 && Bool.random(using: &rng) { garbage[3] = [1, 3, 4].randomElement(using: &rng)! }
            let readers: [(inout ByteBuffer) throws -> Bool] = [
                { try SOCKS5Greeting.read(from: &$0) != nil },
                { try SOCKS5MethodSelection.read(from: &$0) != nil },
                { try SOCKS5UsernamePasswordRequest.read(from: &$0) != nil },
                { try SOCKS5UsernamePasswordStatus.read(from: &$0) != nil },
                { try SOCKS5Request.read(from: &$0) != nil },
                { try SOCKS5Response.read(from: &$0) != nil },
            ]
            for read in readers {
                var buffer = ByteBuffer(bytes: garbage)
                do {
                    let complete = try read(&buffer)
                    if !complete { #expect(buffer.readableBytes == length) }
                    #expect(buffer.readableBytes <= length)
                } catch {
                    #expect(error is WireError)
                }
            }
            do {
                _ = try SOCKS5UDPDatagram.parse(ByteBuffer(bytes: garbage))
            } catch {
                #expect(error is WireError)
            }
        }
    }
}

// MARK: - State machine

/// Feeds `input` to the machine (whole or one byte at a time) and records the
/// actions other than `.needMoreData`, acting on `.send` by calling again.
private func drive(_ machine: inout SOCKS5ServerStateMachine, _ input: [UInt8], byteByByte: Bool)
    -> (actions: [SOCKS5ServerAction], leftover: [UInt8]) {
    var buffer = ByteBuffer()
    var actions: [SOCKS5ServerAction] = []
    let pieces: [[UInt8]] = byteByByte ? input.map { [$0] } : [input]
    outer: for piece in pieces {
        buffer.writeBytes(piece)
        while true {
            let action = machine.receive(&buffer)
            switch action {
            case .needMoreData:
                continue outer
            case .send:
                actions.append(action)
            case .connect, .udpAssociate, .fail:
                // A final action: the rest of the input is not fed.
                actions.append(action)
                break outer
            }
        }
    }
    return (actions, bytes(buffer))
}

private func fail(_ reply: [UInt8]?) -> (SOCKS5ServerAction) -> Bool {
    return { action in
        guard case .fail(let r, _) = action else { return false }
        return r.map(bytes) == reply
    }
}

private func send(_ b: [UInt8]) -> SOCKS5ServerAction { .send(ByteBuffer(bytes: b)) }

@Suite struct SOCKS5ServerStateMachineTests {
    static let connectDomain: [UInt8] = [5, 1, 0] + example443Bytes
    static let credentials = ProxyCredentials(username: "alice", password: "s3cret")
    static let goodAuth: [UInt8] = [1, 5] + Array("alice".utf8) + [6] + Array("s3cret".utf8)

    @Test func connectWithoutAuthenticationWholeAndByteByByte() {
        let input: [UInt8] = [5, 1, 0] + Self.connectDomain
        for byteByByte in [false, true] {
            var machine = SOCKS5ServerStateMachine()
            let (actions, leftover) = drive(&machine, input, byteByByte: byteByByte)
            #expect(actions == [send([5, 0]), .connect(example443)])
            #expect(leftover.isEmpty)
            #expect(machine.request == SOCKS5Request(command: .connect, destination: example443))
            #expect(!machine.isFailed)
        }
    }

    @Test func earlyPayloadStaysInTheBuffer() {
        var machine = SOCKS5ServerStateMachine()
        var buffer = ByteBuffer(bytes: [5, 2, 2, 0] + Self.connectDomain + Array("GET / HTTP/1.1\r\n".utf8))
        #expect(machine.receive(&buffer) == send([5, 0]))
        #expect(machine.receive(&buffer) == .connect(example443))
        #expect(bytes(buffer) == Array("GET / HTTP/1.1\r\n".utf8))
    }

    @Test func needMoreDataConsumesNothing() {
        var machine = SOCKS5ServerStateMachine()
        var buffer = ByteBuffer(bytes: [5, 2, 0])
        #expect(machine.receive(&buffer) == .needMoreData)
        #expect(buffer.readableBytes == 3)
        buffer.writeBytes([2])
        #expect(machine.receive(&buffer) == send([5, 0]))
        #expect(buffer.readableBytes == 0)
        buffer.writeBytes(Self.connectDomain.dropLast())
        #expect(machine.receive(&buffer) == .needMoreData)
        #expect(buffer.readableBytes == Self.connectDomain.count - 1)
    }

    @Test func udpAssociate() {
        for byteByByte in [false, true] {
            var machine = SOCKS5ServerStateMachine()
            let (actions, _) = drive(&machine, [5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0], byteByByte: byteByByte)
            #expect(actions == [send([5, 0]), .udpAssociate(Endpoint(host: .ipv4([0, 0, 0, 0]), port: 0))])
        }
    }

    @Test func replyBytes() {
        let machine = SOCKS5ServerStateMachine()
        #expect(bytes(machine.reply(.succeeded, bound: Endpoint(host: .ipv4([127, 0, 0, 1]), port: 1080)))
            == [5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0x38])
        #expect(bytes(machine.reply(.hostUnreachable, bound: SOCKS5.unspecifiedAddress)) == [5, 4, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(bytes(machine.reply(.connectionRefused, bound: Endpoint(host: .ipv6(Array(repeating: 0, count: 15) + [1]), port: 1)))
            == [5, 5, 0, 4] + Array(repeating: 0, count: 15) + [1, 0, 1])
    }

    @Test func noAcceptableMethod() {
        for byteByByte in [false, true] {
            // No authentication configured, client offers only username/password.
            var machine = SOCKS5ServerStateMachine()
            let (actions, _) = drive(&machine, [5, 1, 2] + Self.goodAuth, byteByByte: byteByByte)
            #expect(actions.count == 1)
            #expect(fail([5, 0xFF])(actions[0]))
            #expect(machine.isFailed)
            // Credentials configured, client offers only no-auth.
            var strict = SOCKS5ServerStateMachine(credentials: Self.credentials)
            let (strictActions, _) = drive(&strict, [5, 1, 0] + Self.connectDomain, byteByByte: byteByByte)
            #expect(strictActions.count == 1)
            #expect(fail([5, 0xFF])(strictActions[0]))
        }
        var zeroMethods = SOCKS5ServerStateMachine()
        var buffer = ByteBuffer(bytes: [5, 0])
        #expect(fail([5, 0xFF])(zeroMethods.receive(&buffer)))
    }

    @Test func credentialsAccepted() {
        for byteByByte in [false, true] {
            var machine = SOCKS5ServerStateMachine(credentials: Self.credentials)
            #expect(machine.requiredMethod == .usernamePassword)
            let (actions, _) = drive(&machine, [5, 2, 0, 2] + Self.goodAuth + Self.connectDomain, byteByByte: byteByByte)
            #expect(actions == [send([5, 2]), send([1, 0]), .connect(example443)])
        }
    }

    @Test func credentialsRejected() throws {
        let wrong: [[UInt8]] = [
            [1, 5] + Array("alice".utf8) + [6] + Array("s3creT".utf8),   // password differs in last byte
            [1, 5] + Array("alicf".utf8) + [6] + Array("s3cret".utf8),   // username differs
            [1, 5] + Array("alice".utf8) + [5] + Array("s3cre".utf8),    // password is a prefix
            [1, 6] + Array("alice!".utf8) + [6] + Array("s3cret".utf8),  // username longer
            [1, 0, 0],                                                   // empty both
        ]
        for attempt in wrong {
            for byteByByte in [false, true] {
                var machine = SOCKS5ServerStateMachine(credentials: Self.credentials)
                let (actions, _) = drive(&machine, [5, 1, 2] + attempt + Self.connectDomain, byteByByte: byteByByte)
                #expect(actions.count == 2)
                #expect(actions.first == send([5, 2]))
                #expect(fail([1, 1])(actions[1]))
                if case .fail(_, let reason) = actions[1] { #expect(reason.code == .authentication) }
                // Bytes after failure keep it failed, with no second reply.
                var more = ByteBuffer(bytes: Self.connectDomain)
                #expect(fail(nil)(machine.receive(&more)))
                #expect(machine.isFailed)
            }
        }
        // Wrong sub-negotiation version: no status, just close.
        var machine = SOCKS5ServerStateMachine(credentials: Self.credentials)
        var buffer = ByteBuffer(bytes: [5, 1, 2, 5, 1, 0x61, 1, 0x62])
        #expect(machine.receive(&buffer) == send([5, 2]))
        #expect(fail(nil)(machine.receive(&buffer)))
    }

    @Test func bindAndUnknownCommandsAreRefused() {
        for command: UInt8 in [2, 0, 4, 0xFF] {
            for byteByByte in [false, true] {
                var machine = SOCKS5ServerStateMachine()
                let (actions, _) = drive(&machine, [5, 1, 0, 5, command, 0] + example443Bytes, byteByByte: byteByByte)
                #expect(actions.count == 2)
                #expect(fail([5, 7, 0, 1, 0, 0, 0, 0, 0, 0])(actions[1]))
            }
        }
    }

    @Test func unknownAddressTypeIsRefused() {
        for byteByByte in [false, true] {
            var machine = SOCKS5ServerStateMachine()
            let (actions, _) = drive(&machine, [5, 1, 0, 5, 1, 0, 2, 1, 2, 3, 4, 0, 80], byteByByte: byteByByte)
            #expect(actions.count == 2)
            #expect(fail([5, 8, 0, 1, 0, 0, 0, 0, 0, 0])(actions[1]))
        }
        // A zero-length domain is a malformed request: general failure.
        var machine = SOCKS5ServerStateMachine()
        var buffer = ByteBuffer(bytes: [5, 1, 0, 5, 1, 0, 3, 0, 0, 80])
        #expect(machine.receive(&buffer) == send([5, 0]))
        #expect(fail([5, 1, 0, 1, 0, 0, 0, 0, 0, 0])(machine.receive(&buffer)))
    }

    @Test func wrongVersionFailsWithoutReply() {
        // SOCKS4 greeting.
        var machine = SOCKS5ServerStateMachine()
        var buffer = ByteBuffer(bytes: [4, 1, 0, 80, 1, 2, 3, 4, 0])
        #expect(fail(nil)(machine.receive(&buffer)))
        #expect(fail(nil)(machine.receive(&buffer)))
        // Good greeting, then a request with version 4.
        var second = SOCKS5ServerStateMachine()
        var input = ByteBuffer(bytes: [5, 1, 0, 4, 1, 0] + example443Bytes)
        #expect(second.receive(&input) == send([5, 0]))
        #expect(fail(nil)(second.receive(&input)))
        // An HTTP request on the SOCKS path.
        var http = SOCKS5ServerStateMachine()
        var get = ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n")
        #expect(fail(nil)(http.receive(&get)))
    }

    @Test func receiveAfterCompletionFails() {
        var machine = SOCKS5ServerStateMachine()
        var buffer = ByteBuffer(bytes: [5, 1, 0] + Self.connectDomain)
        #expect(machine.receive(&buffer) == send([5, 0]))
        #expect(machine.receive(&buffer) == .connect(example443))
        buffer.writeBytes([1, 2, 3])
        #expect(fail(nil)(machine.receive(&buffer)))
        #expect(machine.isFailed)
    }

    @Test func garbageNeverCrashesAndFailureIsTerminal() {
        var rng = SeededGenerator(seed: 1928)
        var outcomes: [String: Int] = [:]
        for round in 0..<2000 {
            let length = Int.random(in: 0..<48, using: &rng)
            var input = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Steer some inputs past the first checks.
            if length > 0 && round % 2 == 0 { input[0] = 5 }
            if length > 2 && round % 4 == 0 { input[1] = 1; input[2] = 0 }
            if length > 3 && round % 8 == 0 { input[3] = 5 }
            let credentials: ProxyCredentials? = round % 3 == 0 ? Self.credentials : nil
            for byteByByte in [false, true] {
                var machine = SOCKS5ServerStateMachine(credentials: credentials)
                let (actions, _) = drive(&machine, input, byteByByte: byteByByte)
                if let last = actions.last, case .fail = last {
                    outcomes["fail", default: 0] += 1
                    var more = ByteBuffer(bytes: [5, 1, 0])
                    #expect(fail(nil)(machine.receive(&more)))
                    #expect(machine.isFailed)
                } else if let last = actions.last, case .connect = last {
                    outcomes["connect", default: 0] += 1
                } else {
                    outcomes["other", default: 0] += 1
                    #expect(!machine.isFailed)
                }
            }
        }
        #expect(outcomes["fail", default: 0] > 1000)
    }
}
