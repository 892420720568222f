import NIOCore

// SOCKS version 5 (RFC 1928) with username/password authentication (RFC 1929).
//
// Every `read(from:)` here is incremental: it returns nil, with the reader
// index unchanged, while the buffer does not yet hold the whole message, and
// it consumes exactly the message's bytes once it does. Every `write(to:)`
// appends the message and leaves the reader index alone.

// MARK: - Constants

/// An authentication method number from a SOCKS5 greeting (RFC 1928 section 3).
public struct SOCKS5AuthenticationMethod: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// X'00': no authentication required.
    public static let noAuthentication = SOCKS5AuthenticationMethod(rawValue: 0x00)
    /// X'01': GSSAPI (not offered by this implementation).
    public static let gssapi = SOCKS5AuthenticationMethod(rawValue: 0x01)
    /// X'02': username/password, RFC 1929.
    public static let usernamePassword = SOCKS5AuthenticationMethod(rawValue: 0x02)
    /// X'FF': sent by the server when none of the offered methods is acceptable.
    public static let noAcceptableMethods = SOCKS5AuthenticationMethod(rawValue: 0xFF)

    public var description: String {
        switch rawValue {
        case 0x00: return "no authentication"
        case 0x01: return "GSSAPI"
        case 0x02: return "username/password"
        case 0xFF: return "no acceptable methods"
        default: return "method \(rawValue)"
        }
    }
}

/// The CMD field of a SOCKS5 request. Any byte value can be carried so that a
/// server can answer an unknown command with `.commandNotSupported`.
public struct SOCKS5Command: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let connect = SOCKS5Command(rawValue: 0x01)
    public static let bind = SOCKS5Command(rawValue: 0x02)
    public static let udpAssociate = SOCKS5Command(rawValue: 0x03)

    public var description: String {
        switch rawValue {
        case 0x01: return "CONNECT"
        case 0x02: return "BIND"
        case 0x03: return "UDP ASSOCIATE"
        default: return "command \(rawValue)"
        }
    }
}

/// The REP field of a SOCKS5 reply (RFC 1928 section 6).
public enum SOCKS5Reply: UInt8, Hashable, Sendable, CaseIterable {
    case succeeded = 0x00
    case generalFailure = 0x01
    case connectionNotAllowed = 0x02
    case networkUnreachable = 0x03
    case hostUnreachable = 0x04
    case connectionRefused = 0x05
    case ttlExpired = 0x06
    case commandNotSupported = 0x07
    case addressTypeNotSupported = 0x08
}

/// Protocol version numbers.
public enum SOCKS5 {
    /// VER of every SOCKS5 message except the RFC 1929 sub-negotiation.
    public static let version: UInt8 = 0x05
    /// VER of the RFC 1929 username/password sub-negotiation.
    public static let usernamePasswordVersion: UInt8 = 0x01
    /// The bound address servers put in replies that carry no real address.
    public static let unspecifiedAddress = Endpoint(host: .ipv4([0, 0, 0, 0]), port: 0)
}

/// Compares two byte strings in time that depends only on their lengths,
/// never on where they first differ. Unequal lengths do not cut the loop
/// short: it always runs over the longer of the two.
public func constantTimeEquals(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
    let count = Swift.max(lhs.count, rhs.count)
    var difference = UInt(bitPattern: lhs.count ^ rhs.count)
    var i = 0
    while i < count {
        let a: UInt8 = i < lhs.count ? lhs[i] : 0
        let b: UInt8 = i < rhs.count ? rhs[i] : 0
        difference |= UInt(a ^ b)
        i += 1
    }
    return difference == 0
}

// MARK: - Messages

/// Client greeting: VER, NMETHODS, METHODS.
public struct SOCKS5Greeting: Hashable, Sendable {
    public var methods: [SOCKS5AuthenticationMethod]

    /// At most 255 methods are written; any beyond that are dropped.
    public init(methods: [SOCKS5AuthenticationMethod]) {
        self.methods = methods
    }

