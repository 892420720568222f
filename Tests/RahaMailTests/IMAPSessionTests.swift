import Testing
@testable import RahaMail

@Suite struct IMAPSessionTests {
    @Test func quotesStringsForCommands() {
        #expect(IMAPSession.quoted(#"a"b\c"#) == #""a\"b\\c""#)
        #expect(IMAPSession.quoted("INBOX") == "\"INBOX\"")
    }
}
