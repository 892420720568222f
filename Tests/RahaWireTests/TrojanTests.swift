import NIOCore
import Testing
@testable import RahaWire

@Suite struct TrojanTests {
    let example = Endpoint(host: .domain("example.com"), port: 443)

    /// Made with Python's hashlib: hex(sha224("raha-trojan")), CRLF, CONNECT
    /// example.com:443, CRLF, then "GET / HTTP/1.1\r\n" as payload.
    let knownHeader = hex("34333535663432383731353735306239316636643763663330333365373264386636336164623366333733363661333930643537386239300d0a01030b6578616d706c652e636f6d01bb0d0a474554202f20485454502f312e310d0a")

    @Test func passwordHashIsHexSHA224() {
        #expect(String(decoding: Trojan.passwordHash("abc"), as: UTF8.self) == "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7")
        #expect(String(decoding: Trojan.passwordHash("password"), as: UTF8.self) == "d63dc919e201d7bc4c825630d2cf25fdc93d4b2f0d46706d29038d01")
        #expect(Trojan.passwordHash("").count == Trojan.hashLength)
    }

    @Test func writesTheDocumentedHeader() {
        var out = ByteBuffer()
        Trojan.writeHeader(passwordHash: Trojan.passwordHash("raha-trojan"),
                           request: .init(command: .connect, destination: example),
                           payload: ByteBuffer(string: "GET / HTTP/1.1\r\n").readableBytesView, to: &out)
        #expect(Array(out.readableBytesView) == knownHeader)
    }

    @Test func readsTheHeaderWholeAndSplitAtEveryByte() {
        let users = [Trojan.passwordHash("someone else"), Trojan.passwordHash("raha-trojan")]
        let headerLength = knownHeader.count - "GET / HTTP/1.1\r\n".utf8.count
        for cut in 0..<headerLength {
            var partial = ByteBuffer(bytes: knownHeader[..<cut])
            #expect(Trojan.readHeader(from: &partial, userHashes: users) == .needMoreData, "cut at \(cut)")
            #expect(partial.readableBytes == cut, "nothing consumed while undecided")
        }
        var whole = ByteBuffer(bytes: knownHeader)
        #expect(Trojan.readHeader(from: &whole, userHashes: users) == .authenticated(user: 1, request: .init(command: .connect, destination: example)))
        #expect(String(buffer: whole) == "GET / HTTP/1.1\r\n", "the payload stays")
    }

    @Test func uppercaseHexIsTheSameUser() {
        var upper = knownHeader
        for i in 0..<Trojan.hashLength where upper[i] >= 0x61 { upper[i] -= 0x20 }
        var buffer = ByteBuffer(bytes: upper)
        if case .authenticated(let user, _) = Trojan.readHeader(from: &buffer, userHashes: [Trojan.passwordHash("raha-trojan")]) {
            #expect(user == 0)
        } else {
            Issue.record("an uppercase hash was not accepted")
        }
    }

    @Test func everythingElseFallsBackWithNothingConsumed() {
        let users = [Trojan.passwordHash("raha-trojan")]
        var wrongPassword = knownHeader
        wrongPassword[3] = wrongPassword[3] == 0x61 ? 0x62 : 0x61
        var badCommand = knownHeader
        badCommand[58] = 0x02
        var badCRLF = knownHeader
        badCRLF[57] = 0x20
        var badAddressType = knownHeader
        badAddressType[59] = 0x09
        let cases: [(String, [UInt8])] = [
            ("a browser", Array("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".utf8)),
            ("a wrong password", wrongPassword),
            ("BIND", badCommand),
            ("no CRLF after the hash", badCRLF),
            ("an unknown address type", badAddressType),
            ("a TLS record", [0x16, 0x03, 0x01, 0x02, 0x00]),
        ]
        for (name, bytes) in cases {
            var buffer = ByteBuffer(bytes: bytes)
            #expect(Trojan.readHeader(from: &buffer, userHashes: users) == .fallback, "\(name)")
            #expect(buffer.readableBytes == bytes.count, "\(name): nothing consumed")
        }
        // Random garbage decides on its first non-hex byte, and never authenticates.
        var rng = SeededGenerator(seed: 3)
        for length in [1, 10, 57, 58, 100, 400] {
            let garbage = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            var buffer = ByteBuffer(bytes: garbage)
            let decision = Trojan.readHeader(from: &buffer, userHashes: users)
            #expect(decision == .fallback || decision == .needMoreData)
            #expect(buffer.readableBytes == length)
        }
    }