    /// Throws `.malformed` when VER is not 5.
    public static func read(from buffer: inout ByteBuffer) throws -> SOCKS5Greeting? {
        var copy = buffer
        guard let version = copy.readInteger(as: UInt8.self) else { return nil }
        guard version == SOCKS5.version else { throw badVersion(version) }
        guard let count = copy.readInteger(as: UInt8.self) else { return nil }
        guard let bytes = copy.readBytes(length: Int(count)) else { return nil }
        buffer = copy
        return SOCKS5Greeting(methods: bytes.map(SOCKS5AuthenticationMethod.init(rawValue:)))
    }

    @discardableResult
    public func write(to buffer: inout ByteBuffer) -> Int {
        let methods = self.methods.prefix(255)
        buffer.writeInteger(SOCKS5.version)
        buffer.writeInteger(UInt8(methods.count))
        for method in methods { buffer.writeInteger(method.rawValue) }
        return 2 + methods.count
    }
}

/// Server method selection: VER, METHOD.
public struct SOCKS5MethodSelection: Hashable, Sendable {
    public var method: SOCKS5AuthenticationMethod

    public init(method: SOCKS5AuthenticationMethod) { self.method = method }

    public static func read(from buffer: inout ByteBuffer) throws -> SOCKS5MethodSelection? {
        var copy = buffer
        guard let version = copy.readInteger(as: UInt8.self) else { return nil }
        guard version == SOCKS5.version else { throw badVersion(version) }
        guard let method = copy.readInteger(as: UInt8.self) else { return nil }
        buffer = copy
        return SOCKS5MethodSelection(method: SOCKS5AuthenticationMethod(rawValue: method))
    }

    @discardableResult
    public func write(to buffer: inout ByteBuffer) -> Int {
        buffer.writeInteger(SOCKS5.version)
        buffer.writeInteger(method.rawValue)
        return 2
    }
}

/// RFC 1929 request: VER (1), ULEN, UNAME, PLEN, PASSWD. Names and passwords
/// are opaque bytes of 0 to 255 each (RFC 1929 asks for at least one; empty
/// ones are accepted when reading so that the server answers them with a
/// failure status rather than a dropped connection).
public struct SOCKS5UsernamePasswordRequest: Hashable, Sendable {
    public private(set) var username: [UInt8]
    public private(set) var password: [UInt8]

    /// Throws `.tooLarge` when either part is longer than 255 bytes.
    public init(username: [UInt8], password: [UInt8]) throws {
        guard username.count <= 255, password.count <= 255 else {
            throw WireError.tooLarge("a SOCKS5 username or password is longer than 255 bytes: shorten it")
        }
        self.username = username
        self.password = password
    }

    public init(username: String, password: String) throws {
        try self.init(username: Array(username.utf8), password: Array(password.utf8))
    }

    /// Throws `.malformed` when VER is not 1.
    public static func read(from buffer: inout ByteBuffer) throws -> SOCKS5UsernamePasswordRequest? {
        var copy = buffer
        guard let version = copy.readInteger(as: UInt8.self) else { return nil }
        guard version == SOCKS5.usernamePasswordVersion else {
            throw WireError.malformed("the SOCKS5 username/password sub-negotiation has version \(version): expected 1 (RFC 1929)")
        }
        guard let ulen = copy.readInteger(as: UInt8.self),
              let username = copy.readBytes(length: Int(ulen)),
              let plen = copy.readInteger(as: UInt8.self),
              let password = copy.readBytes(length: Int(plen))
        else { return nil }
        buffer = copy
        return try SOCKS5UsernamePasswordRequest(username: username, password: password)
    }

    @discardableResult
    public func write(to buffer: inout ByteBuffer) -> Int {
        buffer.writeInteger(SOCKS5.usernamePasswordVersion)
        buffer.writeInteger(UInt8(username.count))
        buffer.writeBytes(username)
        buffer.writeInteger(UInt8(password.count))
        buffer.writeBytes(password)
        return 3 + username.count + password.count
    }
}

