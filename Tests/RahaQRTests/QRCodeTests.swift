import Testing
@testable import RahaQR

@Suite struct QRCodeTests {
    @Test func encodesAnAccessKeyWithFinderPatterns() throws {
        let code = try QRCode("ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpzZWNyZXQ@203.0.113.7:8388/?outline=1")
        #expect(code.width >= 21 && (code.width - 17) % 4 == 0, "a QR symbol is 17 + 4·version modules wide")
        // The top-left finder pattern: a dark 7x7 ring around a light ring around a dark 3x3 core.
        for i in 0..<7 {
            #expect(code.isDark(i, 0) && code.isDark(0, i) && code.isDark(i, 6) && code.isDark(6, i))
        }
        #expect(!code.isDark(1, 1) && !code.isDark(5, 5))
        #expect(code.isDark(3, 3))
        #expect(!code.isDark(7, 0), "the separator is light")
    }

    @Test func terminalRenderingHasOneLinePerTwoRows() throws {
        let code = try QRCode("raha")
        let lines = code.terminalString.split(separator: "\n")
        #expect(lines.count == (code.width + 8 + 1) / 2)
        #expect(lines.allSatisfy { $0.hasPrefix("\u{1b}[30;47m") && $0.hasSuffix("\u{1b}[0m") })
    }
}
