#!/usr/bin/env python3
"""Feeds bytes that a TLS client sent to a real OpenSSL server (Python's
ssl module, in memory, no sockets) and says whether the server accepted
them as the start of a handshake: it must answer with a ServerHello.

usage: tls_server_accepts.py CERT KEY HEX
prints "accepted" (exit 0) or "rejected: REASON" (exit 1).
"""
import ssl
import sys


def main() -> int:
    cert, key, data = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = ctx.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(data)
    try:
        server.do_handshake()
    except ssl.SSLWantReadError:
        pass  # waiting for the client's next flight: the ClientHello was accepted
    except ssl.SSLError as error:
        print(f"rejected: {error}")
        return 1
    answer = outgoing.read()
    if answer[:1] != b"\x16":
        print(f"rejected: the server answered {answer[:8].hex()}")
        return 1
    print("accepted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
