import Foundation
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

/// Decodes the symbol with Debian's zbarimg (zbar-tools), a real scanner,
/// from the PNG file Raha writes: what a phone camera reads.
@Suite struct QRCodeScanTests {
    /// An access key, and a `raha:` bundle of seven (every transport of the censor lab's bridge).
    @Test(arguments: [
        "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpKTS00R0RBQmJJVVAwc2wtYWdBRjhHcTA@192.0.2.2:48685/?outline=1&prefix=GET%20%2Fpfddgj#Raha",
        "raha:1.1dDNT8IwGAbwu_8HuznaboWWpEE4GIPBj7FA8NavsS6ja9bi4L8X4sGgF41R45s81-f55Q1tU3E76vddh9_dFQQxOiaN0ShNk7HXcteacGCh9pG3hkllY-5c2zxrFddcROHgNAvSRc5YpkhKAEWcYqzkUBGJCkpSraiQKaZYkgHGdIhwMRQDKLRIYFIIgZGASooEi2i72zN4Eb4BFK1RGx03u-CN0ufEouWbrbaBJZf0P3h_n0i-ZOx85HgoWQ9df6z9Cz14s9vG6s8oXwe8P5avUVmeMq8mga-W4MnATqA9nufz7i53t_kCgAxk08ftbLZcTjqJurBeqWlWlTcyn5xJEkL64-PDamM1g5FrdWH27OF-kfcQ-JG5Fw",
    ])
    func aRealScannerReadsTheAccessKeyBack(key: String) throws {
        // The PNG file Raha writes for invites, read by the scanner: both the symbol and the PNG encoding are checked.
        let png = try QRCode(key).png(scale: 4)
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("raha-qr-\(UUID().uuidString).png")
        try Data(png).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let zbar = Process()
        zbar.executableURL = URL(fileURLWithPath: "/usr/bin/zbarimg")
        zbar.arguments = ["--raw", "-q", file.path]
        let out = Pipe()
        zbar.standardOutput = out
        try zbar.run()
        let decoded = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        zbar.waitUntilExit()
        #expect(zbar.terminationStatus == 0)
        #expect(decoded.trimmingCharacters(in: .newlines) == key)
    }
}
