import NIOCore
import Testing
@testable import RahaWire

@Suite struct MuxFrameTests {
    static let frames: [(MuxFrame, [UInt8])] = [
        (.open(stream: 1, to: Endpoint(host: .domain("a.io"), port: 443)), [0, 0, 0, 0, 1, 0, 8, 3, 4, 0x61, 0x2e, 0x69, 0x6f, 1, 0xbb]),
        (MuxFrame(kind: .data, stream: 3, body: ByteBuffer(bytes: [9, 8, 7])), [1, 0, 0, 0, 3, 0, 3, 9, 8, 7]),
        (.window(stream: 0x0102_0304, increment: 65536), [2, 1, 2, 3, 4, 0, 4, 0, 1, 0, 0]),
        (MuxFrame(kind: .finish, stream: 5), [3, 0, 0, 0, 5, 0, 0]),
        (MuxFrame(kind: .reset, stream: 5, body: ByteBuffer(bytes: [2])), [4, 0, 0, 0, 5, 0, 1, 2]),
        (MuxFrame(kind: .padding, stream: 0, body: ByteBuffer(bytes: [0xaa, 0xbb])), [5, 0, 0, 0, 0, 0, 2, 0xaa, 0xbb]),
        (MuxFrame(kind: .goAway, stream: 0), [6, 0, 0, 0, 0, 0, 0]),
    ]

    @Test func exactBytesAndSplitAtEveryByte() throws {
        for (frame, bytes) in Self.frames {
            var out = ByteBuffer()
            frame.write(to: &out)
            #expect(Array(out.readableBytesView) == bytes, "\(frame.kind)")
            for cut in 0..<bytes.count {
                var partial = ByteBuffer(bytes: bytes[..<cut])
                #expect(try MuxFrame.read(from: &partial) == nil, "\(frame.kind) cut at \(cut)")
                #expect(partial.readableBytes == cut)
            }
            var two = ByteBuffer(bytes: bytes + bytes)
            #expect(try MuxFrame.read(from: &two) == frame)
            #expect(try MuxFrame.read(from: &two) == frame)
            #expect(two.readableBytes == 0)
        }
        #expect(try Self.frames[0].0.destination() == Endpoint(host: .domain("a.io"), port: 443))
        #expect(try Self.frames[2].0.windowIncrement() == 65536)
    }

    @Test func malformedFramesAreRefused() {
        let bad: [(String, [UInt8])] = [
            ("unknown kind", [9, 0, 0, 0, 1, 0, 0]),
            ("data on stream 0", [1, 0, 0, 0, 0, 0, 1, 7]),
            ("padding on a stream", [5, 0, 0, 0, 1, 0, 0]),
            ("window of 3 bytes", [2, 0, 0, 0, 1, 0, 3, 0, 0, 1]),
            ("finish with a body", [3, 0, 0, 0, 1, 0, 1, 0]),
            ("open too short", [0, 0, 0, 0, 1, 0, 2, 1, 1]),
        ]
        for (name, bytes) in bad {
            var buffer = ByteBuffer(bytes: bytes)
            #expect(throws: WireError.self, "\(name)") { try MuxFrame.read(from: &buffer) }
        }
        #expect(throws: WireError.self) { try MuxFrame.window(stream: 1, increment: 0).windowIncrement() }
        var rng = SeededGenerator(seed: 5)
        for _ in 0..<2000 {
            var buffer = ByteBuffer(bytes: (0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
            _ = try? MuxFrame.read(from: &buffer) // never crashes, never reads past the end
        }
    }
}
