#!/usr/bin/env python3
"""A TCP source for Raha's backpressure test.

Binds 127.0.0.1 (never any other address) on a free port, prints
"byte source listening on 127.0.0.1:PORT", and sends each connection
SIZE bytes (argument, in MiB) of a counting pattern as fast as the
connection takes them, then closes. Exits when its standard input ends.
"""
import socket
import sys
import threading

from fixture_support import exit_when_stdin_closes


def serve(conn: socket.socket, size: int) -> None:
    block = bytes(i % 251 for i in range(251 * 261))  # a whole number of periods
    sent = 0
    try:
        while sent < size:
            n = min(len(block), size - sent)
            # Keep the pattern continuous across blocks: start where the last one stopped.
            offset = sent % 251
            conn.sendall((block[offset:] + block[:offset])[:n])
            sent += n
    except OSError:
        pass
    finally:
        conn.close()


def main() -> None:
    size = int(sys.argv[1]) * 1024 * 1024
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    print(f"byte source listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)

    exit_when_stdin_closes()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, size), daemon=True).start()


if __name__ == "__main__":
    main()
