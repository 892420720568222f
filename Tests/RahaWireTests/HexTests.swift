import Testing
import RahaWire

@Suite struct HexTests {
    @Test func roundTripsAndRefusesWhatIsNotHex() {
        #expect(Hex.encode([0x00, 0x0F, 0xA5, 0xFF]) == "000fa5ff")
        #expect(Hex.decode("000FA5ff") == [0x00, 0x0F, 0xA5, 0xFF], "either case")
        #expect(Hex.decode("") == [])
        #expect(Hex.decode("abc") == nil, "an odd count of digits")
        #expect(Hex.decode("0g") == nil, "g is not a digit")
        let bytes = (0...255).map { UInt8($0) }
        #expect(Hex.decode(Hex.encode(bytes)) == bytes)
    }
}