/// RFC 1929 status: VER (1), STATUS (0 = success, anything else = failure).
public struct SOCKS5UsernamePasswordStatus: Hashable, Sendable {
    public var status: UInt8
    public var succeeded: Bool { status == 0 }

    public init(status: UInt8) { self.status = status }
    public static let success = SOCKS5UsernamePasswordStatus(status: 0x00)
    public static let failure = SOCKS5UsernamePasswordStatus(status: 0x01)

    public static func read(from buffer: inout ByteBuffer) throws -> SOCKS5UsernamePasswordStatus? {
        var copy = buffer
        guard let version = copy.readInteger(as: UInt8.self) else { return nil }
        guard version == SOCKS5.usernamePasswordVersion else {
            throw WireError.malformed("the SOCKS5 username/password status has version \(version): expected 1 (RFC 1929)")
        }
        guard let status = copy.readInteger(as: UInt8.self) else { return nil }
        buffer = copy
        return SOCKS5UsernamePasswordStatus(status: status)
    }

    @discardableResult
    public func write(to buffer: inout ByteBuffer) -> Int {
        buffer.writeInteger(SOCKS5.usernamePasswordVersion)
        buffer.writeInteger(status)
        return 2
    }
}

/// Client request: VER, CMD, RSV, DST.ADDR, DST.PORT. RSV is written as 0
/// and ignored when read.
public struct SOCKS5Request: Hashable, Sendable {
    public var command: SOCKS5Command
    public var destination: Endpoint

    public init(command: SOCKS5Command, destination: Endpoint) {
        self.command = command
        self.destination = destination
    }

    /// Throws `.malformed` when VER is not 5 or the address is bad, and
    /// `.unsupported` when the address type is not 1, 3 or 4. The command is
    /// not judged here.
    public static func read(from buffer: inout ByteBuffer) throws -> SOCKS5Request? {
        var copy = buffer
        guard let version = copy.readInteger(as: UInt8.self) else { return nil }
        guard version == SOCKS5.version else { throw badVersion(version) }
        guard let command = copy.readInteger(as: UInt8.self),
              copy.readInteger(as: UInt8.self) != nil, // RSV
              let atyp = copy.getInteger(at: copy.readerIndex, as: UInt8.self)
        else { return nil }
        guard isKnownAddressType(atyp) else { throw unknownAddressType(atyp) }
        guard let destination = try Endpoint.read(from: &copy) else { return nil }
        buffer = copy
        return SOCKS5Request(command: SOCKS5Command(rawValue: command), destination: destination)
    }

    @discardableResult
    public func write(to buffer: inout ByteBuffer) -> Int {
        buffer.writeInteger(SOCKS5.version)
        buffer.writeInteger(command.rawValue)
        buffer.writeInteger(UInt8(0))
        return 3 + destination.write(to: &buffer)
    }
}

/// Server reply: VER, REP, RSV, BND.ADDR, BND.PORT.
public struct SOCKS5Response: Hashable, Sendable {
    public var reply: SOCKS5Reply
    public var bound: Endpoint

    public init(reply: SOCKS5Reply, bound: Endpoint = SOCKS5.unspecifiedAddress) {
        self.reply = reply
        self.bound = bound
    }

    /// Throws `.malformed` when VER is not 5, REP is not a code from RFC 1928,
    /// or the address is bad; `.unsupported` for an unknown address type.
    public static func read(from buffer: inout ByteBuffer) throws -> SOCKS5Response? {
        var copy = buffer
        guard let version = copy.readInteger(as: UInt8.self) else { return nil }
        guard version == SOCKS5.version else { throw badVersion(version) }
        guard let code = copy.readInteger(as: UInt8.self) else { return nil }
        guard let reply = SOCKS5Reply(rawValue: code) else {
            throw WireError.malformed("the SOCKS5 reply code \(code) is not one RFC 1928 defines (0 to 8)")
        }
        guard copy.readInteger(as: UInt8.self) != nil,
              let atyp = copy.getInteger(at: copy.readerIndex, as: UInt8.self)
        else { return nil }
        guard isKnownAddressType(atyp) else { throw unknownAddressType(atyp) }
        guard let bound = try Endpoint.read(from: &copy) else { return nil }
        buffer = copy
        return SOCKS5Response(reply: reply, bound: bound)
    }

