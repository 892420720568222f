import Foundation
import Testing
@testable import RahaWire

@Suite struct MailFormatTests {
    @Test func aChunkRoundTripsThroughAMail() {
        for size in [0, 1, 56, 57, 58, 1000, 100_000] {
            let chunk = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            let mail = MailFormat.compose(chunk: chunk, from: "alice@domestic.test", to: "bob@outside.test", disguise: .default)
            #expect(MailFormat.chunk(fromMail: mail) == chunk, "size \(size)")
            let text = String(decoding: mail, as: UTF8.self)
            #expect(text.split(separator: "\r\n", omittingEmptySubsequences: false).allSatisfy { $0.utf8.count <= 78 }, "lines of at most 78 characters")
            #expect(mail.allSatisfy { $0 < 0x80 }, "7-bit clean")
            // With LF line ends (as some stores keep mail), and after a relay adds headers.
            let relayed = "Received: from x\r\n\tby y; Sat, 21 Nov 2026 10:00:00 +0000\r\n" + text
            #expect(MailFormat.chunk(fromMail: Array(relayed.replacingOccurrences(of: "\r\n", with: "\n").utf8)) == chunk)
        }
    }

    @Test func looksLikeOrdinaryMail() {
        let disguise = MailDisguise(subject: "عکس‌های سفر", body: "سلام، عکس‌ها پیوست است.", attachmentName: "photos.bin")
        let mail = String(decoding: MailFormat.compose(chunk: [1, 2, 3], from: "a@d.test", to: "b@o.test", disguise: disguise,
                                                       date: Date(timeIntervalSince1970: 1_800_000_000)), as: UTF8.self)
        #expect(mail.contains("\r\nSubject: =?utf-8?B?"))
        #expect(mail.contains("\r\nDate: Fri, 15 Jan 2027 08:00:00 +0000\r\n"))
        #expect(mail.contains("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64"))
        #expect(mail.contains("Content-Disposition: attachment; filename=\"photos.bin\""))
        #expect(mail.contains("Message-ID: <") && mail.contains("@d.test>"))
        let plain = String(decoding: MailFormat.compose(chunk: [], from: "a@d.test", to: "b@o.test", disguise: .default), as: UTF8.self)
        #expect(plain.contains("Subject: Files\r\n") && plain.contains("\r\n\r\nHere are the files.\r\n--"))
    }

    @Test func otherMailIsNotAChunk() {
        for mail in ["Subject: hi\r\n\r\nhello\r\n", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n",
                     "Content-Type: multipart/mixed\r\n\r\n--b\r\n", "", "garbage without headers"] {
            #expect(MailFormat.chunk(fromMail: Array(mail.utf8)) == nil, "\(mail.debugDescription)")
        }
    }

    @Test func headersUnfoldAndParametersParse() {
        let (headers, body) = MailFormat.split(Array("Content-Type: multipart/mixed;\r\n boundary=\"a b\"\r\nX: 1\r\nx: 2\r\n\r\nbody".utf8))
        #expect(headers["content-type"] == "multipart/mixed; boundary=\"a b\"")
        #expect(headers["x"] == "1", "the first of a repeated field")
        #expect(body == Array("body".utf8))
        #expect(MailFormat.parameter("boundary", in: "multipart/mixed; charset=x; BOUNDARY=\"q\"") == "q")
        #expect(MailFormat.parameter("boundary", in: "multipart/mixed") == nil)
    }
}
