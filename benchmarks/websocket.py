"""WebSocket echo round trips and memory per idle WebSocket: aioserve against its peers.

    python -m benchmarks.websocket [--servers aioserve,uvicorn-starlette,...] [--seconds 5] [--rounds 2]
                                   [--idle 10000] [--skip-echo] [--skip-idle] [--baseline REF]

Echo: 64 connections, each keeping 16 text messages in flight (32 bytes, then 4 KiB): a message is sent
again as soon as its echo comes back. Throughput is echoed messages per second over the measured window
(after a 1 s warm-up); p50/p99 are round-trip times (send to echo) of every message in the window.
Idle: open N WebSockets, send one message on each and read its echo, wait 2 s, and read the server's
RSS again: (after - before) / N in KiB.

The server runs pinned to CPU 0 (``taskset``), this load generator to CPU 1, and the table shows both
CPU shares over the measured window (server: its process tree's CPU time; client: this process's), so
a reader sees who was the bottleneck: the server should be near 100%, the client well below.

The load generator is made cheap so that it is not the ceiling (websockets' full client protocol on
every echo cost 90-96% of its core). Each connection:

- opens with websockets' sans-IO ``ClientProtocol`` (handshake checked: 101, Sec-WebSocket-Accept);
  no compression offered (the figures are the servers', not zlib's);
- sends 16 text frames serialized once by websockets (``Frame.serialize(mask=True)``, a random
  masking key each, distinct payloads), reused round-robin: n frames are one slice of one buffer and
  one write; the masking keys repeat, which a benchmark may do;
- parses its first 32 echoes with the same ``ClientProtocol`` (each must be a whole text frame with the
  payload sent, in order), then only counts bytes: every echo is an unmasked frame of known size
  (2 + 32 or 4 + 4096 bytes) in order, so ``bytes // size`` echoes have arrived and each pops its send
  time from a deque (the round trip);
- at the end stops sending, waits (bounded) for what is in flight, and checks the stream: every
  message echoed, bytes received exactly a multiple of the echo size (no close frame, nothing else),
  the connection still up. A failed check is printed as ERRORS and kept in the .json.

Rounds alternate the server order; the table gives the median of the rounds (one disturbed round
moves a mean a lot on a shared machine; every round is in the .json, with the load average at its
end). RLIMIT_NOFILE is raised to its hard limit (the servers inherit it). ``--baseline REF`` adds
aioserve as at git ``REF`` (its package extracted with ``git archive``) as one more server, so a change
is quoted before/after in the same rounds, under the same noise.
Writes benchmarks/results/websocket.{md,json}.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from . import harness, procstats
from .harness import HOST, ServerError, ServerProcess
from .servers.registry import PY, ServerSpec

CONNECTIONS = 64
IN_FLIGHT = 16
SIZES = (32, 4096)
WARMUP = 1.0


def _cli(name: str) -> list[str]:
    return [PY, "-m", "benchmarks.servers.ws_apps", name, "--host", HOST]


SERVERS = [
    ServerSpec("aioserve", 18101, "aioserve, --loop uvloop (websockets sans-IO)",
               lambda port: [PY, "-m", "aioserve", "benchmarks.servers.ws_apps:aioserve_app", "--host", HOST,
                             "--port", str(port), "--loop", "uvloop", "--no-access-log"],
               requires=("aioserve", "uvloop")),
    ServerSpec("uvicorn-starlette", 18102, "uvicorn (uvloop, httptools, --ws websockets-sansio) + Starlette",
               lambda port: [PY, "-m", "uvicorn", "benchmarks.servers.ws_apps:starlette_app", "--host", HOST,
                             "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                             "--ws", "websockets-sansio", "--no-access-log", "--lifespan", "off",
                             "--log-level", "warning"],
               requires=("uvicorn", "starlette", "uvloop")),
    ServerSpec("aiohttp", 18103, "aiohttp web.run_app on uvloop",
               lambda port: _cli("aiohttp") + ["--port", str(port)], requires=("aiohttp", "uvloop")),
    ServerSpec("sanic", 18104, "Sanic, single_process (websockets)",
               lambda port: _cli("sanic") + ["--port", str(port)], requires=("sanic",)),
    ServerSpec("socketify", 18105, "socketify.py (uWebSockets, C++), compression off",
               lambda port: _cli("socketify") + ["--port", str(port)], requires=("socketify",)),
    ServerSpec("bare-websockets", 18106, "the ceiling on websockets: its ServerProtocol in a bare uvloop protocol, "
               "echoing in data_received (no task, handler, limits or pings; not a server to use)",
               lambda port: _cli("bare") + ["--port", str(port)], requires=("websockets", "uvloop")),
]


def baseline_spec(ref: str) -> ServerSpec:
    """aioserve's package as at git ``ref``, served like ``aioserve`` (same app, same flags), as ``aioserve@ref``."""
    boot = harness.baseline_boot(harness.baseline_tree(ref))
    return ServerSpec(f"aioserve@{ref}", 18100, f"aioserve as at {ref}, --loop uvloop",
                      lambda port: [*boot, "benchmarks.servers.ws_apps:aioserve_app", "--host", HOST,
                                    "--port", str(port), "--loop", "uvloop", "--no-access-log"],
                      requires=("aioserve", "uvloop"))


