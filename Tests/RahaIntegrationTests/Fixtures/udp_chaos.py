#!/usr/bin/env python3
"""A lossy UDP path for Raha's integration tests: a relay that drops,
duplicates and reorders datagrams, as resolvers and bad links do.

  udp_chaos.py UPSTREAM_PORT [--loss P] [--dup P] [--reorder P] [--seed N]

Binds 127.0.0.1 (never any other address) on a free port and prints
"UDP chaos listening on 127.0.0.1:PORT". Datagrams from a client go to
127.0.0.1:UPSTREAM_PORT from a socket of that client's own, and the answers
back to the client; each datagram, either way, is dropped with probability
--loss, sent twice with probability --dup, and held 20-120 ms (so later ones
overtake it) with probability --reorder. At exit (standard input closed) it
has printed "chaos: dropped N duplicated N reordered N" after every 100
datagrams. Exits when its standard input reaches end of file.
"""
import argparse
import heapq
import random
import select
import socket
import sys
import time

from fixture_support import exit_when_stdin_closes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("upstream", type=int)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--dup", type=float, default=0.0)
    parser.add_argument("--reorder", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    upstream = ("127.0.0.1", args.upstream)

    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", 0))
    print(f"UDP chaos listening on 127.0.0.1:{front.getsockname()[1]}", flush=True)
    exit_when_stdin_closes()

    backs = {}       # client address -> socket towards upstream
    clients = {}     # that socket -> client address
    later = []       # (due, order, socket, data, destination)
    counts = {"dropped": 0, "duplicated": 0, "reordered": 0, "total": 0}
    order = 0

    def forward(sock, data, destination):
        nonlocal order
        counts["total"] += 1
        if counts["total"] % 100 == 0:
            print(f"chaos: dropped {counts['dropped']} duplicated {counts['duplicated']} reordered {counts['reordered']}", flush=True)
        if rng.random() < args.loss:
            counts["dropped"] += 1
            return
        copies = 2 if rng.random() < args.dup else 1
        if copies == 2:
            counts["duplicated"] += 1
        for _ in range(copies):
            if rng.random() < args.reorder:
                counts["reordered"] += 1
                order += 1
                heapq.heappush(later, (time.monotonic() + rng.uniform(0.02, 0.12), order, sock, data, destination))
            else:
                sock.sendto(data, destination)

    while True:
        timeout = max(0.0, later[0][0] - time.monotonic()) if later else 1.0
        readable, _, _ = select.select([front] + list(clients), [], [], timeout)
        for sock in readable:
            data, source = sock.recvfrom(65535)
            if sock is front:
                back = backs.get(source)
                if back is None:
                    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    back.bind(("127.0.0.1", 0))
                    backs[source] = back
                    clients[back] = source
                forward(back, data, upstream)
            elif source == upstream:
                forward(front, data, clients[sock])
        now = time.monotonic()
        while later and later[0][0] <= now:
            _, _, sock, data, destination = heapq.heappop(later)
            sock.sendto(data, destination)


if __name__ == "__main__":
    main()