    @discardableResult
    public func write(to buffer: inout ByteBuffer) -> Int {
        buffer.writeInteger(SOCKS5.version)
        buffer.writeInteger(reply.rawValue)
        buffer.writeInteger(UInt8(0))
        return 3 + bound.write(to: &buffer)
    }
}

/// One UDP datagram relayed under UDP ASSOCIATE: RSV (2 bytes), FRAG,
/// DST.ADDR, DST.PORT, DATA. A datagram is always whole, so unlike the
/// stream messages a short one is an error, not "need more".
public struct SOCKS5UDPDatagram: Hashable, Sendable {
    public var fragment: UInt8
    public var destination: Endpoint
    public var payload: ByteBuffer

    public init(fragment: UInt8 = 0, destination: Endpoint, payload: ByteBuffer) {
        self.fragment = fragment
        self.destination = destination
        self.payload = payload
    }

    /// True when FRAG is not zero. This implementation does not reassemble
    /// fragments; RFC 1928 section 7 lets it drop such datagrams, and the
    /// caller should.
    public var isFragment: Bool { fragment != 0 }

    /// Throws `.malformed` for a truncated datagram or a bad address and
    /// `.unsupported` for an unknown address type. RSV is not checked. The
    /// payload is a slice of `datagram` (it may be empty).
    public static func parse(_ datagram: ByteBuffer) throws -> SOCKS5UDPDatagram {
        var buffer = datagram
        guard buffer.readableBytes >= 4,
              buffer.readInteger(as: UInt16.self) != nil,
              let fragment = buffer.readInteger(as: UInt8.self),
              let atyp = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self)
        else {
            throw WireError.malformed("a SOCKS5 UDP datagram of \(datagram.readableBytes) bytes is too short to hold its header")
        }
        guard isKnownAddressType(atyp) else { throw unknownAddressType(atyp) }
        guard let destination = try Endpoint.read(from: &buffer) else {
            throw WireError.malformed("a SOCKS5 UDP datagram ends inside its destination address")
        }
        return SOCKS5UDPDatagram(fragment: fragment, destination: destination, payload: buffer)
    }

    /// Writes the header and the payload's readable bytes.
    @discardableResult
    public func write(to buffer: inout ByteBuffer) -> Int {
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(fragment)
        let addressLength = destination.write(to: &buffer)
        var payload = self.payload
        let payloadLength = buffer.writeBuffer(&payload)
        return 3 + addressLength + payloadLength
    }
}

private func badVersion(_ version: UInt8) -> WireError {
    WireError.malformed("the first byte is \(version), not SOCKS version 5: the client is not speaking SOCKS5")
}

private func isKnownAddressType(_ atyp: UInt8) -> Bool {
    atyp == 1 || atyp == 3 || atyp == 4
}

private func unknownAddressType(_ atyp: UInt8) -> WireError {
    WireError.unsupported("unknown SOCKS5 address type \(atyp): expected 1 (IPv4), 3 (domain) or 4 (IPv6)")
}

// MARK: - Server state machine

/// Username and password a local proxy front requires: SOCKS5 (RFC 1929)
/// and HTTP (`Proxy-Authorization: Basic`) alike.
public struct ProxyCredentials: Hashable, Sendable {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }
}