class EchoClient(asyncio.Protocol):
    """One WebSocket keeping ``in_flight`` messages out; records the round trip of each echo.

    The handshake and the first ``check`` echoes go through websockets' ``ClientProtocol`` (status 101,
    every echo parsed and compared with the payload sent, in order). Past that the client only counts
    bytes: each echo is one unmasked server frame of ``frames.reply_size`` bytes, so ``received //
    reply_size`` is the number of echoes so far, and each one pops its send time from ``sent``. What it
    sends is ``frames``' pre-masked frames, round-robin, as one slice of one buffer per batch.
    """

    def __init__(self, uri: str, frames: "Frames", in_flight: int, bench: "Bench", deflate: bool = False,
                 check: int | None = None) -> None:
        extensions = [ClientPerMessageDeflateFactory()] if deflate else None  # websockets' default offer
        self.ws = ClientProtocol(parse_uri(uri), extensions=extensions, max_size=None)
        self.frames = frames
        self.in_flight = in_flight
        self.bench = bench
        # a compressed echo has no known size: with deflate every echo is parsed, none counted by size
        self.check = None if deflate else (2 * in_flight if check is None else check)
        self.counting = False  # past the checked echoes: count bytes only
        self.sent: deque[float] = deque()
        self.next = 0  # index of the next frame to send in frames.ring
        self.sent_total = 0
        self.received = 0  # bytes received after the handshake
        self.echoed = 0  # echoes received
        self.checked = 0  # echoes parsed and compared by websockets
        self.error: str | None = None
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.first_echo: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self._flush()

    def _flush(self) -> None:
        data = self.ws.data_to_send()
        if data:
            self.transport.write(b"".join(data))

    def _send(self, n: int) -> None:
        start, frames = self.next, self.frames
        size = frames.frame_size
        self.transport.write(frames.ring[start * size:(start + n) * size])
        self.next = (start + n) % frames.count
        self.sent.extend(repeat(time.perf_counter(), n))
        self.sent_total += n

    def _echoes(self, n: int) -> None:
        now = time.perf_counter()
        sent = self.sent
        if self.bench.measuring:
            rtts = self.bench.rtts
            for _ in range(n):
                rtts.append(now - sent.popleft())
        else:
            for _ in range(n):
                sent.popleft()
        if self.bench.running:
            self._send(n)

    def data_received(self, data: bytes) -> None:
        if self.counting:  # the measured path: no parsing
            self.received += len(data)
            done = self.received // self.frames.reply_size
            n = done - self.echoed
            if n:
                if n > len(self.sent):
                    self._fail(f"{n} echoes for {len(self.sent)} messages in flight")
                    return
                self.echoed = done
                self._echoes(n)
            return
        if self.opened.done():
            self.received += len(data)
        self.ws.receive_data(data)
        n = 0
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if self.opened.done():  # the opener gave up waiting (timed out): drop this one
                    self.transport.abort()
                    return
                if event.status_code != 101:
                    self.opened.set_exception(RuntimeError(f"handshake answered {event.status_code}"))
                    return
                self.opened.set_result(None)
                self._send(self.in_flight)
            elif event.opcode is Opcode.TEXT and event.fin:
                expected = self.frames.payloads[(self.echoed + n) % self.frames.count]
                if event.data != expected:
                    self._fail(f"echo {self.echoed + n} differs from the message sent")
                    return
                n += 1
            elif event.opcode is not Opcode.PING and event.opcode is not Opcode.PONG:
                self._fail(f"unexpected frame {event.opcode.name} {bytes(event.data[:40])!r}")
                return
        self._flush()  # websockets' own answers (pongs), whole frames between ours
        if n:
            if n > len(self.sent):
                self._fail(f"{n} echoes for {len(self.sent)} messages in flight")
                return
            self.checked += n
            self.echoed += n
            if not self.first_echo.done():
                self.first_echo.set_result(None)
            self._echoes(n)
            if self.check is not None and self.checked >= self.check:
                # the bytes of a frame in progress are in websockets' buffer and in self.received alike
                if self.received - self.echoed * self.frames.reply_size >= self.frames.reply_size:
                    self._fail("byte count and parsed echoes disagree")
                    return
                self.counting = True

    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = why
        self.transport.abort()

    def connection_lost(self, exc) -> None:
        if self.bench.running and self.error is None and self.opened.done():
            self.error = f"connection lost while running ({exc!r})"
        for fut in (self.opened, self.first_echo):
            if not fut.done():
                fut.set_exception(ConnectionError(self.error or "connection lost"))
                fut.exception()  # retrieved here: the opener may have stopped waiting already


