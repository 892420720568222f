import Testing
@testable import RahaWire

@Suite struct IMAPResponseParserTests {
    private func parseAll(_ text: String, cutAt cut: Int? = nil) throws -> [IMAPResponse] {
        let bytes = Array(text.utf8)
        var parser = IMAPResponseParser()
        var out: [IMAPResponse] = []
        let pieces = cut.map { [Array(bytes[..<$0]), Array(bytes[$0...])] } ?? [bytes]
        for piece in pieces {
            parser.feed(piece)
            while let response = try parser.next() { out.append(response) }
        }
        return out
    }

    @Test func readsStatusDataAndContinuationResponses() throws {
        let text = "* OK [CAPABILITY IMAP4rev1 SASL-IR IDLE AUTH=PLAIN] Dovecot ready.\r\n"
            + "* 3 EXISTS\r\n* OK [UIDVALIDITY 1700000000] UIDs valid\r\n"
            + "* FLAGS (\\Answered \\Seen \\*)\r\n* SEARCH 4 9 12\r\n+ idling\r\n"
            + "R7 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n* BYE Logging out\r\n"
        let expected = [
            IMAPResponse(kind: .untagged, status: .ok, code: [.atom("CAPABILITY"), .atom("IMAP4rev1"), .atom("SASL-IR"), .atom("IDLE"), .atom("AUTH=PLAIN")], text: "Dovecot ready."),
            IMAPResponse(kind: .untagged, data: [.number(3), .atom("EXISTS")]),
            IMAPResponse(kind: .untagged, status: .ok, code: [.atom("UIDVALIDITY"), .number(1_700_000_000)], text: "UIDs valid"),
            IMAPResponse(kind: .untagged, data: [.atom("FLAGS"), .list([.atom("\\Answered"), .atom("\\Seen"), .atom("\\*")])]),
            IMAPResponse(kind: .untagged, data: [.atom("SEARCH"), .number(4), .number(9), .number(12)]),
            IMAPResponse(kind: .continuation, text: "idling"),
            IMAPResponse(kind: .tagged("R7"), status: .no, code: [.atom("AUTHENTICATIONFAILED")], text: "Authentication failed."),
            IMAPResponse(kind: .untagged, status: .bye, text: "Logging out"),
        ]
        for cut in 0...text.utf8.count {
            #expect(try parseAll(text, cutAt: cut) == expected, "cut at \(cut)")
        }
    }

    @Test func readsLiteralsWhereverTheyAre() throws {
        let message = "Subject: x\r\n\r\n{5}\r\n) ( \" \\ *\r\n"
        let text = "* 1 FETCH (UID 42 BODY[] {\(message.utf8.count)}\r\n\(message) FLAGS (\\Seen))\r\nR3 OK Fetch completed.\r\n"
        for cut in 0...text.utf8.count {
            let responses = try parseAll(text, cutAt: cut)
            #expect(responses.count == 2, "cut at \(cut)")
            #expect(responses.first == IMAPResponse(kind: .untagged, data: [.number(1), .atom("FETCH"), .list([
                .atom("UID"), .number(42), .atom("BODY[]"), .string(Array(message.utf8)), .atom("FLAGS"), .list([.atom("\\Seen")]),
            ])]), "cut at \(cut)")
        }
        let sections = try parseAll("* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT)]<0> \"a \\\"q\\\"\" X NIL)\r\n")
        #expect(sections.first?.data.last == .list([.atom("BODY[HEADER.FIELDS (SUBJECT)]<0>"), .string(Array("a \"q\"".utf8)), .atom("X"), .nil_]))
    }

    @Test func refusesWhatDoesNotParse() {
        for (text, mention) in [("* 1 FETCH (UID 1\r\n", "a list that is not closed"), ("* SEARCH \"open\r\n", "quoted string that is not closed"),
                                ("R1 MAYBE done\r\n", "without OK, NO, BAD or BYE"), ("\r\n", "an empty response"),
                                ("* 1 FETCH (BODY[] {99999999999}\r\n", "literal too large"),
                                ("* 1 FETCH (BODY[] {99999999}\r\n", "more than the 67108864 Raha reads")] {
            do {
                _ = try parseAll(text)
                Issue.record("parsed \(text.debugDescription)")
            } catch let error as MailError {
                #expect(error.kind == .protocolViolation && error.reason.contains(mention), "\(error.reason)")
            } catch {
                Issue.record("\(error)")
            }
        }
    }
}