/// What the server's caller must do after `receive(_:)`.
public enum SOCKS5ServerAction: Hashable, Sendable {
    /// The buffer holds only part of the next message; call `receive` again
    /// with more bytes appended. Nothing was consumed.
    case needMoreData
    /// Write these bytes to the client, then call `receive` again with the
    /// bytes left in the buffer (a client may have sent its next message
    /// already).
    case send(ByteBuffer)
    /// The client asked to CONNECT to this destination. Open the connection,
    /// then answer with `reply(_:bound:)`. Bytes left in the buffer are early
    /// payload for the destination.
    case connect(Endpoint)
    /// The client asked for UDP ASSOCIATE; the endpoint is the address it
    /// says it will send datagrams from (often 0.0.0.0:0, meaning "unknown").
    /// Open the relay socket and answer with `reply(.succeeded, bound:)`
    /// naming it. Bytes left in the buffer should not exist; the control
    /// connection carries nothing more.
    case udpAssociate(Endpoint)
    /// Write `reply` if there is one, then close the connection.
    case fail(reply: ByteBuffer?, reason: WireError)
}

/// The server side of a SOCKS5 negotiation, from greeting to request.
///
/// Feed it the bytes read from the client; it consumes the messages it
/// understands and tells you what to do. It never performs I/O. After `.fail`
/// it stays failed; after `.connect` or `.udpAssociate` the negotiation is
/// over and the connection carries payload, which must not be fed here.
public struct SOCKS5ServerStateMachine: Sendable {
    private enum State: Sendable {
        case awaitingGreeting
        case awaitingCredentials
        case awaitingRequest
        case completed(SOCKS5Request)
        case failed(WireError)
    }

    private var state: State = .awaitingGreeting
    private let credentials: (username: [UInt8], password: [UInt8])?

    /// `credentials` nil means no authentication: only clients offering
    /// method X'00' are served. With credentials, only clients offering X'02'
    /// are served, and they must present exactly these bytes (UTF-8).
    public init(credentials: ProxyCredentials? = nil) {
        if let credentials {
            self.credentials = (Array(credentials.username.utf8), Array(credentials.password.utf8))
        } else {
            self.credentials = nil
        }
    }

    /// The method this server wants to see offered.
    public var requiredMethod: SOCKS5AuthenticationMethod {
        credentials == nil ? .noAuthentication : .usernamePassword
    }

    /// The request, once `.connect` or `.udpAssociate` has been returned.
    public var request: SOCKS5Request? {
        if case .completed(let request) = state { return request }
        return nil
    }

    public var isFailed: Bool {
        if case .failed = state { return true }
        return false
    }

    /// Consumes the next complete client message from `buffer`, if there is
    /// one, and says what to do. See `SOCKS5ServerAction` for what is left in
    /// the buffer after each action.
    public mutating func receive(_ buffer: inout ByteBuffer) -> SOCKS5ServerAction {
        switch state {
        case .failed(let reason):
            return .fail(reply: nil, reason: reason)
        case .completed:
            return fail(nil, WireError.malformed("the SOCKS5 negotiation is already complete: relay further bytes instead of negotiating"))
        case .awaitingGreeting:
            return receiveGreeting(&buffer)
        case .awaitingCredentials:
            return receiveCredentials(&buffer)
        case .awaitingRequest:
            return receiveRequest(&buffer)
        }
    }

    /// The reply to a CONNECT or UDP ASSOCIATE: VER 5, the code, RSV 0, and
    /// the bound address (use `SOCKS5.unspecifiedAddress` when there is none
    /// worth telling, as for failures).
    public func reply(_ code: SOCKS5Reply, bound: Endpoint = SOCKS5.unspecifiedAddress) -> ByteBuffer {
        Self.reply(code, bound: bound)
    }

