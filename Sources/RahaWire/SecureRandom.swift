import CLibCrypto

/// Random bytes from OpenSSL's CSPRNG (seeded by the kernel), one call per
/// request. Swift's SystemRandomNumberGenerator makes one system call per
/// value, which per byte of every salt and padding is a measurable cost.
public enum SecureRandom {
    public static func fill(_ bytes: inout [UInt8]) {
        guard !bytes.isEmpty else { return }
        let ok = bytes.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32($0.count)) }
        precondition(ok == 1, "the system's random number generator failed")
    }

    public static func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        fill(&out)
        return out
    }
}
