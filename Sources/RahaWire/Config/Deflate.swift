import CZlib

/// Raw DEFLATE (RFC 1951: no zlib or gzip header, no checksum) through
/// Debian's zlib. Pure functions: bytes in, bytes out.
public enum Deflate {
    /// Compresses `bytes` at the best compression level.
    public static func deflate(_ bytes: [UInt8]) -> [UInt8] {
        var stream = z_stream()
        // windowBits -15: raw DEFLATE with a 32 KiB window.
        guard deflateInit2_(&stream, Z_BEST_COMPRESSION, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY,
                            ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            preconditionFailure("zlib could not set up a compressor (out of memory)")
        }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(bytes.count))))
        let result = finish(&stream, from: bytes, into: &output) { CZlib.deflate(&$0, Z_FINISH) }
        // deflateBound guarantees room for everything in one call.
        precondition(result == Z_STREAM_END, "zlib deflate stopped early (\(result))")
        output.removeSubrange(Int(stream.total_out)...)
        return output
    }

    /// Decompresses raw DEFLATE data that must end exactly where its final
    /// block ends. Throws `.tooLarge` as soon as the output would exceed
    /// `maxSize` bytes (so a small "zip bomb" costs no more than that), and
    /// `.malformed` for corrupt, truncated or trailing data.
    public static func inflate(_ bytes: [UInt8], maxSize: Int) throws -> [UInt8] {
        var stream = z_stream()
        guard inflateInit2_(&stream, -15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            preconditionFailure("zlib could not set up a decompressor (out of memory)")
        }
        defer { inflateEnd(&stream) }
        // One byte of room beyond the cap tells "exactly maxSize" from "more".
        var output = [UInt8](repeating: 0, count: maxSize + 1)
        let result = finish(&stream, from: bytes, into: &output) { CZlib.inflate(&$0, Z_FINISH) }
        let produced = Int(stream.total_out)
        if produced > maxSize {
            throw WireError.tooLarge("the compressed data expands to more than \(maxSize) bytes, the most allowed")
        }
        switch result {
        case Z_STREAM_END:
            guard stream.avail_in == 0 else {
                throw WireError.malformed("the compressed data has \(stream.avail_in) bytes after its end")
            }
            output.removeSubrange(produced...)
            return output
        case Z_BUF_ERROR, Z_OK:
            throw WireError.malformed("the compressed data is truncated")
        default:
            throw WireError.malformed("the compressed data is corrupt (not raw DEFLATE)")
        }
    }

    /// Points `stream` at all of `input` and `output` and makes one zlib call.
    private static func finish(_ stream: inout z_stream, from input: [UInt8], into output: inout [UInt8],
                               _ call: (inout z_stream) -> Int32) -> Int32 {
        var input = input
        return input.withUnsafeMutableBufferPointer { inBuffer in
            output.withUnsafeMutableBufferPointer { outBuffer in
                stream.next_in = inBuffer.baseAddress
                stream.avail_in = uInt(inBuffer.count)
                stream.next_out = outBuffer.baseAddress
                stream.avail_out = uInt(outBuffer.count)
                return call(&stream)
            }
        }
    }
}
