"""Peak RSS growth of the server while N clients request an 8 MiB response and never read it.

    python benchmarks/hostile/rss_slow_readers.py [--loop uvloop|asyncio] [--clients 100] [--fresh]

Each client has a small receive buffer and stops reading after sending its request; the script waits
until the server's RSS stops growing (or --settle-timeout), then reports the peak growth over the RSS
measured after one warm-up request.  ``--fresh`` makes the handler build a new 8 MiB body per request
(the default serves one shared body, so what is measured is what the server itself holds per reader).
"""
from __future__ import annotations

import argparse
import socket
import time

from _common import HOST, PeakSampler, Server, get, mib


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--fresh", action="store_true", help="a new 8 MiB body per request")
    p.add_argument("--settle-timeout", type=float, default=30.0)
    args = p.parse_args()

    path = "/big-fresh" if args.fresh else "/big"
    with Server(args.loop, ["--timeout-write", "600"]) as server:
        assert get(server.port, path).startswith(b"HTTP/1.1 200")  # warm-up: body built, code paths hot
        time.sleep(0.3)
        base = server.rss_kb()
        sampler = PeakSampler(server.pid)
        sampler.start()
        socks = []
        started = time.monotonic()
        try:
            for _ in range(args.clients):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect((HOST, server.port))
                s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
                socks.append(s)  # ... and never read
            last, stable = -1, 0
            deadline = time.monotonic() + args.settle_timeout
            while time.monotonic() < deadline and stable < 5:
                time.sleep(0.2)
                now = server.rss_kb()
                stable = stable + 1 if abs(now - last) < 256 else 0
                last = now
            held = server.rss_kb()
            # Another client is still served promptly while the readers stall.
            t = time.monotonic()
            ok = get(server.port, "/").startswith(b"HTTP/1.1 200")
            probe_ms = (time.monotonic() - t) * 1000
        finally:
            for s in socks:
                s.close()
        peak = sampler.stop()
        time.sleep(1.0)
        after = server.rss_kb()
    print(
        f"rss_slow_readers loop={args.loop} clients={args.clients} body=8MiB "
        f"{'fresh' if args.fresh else 'shared'}: baseline={mib(base):.1f}MiB "
        f"peak_growth={mib(peak - base):.1f}MiB held_growth={mib(held - base):.1f}MiB "
        f"per_client={mib(peak - base) / args.clients * 1024:.0f}KiB after_close_growth={mib(after - base):.1f}MiB "
        f"other_client={'ok' if ok else 'FAILED'} in {probe_ms:.1f}ms elapsed={time.monotonic() - started:.1f}s"
    )


if __name__ == "__main__":
    main()
