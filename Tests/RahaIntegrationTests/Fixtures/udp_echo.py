#!/usr/bin/env python3
"""UDP echo server for Raha's integration tests.

Binds 127.0.0.1 (never any other address) on the given port, or on a free
one with port 0, prints "UDP echo listening on 127.0.0.1:PORT" once bound
and sends every datagram back to its sender unchanged; with --report it
also prints "echoed N bytes" for each (never an address). Exits when its
standard input reaches end of file, so it never outlives the test process
that started it.
"""
import socket
import sys

from fixture_support import exit_when_stdin_closes


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--report"]
    report = "--report" in sys.argv[1:]
    port = int(args[0]) if args else 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    print(f"UDP echo listening on 127.0.0.1:{sock.getsockname()[1]}", flush=True)

    exit_when_stdin_closes()
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)
        if report:
            print(f"echoed {len(data)} bytes", flush=True)


if __name__ == "__main__":
    main()