@dataclass
class Frames:
    """``count`` pre-masked text frames of one payload size, serialized once by websockets, in a ring."""

    size: int
    count: int = IN_FLIGHT

    def __post_init__(self) -> None:
        # distinct payloads, so an echo out of order or from the wrong message fails the check
        self.payloads = [(f"{i:02d}" + "x" * self.size)[:self.size].encode() for i in range(self.count)]
        frames = [Frame(Opcode.TEXT, p).serialize(mask=True) for p in self.payloads]  # a random key each
        self.frame_size = len(frames[0])
        assert all(len(f) == self.frame_size for f in frames)
        self.ring = b"".join(frames) * 2  # n <= count frames from any start are one slice
        self.reply_size = len(Frame(Opcode.TEXT, self.payloads[0]).serialize(mask=False))  # 2+32, 4+4096


class EchoFailed(Exception):
    """A run whose connections could not open or failed the first checks."""


@dataclass
class Bench:
    running: bool = True
    measuring: bool = False

    def __post_init__(self) -> None:
        self.rtts: list[float] = []


async def _open(loop, port: int, frames: Frames, in_flight: int, bench: Bench, sem: asyncio.Semaphore,
                deflate: bool = False) -> EchoClient:
    async with sem:
        _, client = await loop.create_connection(
            lambda: EchoClient(f"ws://{HOST}:{port}/ws", frames, in_flight, bench, deflate), HOST, port)
        await asyncio.wait_for(client.opened, 10)
        await asyncio.wait_for(client.first_echo, 10)
        return client


