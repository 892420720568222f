import NIOCore
import Testing
@testable import RahaWire

/// Two mux ends joined through real frame bytes.
struct MuxPair {
    var client = MuxSession(role: .client, configuration: .init(initialWindow: 64 * 1024, maxDataBody: 8 * 1024, maxStreams: 4, maxStreamsPerConnection: 6))
    var server = MuxSession(role: .server, configuration: .init(initialWindow: 64 * 1024, maxDataBody: 8 * 1024, maxStreams: 4, maxStreamsPerConnection: 6))

    /// Opens a client stream, failing the test when the session refuses.
    mutating func open(_ destination: Endpoint) throws -> (UInt32, [MuxFrame]) {
        guard let opened = client.openStream(to: destination) else { throw WireError.malformed("the client refused to open a stream") }
        return opened
    }

    /// Sends frames from one end and returns the other end's events and replies.
    static func deliver(_ frames: [MuxFrame], to receiver: inout MuxSession) throws -> (events: [MuxSession.Event], replies: [MuxFrame]) {
        var wire = ByteBuffer()
        for frame in frames { frame.write(to: &wire) }
        var events: [MuxSession.Event] = []
        var replies: [MuxFrame] = []
        while let frame = try MuxFrame.read(from: &wire) {
            let result = try receiver.receive(frame)
            events += result.events
            replies += result.replies
        }
        #expect(wire.readableBytes == 0)
        return (events, replies)
    }
}

func dataBytes(_ events: [MuxSession.Event], stream: UInt32) -> Int {
    events.reduce(0) { sum, event in
        if case .data(let s, let body) = event, s == stream { return sum + body.readableBytes }
        return sum
    }
}

@Suite struct MuxSessionTests {
    let destination = Endpoint(host: .domain("example.org"), port: 443)

    @Test func openDataFinishBothWays() throws {
        var pair = MuxPair()
        let (stream, open) = try pair.open(destination)
        #expect(stream == 1)
        #expect(open == [.open(stream: 1, to: destination)], "64 KiB windows: no WINDOW with the OPEN")
        var events = try MuxPair.deliver(open, to: &pair.server).events
        #expect(events == [.opened(stream: 1, destination: destination)])
        var request = ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n")
        events = try MuxPair.deliver(pair.client.send(stream: 1, &request), to: &pair.server).events
        #expect(events == [.data(stream: 1, ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n"))])
        var response = ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\n")
        events = try MuxPair.deliver(pair.server.send(stream: 1, &response) + pair.server.finish(stream: 1), to: &pair.client).events
        #expect(events == [.data(stream: 1, ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\n")), .finished(stream: 1)])
        let finish = pair.client.finish(stream: 1)
        #expect(try MuxPair.deliver(finish, to: &pair.server).events == [.finished(stream: 1)])
        #expect(pair.client.openStreams == 0 && pair.server.openStreams == 0)
    }

    @Test func aStalledStreamDoesNotStallTheOthers() throws {
        var pair = MuxPair()
        let (a, openA) = try pair.open(destination)
        let (b, openB) = try pair.open(destination)
        _ = try MuxPair.deliver(openA + openB, to: &pair.server)
        var bigA = ByteBuffer(repeating: 0xA, count: 300 * 1024)
        var bigB = ByteBuffer(repeating: 0xB, count: 300 * 1024)
        var receivedA = 0, receivedB = 0
        // Stream A's reader never consumes; stream B's consumes everything at once.
        for _ in 0..<100 where bigB.readableBytes > 0 {
            let frames = pair.client.send(stream: a, &bigA) + pair.client.send(stream: b, &bigB)
            let events = try MuxPair.deliver(frames, to: &pair.server).events
            receivedA += dataBytes(events, stream: a)
            let gotB = dataBytes(events, stream: b)
            receivedB += gotB
            _ = try MuxPair.deliver(pair.server.consumed(stream: b, bytes: gotB), to: &pair.client)
        }
        #expect(receivedB == 300 * 1024, "B flowed completely")
        #expect(receivedA == 64 * 1024, "A stopped at its window")
        #expect(bigA.readableBytes == 300 * 1024 - 64 * 1024, "the rest of A waits with its writer")
        // A's reader catches up: the window opens and A resumes.
        let grant = pair.server.consumed(stream: a, bytes: receivedA)
        #expect(try MuxPair.deliver(grant, to: &pair.client).events == [.writable(stream: a)])
        receivedA += dataBytes(try MuxPair.deliver(pair.client.send(stream: a, &bigA), to: &pair.server).events, stream: a)
        #expect(receivedA == 128 * 1024)
    }

