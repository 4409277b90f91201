"""Minimum data rates under attack: slow-body (R.U.D.Y.) and slow-reader clients are cut, an ordinary
client keeps its latency.

    python benchmarks/hostile/min_rates.py [--loop uvloop|asyncio] [--clients 200] [--grace 2] [--rate 240]
                                           [--repeat 3] [--no-pin]

The server runs with ``--min-request-body-rate RATE --min-response-rate RATE --min-rate-grace-period
GRACE``. First an ordinary client sends ``GET /`` on one keep-alive connection every 20 ms for
``--baseline`` seconds (no attack). Then ``--clients`` slow-body clients each announce a body of
``--body`` bytes and send one byte every 0.5 s, and as many slow readers each ask for 8 MiB with a
4 KiB receive buffer and read 100 bytes every 0.5 s; the ordinary client goes on meanwhile. Each
attacker records the time from its first byte until the server cut it (408 or close). The bound to
meet is grace + body / rate seconds (the worst case for a client just under the rate); the script
prints the cut-off times, the answers seen and the ordinary client's p50/p99 with and without attack.
With two or more CPUs the server runs pinned to CPU 0 (``taskset``) and this script to CPU 1, so the
attack's own cost does not land on the server's core; ``--repeat N`` runs the whole measurement N times,
each against a fresh server, and ends with one summary line per run.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import time

from _common import HOST, Server

BIG_PATH = b"/big"
ESTABLISHED, TCP_CLOSE = 1, 7  # tcpi_state values (linux/tcp_states.h)


async def slow_body(port: int, size: int, budget: float) -> tuple[float, bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"POST /slow-upload?delay=0 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    start = time.monotonic()

    async def drip() -> None:
        for _ in range(size):
            writer.write(b"a")
            await asyncio.sleep(0.5)

    task = asyncio.ensure_future(drip())
    try:
        answer = await asyncio.wait_for(reader.read(200), budget)
    except (asyncio.TimeoutError, ConnectionError):
        answer = b"<not cut within budget>"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        writer.close()
    return time.monotonic() - start, answer.split(b"\r\n", 1)[0] or b"<closed>"


async def slow_reader(port: int, budget: float) -> tuple[float, bytes]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (HOST, port))
    await loop.sock_sendall(sock, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % BIG_PATH)
    start = time.monotonic()
    outcome = b"<not cut within budget>"
    try:
        while time.monotonic() - start < budget:
            # The client still reads what its own receive buffer holds after the server has gone, so
            # the cut is seen in the socket's TCP state: anything but ESTABLISHED (RST or FIN came).
            state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
            if state != ESTABLISHED:
                outcome = b"<reset>" if state == TCP_CLOSE else b"<closed>"
                break
            piece = await asyncio.wait_for(loop.sock_recv(sock, 100), budget)
            if not piece:
                outcome = b"<closed>"
                break
            await asyncio.sleep(0.5)
    except (ConnectionError, asyncio.TimeoutError) as exc:
        outcome = b"<" + type(exc).__name__.encode() + b">"
    finally:
        sock.close()
    return time.monotonic() - start, outcome


async def ordinary(port: int, stop: asyncio.Event, out: list[float]) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while not stop.is_set():
            t = time.perf_counter()
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            out.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(0.02)
    finally:
        writer.close()


def _percentiles(values: list[float]) -> str:
    if not values:
        return "n=0"
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"n={len(values)} p50={statistics.median(values):.2f}ms p99={p99:.2f}ms"


async def run(port: int, args: argparse.Namespace) -> str:
    bound = args.grace + args.body / args.rate
    budget = bound + 10
    stop = asyncio.Event()
    base: list[float] = []
    task = asyncio.ensure_future(ordinary(port, stop, base))
    await asyncio.sleep(args.baseline)
    stop.set()
    await task
    stop = asyncio.Event()
    attacked: list[float] = []
    task = asyncio.ensure_future(ordinary(port, stop, attacked))
    bodies = [asyncio.ensure_future(slow_body(port, args.body, budget)) for _ in range(args.clients)]
    readers = [asyncio.ensure_future(slow_reader(port, budget)) for _ in range(args.clients)]
    body_results = await asyncio.gather(*bodies)
    reader_results = await asyncio.gather(*readers)
    stop.set()
    await task
    summary = []
    for name, results in (("slow-body", body_results), ("slow-reader", reader_results)):
        times = sorted(r[0] for r in results)
        answers: dict[str, int] = {}
        for _, answer in results:
            key = answer.decode("latin-1")
            answers[key] = answers.get(key, 0) + 1
        print(f"{name}: clients={len(results)} cut min={times[0]:.2f}s median={statistics.median(times):.2f}s "
              f"max={times[-1]:.2f}s bound={bound:.1f}s within_bound={sum(t <= bound for t in times)} answers={answers}")
        summary.append(f"{name} max {times[-1]:.2f}s ({sum(t <= bound for t in times)}/{len(times)} within {bound:.1f}s)")
    print(f"ordinary client without attack: {_percentiles(base)}")
    print(f"ordinary client under attack:   {_percentiles(attacked)}")
    summary.append(f"ordinary {_percentiles(base)} -> {_percentiles(attacked)}")
    return "; ".join(summary)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    p.add_argument("--clients", type=int, default=200, help="slow-body clients, and as many slow readers")
    p.add_argument("--rate", type=float, default=240.0, help="both minimum rates, bytes/s")
    p.add_argument("--grace", type=float, default=2.0, help="min_rate_grace_period, s")
    p.add_argument("--body", type=int, default=2400, help="announced body size, bytes")
    p.add_argument("--baseline", type=float, default=5.0, help="seconds of ordinary traffic before the attack")
    p.add_argument("--repeat", type=int, default=1, help="run the whole measurement this many times")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server and clients to CPUs")
    args = p.parse_args()
    extra = ["--min-request-body-rate", str(args.rate), "--min-response-rate", str(args.rate),
             "--min-rate-grace-period", str(args.grace)]
    pin = args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    if pin:
        os.sched_setaffinity(0, {1})
    runs = []
    for number in range(1, args.repeat + 1):
        with Server(args.loop, extra, cpu=0 if pin else None) as server:
            print(f"min_rates run {number}/{args.repeat} loop={args.loop} rate={args.rate}B/s grace={args.grace}s "
                  f"body={args.body}B pinned={pin} load={os.getloadavg()[0]:.2f}")
            runs.append(asyncio.run(run(server.port, args)))
    for number, line in enumerate(runs, 1):
        print(f"run {number}: {line}")


if __name__ == "__main__":
    main()