    @Test func udpFramesRoundTripAndSplitAtEveryByte() throws {
        let frame = Trojan.UDPFrame(endpoint: Endpoint(host: .ipv4([8, 8, 8, 8]), port: 53), payload: ByteBuffer(bytes: [1, 2, 3, 4, 5]))
        var out = ByteBuffer()
        frame.write(to: &out)
        #expect(Array(out.readableBytesView) == [1, 8, 8, 8, 8, 0, 53, 0, 5, 0x0d, 0x0a, 1, 2, 3, 4, 5])
        let bytes = Array(out.readableBytesView)
        for cut in 0..<bytes.count {
            var partial = ByteBuffer(bytes: bytes[..<cut])
            #expect(try Trojan.UDPFrame.read(from: &partial) == nil)
            #expect(partial.readableBytes == cut)
        }
        var two = ByteBuffer(bytes: bytes + bytes)
        #expect(try Trojan.UDPFrame.read(from: &two) == frame)
        #expect(try Trojan.UDPFrame.read(from: &two) == frame)
        #expect(two.readableBytes == 0)
        var noCRLF = ByteBuffer(bytes: [1, 8, 8, 8, 8, 0, 53, 0, 1, 0x0a, 0x0d, 9])
        #expect(throws: WireError.self) { try Trojan.UDPFrame.read(from: &noCRLF) }
    }

    /// Three frames of different address types and sizes, as one stream.
    private func stream() -> ([Trojan.UDPFrame], [UInt8]) {
        let frames = [
            Trojan.UDPFrame(endpoint: Endpoint(host: .ipv4([192, 0, 2, 7]), port: 53), payload: ByteBuffer(bytes: [0xab])),
            Trojan.UDPFrame(endpoint: Endpoint(host: .domain("example.org"), port: 443), payload: ByteBuffer(bytes: Array(repeating: 0x42, count: 1400))),
            Trojan.UDPFrame(endpoint: Endpoint(host: .ipv6(Array(repeating: 0x20, count: 16)), port: 9), payload: ByteBuffer()),
        ]
        var out = ByteBuffer()
        for frame in frames { frame.write(to: &out) }
        return (frames, Array(out.readableBytesView))
    }

    @Test func theCutterYieldsEveryFrameWhateverTheReads() throws {
        let (frames, bytes) = stream()
        var whole = Trojan.UDPFrameCutter()
        whole.append(ByteBuffer(bytes: bytes))
        var got: [Trojan.UDPFrame] = []
        while let frame = try whole.next() { got.append(frame) }
        #expect(got == frames)
        #expect(whole.bufferedBytes == 0)

        for cut in 1..<bytes.count {
            var cutter = Trojan.UDPFrameCutter()
            var got: [Trojan.UDPFrame] = []
            for part in [bytes[..<cut], bytes[cut...]] {
                cutter.append(ByteBuffer(bytes: part))
                while let frame = try cutter.next() { got.append(frame) }
            }
            #expect(got == frames, "split at \(cut)")
            #expect(cutter.bufferedBytes == 0)
        }

        var byteByByte = Trojan.UDPFrameCutter()
        got = []
        for byte in bytes {
            byteByByte.append(ByteBuffer(bytes: [byte]))
            while let frame = try byteByByte.next() { got.append(frame) }
            #expect(byteByByte.bufferedBytes <= Trojan.maxUDPFrameLength, "never more than one incomplete frame")
        }
        #expect(got == frames)
    }

    @Test func theCutterKeepsOnlyTheIncompleteFrame() throws {
        let (_, bytes) = stream()
        var cutter = Trojan.UDPFrameCutter()
        cutter.append(ByteBuffer(bytes: bytes + bytes.prefix(5)))
        var count = 0
        while try cutter.next() != nil { count += 1 }
        #expect(count == 3)
        #expect(cutter.bufferedBytes == 5, "the whole frames were let go of")
    }

    @Test func theCutterRefusesMalformedAndTruncatedFramesNeverComplete() throws {
        // An unknown address type, and a length not followed by CRLF.
        for garbage: [UInt8] in [[0x07, 1, 2, 3, 4, 5, 6, 7, 8], [1, 8, 8, 8, 8, 0, 53, 0, 1, 0x0a, 0x0d, 9]] {
            var cutter = Trojan.UDPFrameCutter()
            cutter.append(ByteBuffer(bytes: garbage))
            #expect(throws: WireError.self) { try cutter.next() }
        }
        // Truncated: nothing until the rest arrives.
        let (_, bytes) = stream()
        var cutter = Trojan.UDPFrameCutter()
        cutter.append(ByteBuffer(bytes: bytes.prefix(20)))
        #expect(try cutter.next() != nil)
        #expect(try cutter.next() == nil)
        #expect(try cutter.next() == nil)
    }
}