    public static func reply(_ code: SOCKS5Reply, bound: Endpoint = SOCKS5.unspecifiedAddress) -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(3 + bound.encodedLength)
        SOCKS5Response(reply: code, bound: bound).write(to: &out)
        return out
    }

    // MARK: Steps

    private mutating func fail(_ reply: ByteBuffer?, _ reason: WireError) -> SOCKS5ServerAction {
        state = .failed(reason)
        return .fail(reply: reply, reason: reason)
    }

    private mutating func receiveGreeting(_ buffer: inout ByteBuffer) -> SOCKS5ServerAction {
        let greeting: SOCKS5Greeting
        do {
            guard let g = try SOCKS5Greeting.read(from: &buffer) else { return .needMoreData }
            greeting = g
        } catch let error as WireError {
            return fail(nil, error)
        } catch {
            return fail(nil, WireError.malformed("the SOCKS5 greeting could not be read"))
        }
        let wanted = requiredMethod
        var out = ByteBuffer()
        guard greeting.methods.contains(wanted) else {
            SOCKS5MethodSelection(method: .noAcceptableMethods).write(to: &out)
            let offered = greeting.methods.map(\.description).joined(separator: ", ")
            return fail(out, WireError.unsupported(
                "the SOCKS5 client offered \(offered.isEmpty ? "no methods" : offered) but this proxy requires \(wanted): "
                + (credentials == nil ? "turn authentication off in the client" : "set the proxy username and password in the client")))
        }
        SOCKS5MethodSelection(method: wanted).write(to: &out)
        state = credentials == nil ? .awaitingRequest : .awaitingCredentials
        return .send(out)
    }

    private mutating func receiveCredentials(_ buffer: inout ByteBuffer) -> SOCKS5ServerAction {
        let offered: SOCKS5UsernamePasswordRequest
        do {
            guard let r = try SOCKS5UsernamePasswordRequest.read(from: &buffer) else { return .needMoreData }
            offered = r
        } catch let error as WireError {
            return fail(nil, error)
        } catch {
            return fail(nil, WireError.malformed("the SOCKS5 credentials could not be read"))
        }
        guard let credentials else { return fail(nil, WireError.malformed("unexpected credentials")) }
        // Both comparisons run to the end before either result is looked at.
        let userMatches = constantTimeEquals(offered.username, credentials.username)
        let passwordMatches = constantTimeEquals(offered.password, credentials.password)
        var out = ByteBuffer()
        guard userMatches && passwordMatches else {
            SOCKS5UsernamePasswordStatus.failure.write(to: &out)
            return fail(out, WireError(.authentication, "the SOCKS5 client sent a wrong username or password: check the proxy credentials in the client"))
        }
        SOCKS5UsernamePasswordStatus.success.write(to: &out)
        state = .awaitingRequest
        return .send(out)
    }

    private mutating func receiveRequest(_ buffer: inout ByteBuffer) -> SOCKS5ServerAction {
        // Judge the fixed part first, so that a request we will refuse is
        // answered even when its address cannot be delimited.
        guard let version = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return .needMoreData }
        guard version == SOCKS5.version else { return fail(nil, badVersion(version)) }
        guard let commandByte = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self) else { return .needMoreData }
        let command = SOCKS5Command(rawValue: commandByte)
        guard command == .connect || command == .udpAssociate else {
            return fail(Self.reply(.commandNotSupported), WireError.unsupported(
                "the SOCKS5 client asked for \(command), which this proxy does not offer: only CONNECT and UDP ASSOCIATE are supported"))
        }
        guard let atyp = buffer.getInteger(at: buffer.readerIndex + 3, as: UInt8.self) else { return .needMoreData }
        guard isKnownAddressType(atyp) else {
            return fail(Self.reply(.addressTypeNotSupported), unknownAddressType(atyp))
        }
        let request: SOCKS5Request
        do {
            guard let r = try SOCKS5Request.read(from: &buffer) else { return .needMoreData }
            request = r
        } catch let error as WireError {
            return fail(Self.reply(.generalFailure), error)
        } catch {
            return fail(Self.reply(.generalFailure), WireError.malformed("the SOCKS5 request could not be read"))
        }
        state = .completed(request)
        return command == .connect ? .connect(request.destination) : .udpAssociate(request.destination)
    }
}
