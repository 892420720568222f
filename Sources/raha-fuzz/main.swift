import RahaFuzz

#if canImport(Glibc)
import Glibc
#endif

// The fuzz targets' one binary. Built by scripts/fuzz with
// -sanitize=fuzzer,address and -DFUZZING, it hands its arguments to libFuzzer
// and fuzzes the target named by RAHA_FUZZ_TARGET. Built plainly (as
// `swift build` does), it runs a target once over each file named:
//     raha-fuzz TARGET FILE...
// which replays a crash without sanitizers. Either build also answers
//     raha-fuzz --list          the targets and what each reads
//     raha-fuzz --seeds DIR     writes each target's seeds to DIR/TARGET/

/// Handles --list and --seeds; false for anything else.
func answeredOwnCommand() -> Bool {
    let arguments = CommandLine.arguments
    if arguments.count == 2, arguments[1] == "--list" {
        for target in FuzzTarget.all { print(target.name.padding(toLength: 20, withPad: " ", startingAt: 0) + target.summary) }
        return true
    }
    guard arguments.count == 3, arguments[1] == "--seeds" else { return false }
    mkdir(arguments[2], 0o755)
    for target in FuzzTarget.all {
        let directory = arguments[2] + "/" + target.name
        mkdir(directory, 0o755)
        for (index, seed) in target.seeds.enumerated() {
            guard let file = fopen(directory + "/seed-\(index)", "wb") else {
                fputs("raha-fuzz: cannot write \(directory)/seed-\(index)\n", stderr)
                exit(1)
            }
            fwrite(seed, 1, seed.count, file)
            fclose(file)
        }
    }
    return true
}
if answeredOwnCommand() { exit(0) }

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

nonisolated(unsafe) var selected: FuzzTarget?

/// The entry point libFuzzer's own `main` looks for; the driver below is
/// handed the same function.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    selected!.run(start.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? [])
    return 0
}

guard let name = getenv("RAHA_FUZZ_TARGET").map({ String(cString: $0) }), let target = FuzzTarget.named(name) else {
    fputs("set RAHA_FUZZ_TARGET to one of: \(FuzzTarget.all.map(\.name).joined(separator: " "))\n", stderr)
    exit(2)
}
selected = target
var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOne))
#else
let arguments = CommandLine.arguments.dropFirst()
guard let name = arguments.first, let target = FuzzTarget.named(name) else {
    print("usage: raha-fuzz TARGET FILE...   (targets: \(FuzzTarget.all.map(\.name).joined(separator: " ")))")
    exit(2)
}
for path in arguments.dropFirst() {
    guard let file = fopen(path, "rb") else { print("raha-fuzz: cannot open \(path)"); exit(1) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while case let n = fread(&chunk, 1, chunk.count, file), n > 0 { bytes += chunk[..<n] }
    fclose(file)
    target.run(bytes)
    print("\(path): ok")
}
#endif
