#!/usr/bin/env python3
"""SOCKS5 UDP ASSOCIATE client for Raha's integration tests (RFC 1928, 1929).

Opens the TCP control connection (greeting, optional username/password,
UDP ASSOCIATE), then sends --count datagrams of different sizes and random
content, each wrapped in the RFC 1928 UDP request header addressed to
--target, to the relay address from the reply. Every reply must carry the
header RSV=0, FRAG=0, ATYP=IPv4 with --target as its source address and
port, and one of the payloads sent. A datagram that is not echoed within
--timeout seconds is sent again, at most --resends times (loopback UDP can
drop under load); every payload must eventually come back. --sizes gives
the payload sizes exactly; --sequential sends a datagram only once the
previous one came back (for proxies that pack queued datagrams together).

Prints "OK: N datagrams echoed ..." and exits 0, or prints "FAIL: reason"
and exits 1. Uses 127.0.0.1 only.
"""
import argparse
import os
import select
import socket
import struct
import sys
import time


def fail(reason: str) -> None:
    print(f"FAIL: {reason}", flush=True)
    sys.exit(1)


def recv_exact(sock: socket.socket, n: int, what: str) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            fail(f"the proxy closed the control connection while sending {what} (got {data.hex()})")
        data += chunk
    return data


def host_port(text: str) -> tuple:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxy", required=True, help="SOCKS5 proxy HOST:PORT")
    parser.add_argument("--target", required=True, help="UDP echo server IPv4:PORT")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--sequential", action="store_true",
                        help="send each datagram only once the previous one came back")
    parser.add_argument("--sizes", help="comma-separated payload sizes in bytes, used in turn "
                                        "(default: a mix of 6 to 1204 bytes)")
    parser.add_argument("--resends", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()

    proxy = host_port(args.proxy)
    target = host_port(args.target)
    target_ip = socket.inet_aton(target[0])

    control = socket.create_connection(proxy, timeout=15)
    if args.user is not None:
        control.sendall(bytes([5, 1, 2]))
        if recv_exact(control, 2, "the method selection") != bytes([5, 2]):
            fail("the proxy did not select username/password authentication")
        user, password = args.user.encode(), args.password.encode()
        control.sendall(bytes([1, len(user)]) + user + bytes([len(password)]) + password)
        if recv_exact(control, 2, "the authentication status") != bytes([1, 0]):
            fail("the proxy refused the credentials")
    else:
        control.sendall(bytes([5, 1, 0]))
        selection = recv_exact(control, 2, "the method selection")
        if selection != bytes([5, 0]):
            fail(f"the proxy answered the greeting with {selection.hex()}, not 0500")

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    local_port = udp.getsockname()[1]
    # UDP ASSOCIATE, telling the address this client will send from.
    control.sendall(bytes([5, 3, 0, 1]) + socket.inet_aton("127.0.0.1") + struct.pack("!H", local_port))
    head = recv_exact(control, 4, "the UDP ASSOCIATE reply")
    if head[0] != 5 or head[1] != 0:
        fail(f"UDP ASSOCIATE was refused: reply {head.hex()}")
    atyp = head[3]
    if atyp == 1:
        relay_host = socket.inet_ntoa(recv_exact(control, 4, "the relay address"))
    elif atyp == 4:
        relay_host = socket.inet_ntop(socket.AF_INET6, recv_exact(control, 16, "the relay address"))
    elif atyp == 3:
        n = recv_exact(control, 1, "the relay name length")[0]
        relay_host = recv_exact(control, n, "the relay name").decode()
    else:
        fail(f"the UDP ASSOCIATE reply has address type {atyp}")
    relay_port = struct.unpack("!H", recv_exact(control, 2, "the relay port"))[0]
    if relay_host in ("0.0.0.0", "::"):
        relay_host = proxy[0]
    if relay_port == 0:
        fail("the UDP ASSOCIATE reply names port 0")
    relay = (relay_host, relay_port)

    header = bytes([0, 0, 0, 1]) + target_ip + struct.pack("!H", target[1])
    payloads = []
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    for i in range(args.count):
        tag = f"#{i:03d}:".encode()
        if sizes is None:
            payloads.append(tag + os.urandom([1, 7, 100, 512, 1200, 33, 250, 999][i % 8]))
        else:
            # Exactly the size asked for, tagged when there is room for it.
            size = sizes[i % len(sizes)]
            payloads.append(tag + os.urandom(size - len(tag)) if size > len(tag) else os.urandom(size))
    sends = {p: 0 for p in payloads}
    resent = 0

    def exchange(pending: dict) -> None:
        """Sends the pending payloads (again after each timeout) until all came back."""
        nonlocal resent
        while pending:
            for p in list(pending):
                if sends[p] > args.resends:
                    fail(f"datagram {pending[p]} ({len(p)} bytes) was never echoed after {sends[p]} sends; "
                         f"{len(pending)} of {len(payloads)} still missing")
                if sends[p] > 0:
                    resent += 1
                sends[p] += 1
                udp.sendto(header + p, relay)
            deadline = time.monotonic() + args.timeout
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                ready, _, _ = select.select([udp], [], [], left)
                if not ready:
                    break
                reply, sender = udp.recvfrom(65535)
                if len(reply) < 10:
                    fail(f"a reply of {len(reply)} bytes is too short for a SOCKS5 UDP header")
                if reply[0:2] != b"\x00\x00":
                    fail(f"the reply's RSV field is {reply[0:2].hex()}, not 0000")
                if reply[2] != 0:
                    fail(f"the reply's FRAG field is {reply[2]}, not 0")
                if reply[3] != 1:
                    fail(f"the reply's address type is {reply[3]}, not 1 (IPv4)")
                source = (socket.inet_ntoa(reply[4:8]), struct.unpack("!H", reply[8:10])[0])
                if source != (target[0], target[1]):
                    fail(f"the reply's source address is {source[0]}:{source[1]}, not the echo server {args.target}")
                payload = reply[10:]
                if payload in pending:
                    del pending[payload]
                elif payload not in sends:
                    fail(f"a reply carries a payload that was never sent ({len(payload)} bytes, starts {payload[:8].hex()})")

    if args.sequential:
        # One datagram in flight at a time: the next goes once the last came back.
        for i, p in enumerate(payloads):
            exchange({p: i})
    else:
        exchange({p: i for i, p in enumerate(payloads)})

    # The control connection must still be open: the association lives as long as it does.
    control.setblocking(False)
    try:
        if control.recv(1) == b"":
            fail("the proxy closed the control connection during the association")
    except BlockingIOError:
        pass
    control.close()
    print(f"OK: {len(payloads)} datagrams echoed via relay {relay[0]}:{relay[1]} (resent {resent})", flush=True)


if __name__ == "__main__":
    main()