    @Test func endsWithDifferentWindowsAgree() throws {
        // The client allows 256 KiB per stream, the server 64 KiB (the base).
        var client = MuxSession(role: .client, configuration: .init(initialWindow: 256 * 1024))
        var server = MuxSession(role: .server, configuration: .init(initialWindow: 64 * 1024))
        let opening = client.openStream(to: destination)
        let (id, open) = try #require(opening)
        #expect(open == [.open(stream: id, to: destination), .window(stream: id, increment: 192 * 1024)])
        let opened = try MuxPair.deliver(open, to: &server)
        #expect(opened.replies.isEmpty, "the server allows only the base window: nothing to grant")
        #expect(server.sendWindow(stream: id) == 256 * 1024)
        // The client starts at the base window; the server never sees more than it allows.
        var upload = ByteBuffer(repeating: 1, count: 300 * 1024)
        let frames = client.send(stream: id, &upload)
        #expect(frames.map(\.body.readableBytes).reduce(0, +) == 64 * 1024)
        #expect(try MuxPair.deliver(frames, to: &server).events.count == frames.count)
        // And the other way round, the larger window is granted with the server's reply.
        var bigServer = MuxSession(role: .server, configuration: .init(initialWindow: 1024 * 1024))
        var smallClient = MuxSession(role: .client, configuration: .init(initialWindow: 64 * 1024))
        let opening2 = smallClient.openStream(to: destination)
        let (id2, open2) = try #require(opening2)
        #expect(open2.count == 1)
        let replies = try MuxPair.deliver(open2, to: &bigServer).replies
        #expect(replies == [.window(stream: id2, increment: 960 * 1024)])
        _ = try MuxPair.deliver(replies, to: &smallClient)
        #expect(smallClient.sendWindow(stream: id2) == 1024 * 1024)
    }

    @Test func protocolViolationsAreErrors() throws {
        var pair = MuxPair()
        let (a, open) = try pair.open(destination)
        _ = try MuxPair.deliver(open, to: &pair.server)
        // More DATA than granted.
        var server = pair.server
        let tooMuch = (0..<9).map { _ in MuxFrame(kind: .data, stream: a, body: ByteBuffer(repeating: 1, count: 8 * 1024)) }
        #expect(throws: WireError.self) { _ = try MuxPair.deliver(tooMuch, to: &server) }
        // Opening a stream number that belongs to the other side, or opening twice.
        var server2 = pair.server
        #expect(throws: WireError.self) { _ = try MuxPair.deliver([.open(stream: 2, to: destination)], to: &server2) }
        var server3 = pair.server
        #expect(throws: WireError.self) { _ = try MuxPair.deliver([.open(stream: a, to: destination)], to: &server3) }
        // DATA after FINISH.
        _ = try MuxPair.deliver(pair.client.finish(stream: a), to: &pair.server)
        var server4 = pair.server
        #expect(throws: WireError.self) { _ = try MuxPair.deliver([MuxFrame(kind: .data, stream: a, body: ByteBuffer(bytes: [1]))], to: &server4) }
    }

    @Test func streamCountAndLifetimeAreBounded() throws {
        var pair = MuxPair()
        var opens: [MuxFrame] = []
        for _ in 0..<4 { opens += try pair.open(destination).1 }
        let fifth = pair.client.openStream(to: destination)
        #expect(fifth == nil, "at most 4 open at once")
        _ = try MuxPair.deliver(opens, to: &pair.server)
        // A peer that ignores the limit gets its extra stream reset.
        let extra = try MuxPair.deliver([.open(stream: 9, to: destination)], to: &pair.server)
        #expect(extra.events.isEmpty && extra.replies == [MuxFrame(kind: .reset, stream: 9)])
        // Lifetime: after 6 streams in all, the connection takes no new ones.
        _ = pair.client.reset(stream: 1)
        _ = pair.client.reset(stream: 3)
        let fifthInAll = pair.client.openStream(to: destination), sixthInAll = pair.client.openStream(to: destination)
        #expect(fifthInAll != nil && sixthInAll != nil)
        _ = pair.client.reset(stream: 5)
        #expect(pair.client.isDraining)
        let seventh = pair.client.openStream(to: destination)
        #expect(seventh == nil, "open a new connection instead")
        // Go-away.
        let away = pair.server.goAway()
        #expect(try MuxPair.deliver(away, to: &pair.client).events == [.goAway])
        #expect(pair.client.peerWentAway)
    }
}
