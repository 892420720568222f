import NIOCore
import RahaTransport
import RahaWire

/// One connection's tie to the circle: set once the connection's codec
/// has named the invitee. Shared by the connection's meter and exit
/// handlers (and its streams'), all on the connection's event loop.
final class ShareSlot {
    let ledger: ShareLedger
    var account: InviteeAccount?

    init(ledger: ShareLedger) { self.ledger = ledger }

    /// A share node's connection starts with its meter and upload pacer,
    /// which act once the connection is tied to an invitee.
    static func installed(for ledger: ShareLedger, in pipeline: ChannelPipeline.SynchronousOperations) throws -> ShareSlot {
        let slot = ShareSlot(ledger: ledger)
        try pipeline.addHandlers([ShareMeter(slot: slot), SharePacer(direction: .up) { slot.account }])
        return slot
    }

    /// Ties the connection to the invitee `clientID`; false when they may not connect now.
    func attach(clientID: String, connection: Channel) -> Bool {
        guard let account = ledger.account(for: clientID), account.attach(connection: connection) else { return false }
        self.account = account
        return true
    }
}

/// After the meter on a share node's DNS tunnel session: the client's ID
/// (`DNSTunnelKey.clientID`, the first bytes inside the tunnel) ties the
/// session to its invitee, as a codec's `ClientAuthenticatedEvent` does on
/// a connection; a session naming nobody in the circle is closed.
final class TunnelClientIdentity: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let slot: ShareSlot
    private var start = ByteBuffer()

    init(slot: ShareSlot) { self.slot = slot }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        start.writeBuffer(&bytes)
        guard let id = start.readBytes(length: DNSTunnelKey.clientIDLength) else { return }
        guard let client = slot.ledger.roster.dns.first(where: { $0.dnsID == id }),
              slot.attach(clientID: client.id, connection: context.channel) else {
            context.close(promise: nil)
            return
        }
        let rest = start
        start = ByteBuffer()
        if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }
}

/// First in an invitee's connection: counts every byte on the wire against
/// the invitee (usage, quota, the rate's bucket) and closes the connection
/// on the next packet once they are revoked or over quota.
final class ShareMeter: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer

    private let slot: ShareSlot
    /// Bytes read before the codec named the invitee (the handshake), charged once it has.
    private var unattributed = 0

    init(slot: ShareSlot) { self.slot = slot }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data).readableBytes
        guard let account = slot.account else {
            unattributed += bytes
            context.fireChannelRead(data)
            return
        }
        guard account.count(bytes + takeUnattributed(), .up) else {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if let account = slot.account {
            let handshake = takeUnattributed()
            guard (handshake == 0 || account.count(handshake, .up)) && account.count(unwrapOutboundIn(data).readableBytes, .down) else {
                promise?.fail(ChannelError.ioOnClosedChannel)
                context.close(promise: nil)
                return
            }
        }
        context.write(data, promise: promise)
    }

    private func takeUnattributed() -> Int {
        defer { unattributed = 0 }
        return unattributed
    }
}

/// Holds back reads while the invitee's rate says wait: on their connection
/// for what they send (`.up`), on the exit side of each of their streams for
/// what they fetch (`.down`; the bytes are counted where they leave, in the
/// connection's `ShareMeter`).
final class SharePacer: ChannelOutboundHandler {
    typealias OutboundIn = NIOAny

    private let account: () -> InviteeAccount?
    private let direction: InviteeAccount.Direction
    private var readScheduled = false

    /// - Parameter account: asked at every read (nil: not tied to an invitee yet, read at once).
    init(direction: InviteeAccount.Direction, account: @escaping () -> InviteeAccount?) {
        self.direction = direction
        self.account = account
    }

    func read(context: ChannelHandlerContext) {
        guard let account = account(), let delay = account.delay(direction) else {
            context.read()
            return
        }
        guard !readScheduled else { return }
        readScheduled = true
        account.holding(direction, 1)
        let box = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: delay) {
            let (pacer, context) = box.value
            pacer.readScheduled = false
            account.holding(pacer.direction, -1)
            pacer.read(context: context)
        }
    }
}