async def echo_run(port: int, size: int, seconds: float, server_pids: list[int] | None = None) -> dict:
    """One measured window; also checks every connection's stream (see ``EchoClient``) once it drains."""
    loop = asyncio.get_running_loop()
    bench = Bench()
    frames = Frames(size)
    sem = asyncio.Semaphore(CONNECTIONS)
    opened = await asyncio.gather(*(_open(loop, port, frames, IN_FLIGHT, bench, sem) for _ in range(CONNECTIONS)),
                                  return_exceptions=True)
    clients = [c for c in opened if isinstance(c, EchoClient)]
    if len(clients) < CONNECTIONS:  # e.g. a close frame instead of the first echoes: no figures
        for c in clients:
            c.transport.abort()
        failed = [r for r in opened if not isinstance(r, EchoClient)]
        raise EchoFailed(f"{len(failed)} of {CONNECTIONS} connections failed the opening checks: {failed[0]!r}")
    await asyncio.sleep(WARMUP)
    server_pids = server_pids or []
    server_cpu0 = procstats.tree_cpu_seconds(server_pids)
    cpu0 = time.process_time()
    bench.measuring = True
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    bench.measuring = False
    elapsed = time.perf_counter() - t0
    client_cpu = (time.process_time() - cpu0) / elapsed
    server_cpu = (procstats.tree_cpu_seconds(server_pids) - server_cpu0) / elapsed
    bench.running = False
    # let what is in flight come back (bounded), then check each stream: every echo counted, whole
    # frames only (no close frame, no stray bytes), the first ones parsed by websockets
    deadline = time.perf_counter() + 5.0
    while time.perf_counter() < deadline and any(c.sent and c.error is None for c in clients):
        await asyncio.sleep(0.02)
    errors = []
    for c in clients:
        if c.error is None and c.sent:
            c.error = f"{len(c.sent)} echoes missing"
        if c.error is None and c.received != c.echoed * frames.reply_size:
            c.error = f"{c.received} bytes is not {c.echoed} echoes of {frames.reply_size} bytes"
        if c.error is None and c.checked < min(c.check or 0, c.echoed):
            c.error = f"only {c.checked} echoes checked"
        if c.error is not None:
            errors.append(c.error)
        c.transport.abort()
    rtts = sorted(bench.rtts)
    n = len(rtts)
    return {
        "messages_per_s": n / elapsed,
        "p50_ms": rtts[n // 2] * 1000 if n else None,
        "p99_ms": rtts[min(n - 1, int(n * 0.99))] * 1000 if n else None,
        "messages": n,
        "client_cpu": client_cpu,
        "server_cpu": server_cpu,
        "checked": sum(c.checked for c in clients),
        "echoed": sum(c.echoed for c in clients),
        "errors": sorted(set(errors))[:3],
        "loadavg": procstats.loadavg()[0],
    }


async def idle_run(server: ServerProcess, count: int, deflate: bool = False) -> dict:
    loop = asyncio.get_running_loop()
    pids = server.pids(refresh=True)
    await asyncio.sleep(0.5)
    before = procstats.tree_kb(pids, "VmRSS")
    bench = Bench(running=False)
    frames = Frames(5)
    sem = asyncio.Semaphore(256)
    results = await asyncio.gather(*(_open(loop, server.port, frames, 1, bench, sem, deflate) for _ in range(count)),
                                   return_exceptions=True)
    clients = [r for r in results if isinstance(r, EchoClient)]
    await asyncio.sleep(2.0)
    after = procstats.tree_kb(server.pids(refresh=True), "VmRSS")
    still_open = sum(1 for c in clients if not c.transport.is_closing())
    for c in clients:
        c.transport.abort()
    opened = len(clients)
    return {"opened": opened, "still_open": still_open, "rss_before_kb": before, "rss_after_kb": after,
            "kib_per_socket": (after - before) / opened if opened else None,
            "errors": sorted({repr(r)[:80] for r in results if not isinstance(r, EchoClient)})[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(s.name for s in SERVERS))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--skip-echo", action="store_true")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--idle-deflate", action="store_true",
                        help="also measure idle memory with permessage-deflate offered (websockets' default offer)")
    parser.add_argument("--baseline", metavar="REF",
                        help="also run aioserve as at this git ref (e.g. main), first in the server order")
    parser.add_argument("--out", default=str(harness.RESULTS_DIR / "websocket"))
    args = parser.parse_args()
    harness.install_cleanup()
    nofile = harness.raise_nofile()
    harness.pin_self(harness.CLIENT_CPU)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    wanted = args.servers.split(",")
    specs = [s for s in SERVERS if s.name in wanted]
    if args.baseline:
        specs.insert(0, baseline_spec(args.baseline))
    results: dict = {"nofile": nofile, "echo": {}, "idle": {}, "idle_deflate": {}, "skipped": {}}
    for spec in list(specs):
        missing = spec.missing()
        if missing:
            results["skipped"][spec.name] = f"not installed: {', '.join(missing)}"
            specs.remove(spec)
    idle_count = min(args.idle, nofile - 200)
    for r in range(args.rounds):
        order = specs if r % 2 == 0 else list(reversed(specs))
        for spec in order:
            server = ServerProcess(spec)
            try:
                server.start()
            except ServerError as exc:
                results["skipped"][spec.name] = str(exc)[:300]
                continue
            try:
                if not args.skip_echo:
                    for size in SIZES:
                        try:
                            figures = asyncio.run(echo_run(server.port, size, args.seconds, server.pids(refresh=True)))
                        except EchoFailed as exc:
                            results["skipped"][f"{spec.name} {size} B, round {r}"] = str(exc)[:300]
                            print(f"round {r} {spec.name} {size}B: FAILED {exc}", flush=True)
                            continue
                        results["echo"].setdefault(spec.name, {}).setdefault(str(size), []).append(figures)
                        print(f"round {r} {spec.name} {size}B: {figures['messages_per_s']:.0f} msg/s "
                              f"p50 {figures['p50_ms']:.2f} ms p99 {figures['p99_ms']:.2f} ms "
                              f"(client CPU {figures['client_cpu']:.0%}, server CPU {figures['server_cpu']:.0%}, "
                              f"{figures['checked']} echoes parsed, load {figures['loadavg']:.1f})"
                              + (f" ERRORS {figures['errors']}" if figures["errors"] else ""), flush=True)
                if not args.skip_idle and r == 0:
                    server.stop()
                    server = ServerProcess(spec)  # a fresh process: memory from the echo runs is not counted
                    server.start()
                    idle = asyncio.run(idle_run(server, idle_count))
                    results["idle"][spec.name] = idle
                    print(f"{spec.name} idle: {idle['kib_per_socket']:.1f} KiB per WebSocket "
                          f"({idle['opened']} opened, {idle['still_open']} still open)", flush=True)
                    if args.idle_deflate:
                        server.stop()
                        server = ServerProcess(spec)
                        server.start()
                        idle = asyncio.run(idle_run(server, idle_count, deflate=True))
                        results["idle_deflate"][spec.name] = idle
                        print(f"{spec.name} idle, deflate offered: {idle['kib_per_socket']:.1f} KiB per WebSocket "
                              f"({idle['opened']} opened, {idle['still_open']} still open)", flush=True)
            finally:
                server.stop()
    harness.kill_all()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(table(results, idle_count))
    print(table(results, idle_count))


def table(results: dict, idle_count: int) -> str:
    lines = ["| server | 32 B msg/s | p50 / p99 ms | CPU server / client | 4 KiB msg/s | p50 / p99 ms "
             "| CPU server / client | KiB per idle WebSocket | same, deflate offered |",
             "|---|---|---|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(list(results["echo"]) + list(results["idle"])))
    for name in names:
        cells = [name]
        for size in map(str, SIZES):
            runs = results["echo"].get(name, {}).get(size, [])
            if runs:
                cells.append(f"{statistics.median(r['messages_per_s'] for r in runs):,.0f}")
                cells.append(f"{statistics.median(r['p50_ms'] for r in runs):.2f} / "
                             f"{statistics.median(r['p99_ms'] for r in runs):.2f}")
                cells.append(f"{statistics.median(r.get('server_cpu', 0) for r in runs):.0%} / "
                             f"{statistics.median(r['client_cpu'] for r in runs):.0%}")
            else:
                cells += ["-", "-", "-"]
        for key in ("idle", "idle_deflate"):
            idle = results[key].get(name)
            cells.append(f"{idle['kib_per_socket']:.1f} ({idle['opened']} open)" if idle and idle["opened"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    loads = [r["loadavg"] for sizes in results["echo"].values() for runs in sizes.values() for r in runs
             if "loadavg" in r]
    if loads:
        lines.append(f"\nMedians of {max(len(runs) for sizes in results['echo'].values() for runs in sizes.values())} "
                     f"rounds; 1-minute load average at the end of each run: {min(loads):.1f} to {max(loads):.1f} "
                     f"(2 CPUs). CPU: server (CPU 0) / load generator (CPU 1) over the measured window.")
        errors = sorted({e for sizes in results["echo"].values() for runs in sizes.values() for r in runs
                         for e in r.get("errors", [])})
        lines.append(f"Stream checks: {'all passed' if not errors else 'FAILED: ' + '; '.join(errors[:5])}.")
    for name, why in results["skipped"].items():
        lines.append(f"\n{name}: skipped ({why})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
