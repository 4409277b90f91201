"""Overload benchmark: goodput and tail latency at 0.5x, 1x, 2x and 4x of each server's capacity.

    python benchmarks/overload.py run [--duration 10] [--servers aioserve-shed,...]   # everything
    python benchmarks/overload.py serve KIND PORT                                     # one server
    python benchmarks/overload.py load --port P --rate R --duration S                 # one load run
    python benchmarks/overload.py run --servers aioserve-deadline,aioserve-vary,aioserve-mixed  # issue 15
    python benchmarks/overload.py sim [--duration 10]    # the same table from a simulated server
    python benchmarks/overload.py run --servers aioserve-asgi,uvicorn-starlette          # issue 12: Starlette on both
    python benchmarks/overload.py run --servers aioserve-asgi-cli,uvicorn-starlette      # ... aioserve from its CLI

Issue 15 (admission control) scenarios, all with only ``App(deadline=...)``, no limit, no flag:
``aioserve-deadline`` (1 ms route, 50 ms), ``aioserve-vary`` (service uniform 0.5-3 ms, 50 ms) and
``aioserve-mixed`` (``/work`` 1 ms / 50 ms and ``/slow`` 20 ms / 500 ms; each route offered half of
the server at 1x: the load generator alternates paths in proportion, and the table has one row per
route with its goodput as a share of its half of capacity). ``sim`` runs the same scenarios through
``aioserve.admission`` and ``benchmarks/loopsim.py`` (no sockets, a fake clock).

Setup (kept fixed; the results depend on it):
* The route burns CPU_MS (1 ms) of CPU in a busy loop and returns a small JSON body.
* One server process (one worker) pinned to CPU 0 (``taskset -c 0``); the load generator pinned to
  CPU 1. Both on 127.0.0.1.
* Capacity: closed loop, 8 connections, 200 answers only, 3 s, answers per second (each server measured itself).
* Load: open loop. Requests are due on a fixed timetable (rate R, evenly spaced) whatever the
  answers; latency is measured from when a request was *due*, so a client that could not send in
  time is charged for it (no coordinated omission). 256 keep-alive connections are opened before the
  run; when all are busy, a new connection is opened for the request. A request not answered in
  TIMEOUT (1 s) counts as a timeout and its connection is dropped.
* Goodput: 200 answers received within DEADLINE (50 ms) of being due, per second of the run.
* Every server is restarted for every load level, so a backlog left by one run does not leak into
  the next; after each run one fresh client measures how long a new connection waits for an answer.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CPU_MS = 1.0
DEADLINE = 0.050
TIMEOUT = 1.0
CONNECTIONS = 256
LIMIT_IN_FLIGHT = int(os.environ.get("OVERLOAD_LIMIT", "16"))
SERVERS = ("aioserve-shed", "aioserve-deadline", "aioserve-plain", "uvicorn-starlette", "sanic")
LOADS = (0.5, 1.0, 2.0, 4.0)


SLOW_MS, SLOW_DEADLINE = 20.0, 0.5
VARY_MS = (0.5, 3.0)


def burn(ms: float = CPU_MS) -> None:
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass


# -- servers ------------------------------------------------------------------------------------------
def serve(kind: str, port: int) -> None:
    if kind.startswith("aioserve") and not kind.startswith("aioserve-asgi"):  # native apps (the ASGI ones below)
        sys.path.insert(0, str(ROOT))
        from aioserve import App

        if kind in ("aioserve-vary", "aioserve-mixed"):
            app = App(deadline=DEADLINE, server_timing=True)
        elif kind == "aioserve-shed":
            app = App(deadline=DEADLINE, limit_in_flight=LIMIT_IN_FLIGHT, server_timing=True)
        elif kind == "aioserve-deadline":
            app = App(deadline=DEADLINE, server_timing=True)
        else:
            app = App()

        if kind != "aioserve-plain":
            app.enable_metrics("/metrics")

        if kind == "aioserve-vary":
            import random

            @app.get("/work")
            async def vary(request):
                burn(random.uniform(*VARY_MS))
                return {"ok": True}
        else:
            @app.get("/work")
            async def work(request):
                burn()
                return {"ok": True}

        if kind == "aioserve-mixed":
            @app.get("/slow", deadline=SLOW_DEADLINE)
            async def slow(request):
                burn(SLOW_MS)
                return {"ok": True}

        app.run(host="127.0.0.1", port=port, access_log=False, log_level="warning", loop="uvloop",
                accept_batch=int(os.environ.get("OVERLOAD_ACCEPT_BATCH", "64")))
    elif kind == "uvicorn-starlette":
        import uvicorn

        uvicorn.run(starlette_work_app(), host="127.0.0.1", port=port, loop="uvloop",
                    http="httptools", log_level="warning", access_log=False)
    elif kind == "aioserve-asgi":  # the same Starlette app on aioserve: `--deadline 0.05 --limit-in-flight 16`
        sys.path.insert(0, str(ROOT))
        from aioserve import run

        run(starlette_work_app(), host="127.0.0.1", port=port, access_log=False, log_level="warning", loop="uvloop",
            deadline=DEADLINE, limit_in_flight=LIMIT_IN_FLIGHT,
            accept_batch=int(os.environ.get("OVERLOAD_ACCEPT_BATCH", "64")))
    elif kind == "aioserve-asgi-cli":  # the same, through the command line a user would type
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "aioserve", "benchmarks.overload:starlette_work_app",
                                  "--factory", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
                                  "--log-level", "warning", "--loop", "uvloop", "--deadline", str(DEADLINE),
                                  "--limit-in-flight", str(LIMIT_IN_FLIGHT)])
    elif kind == "sanic":
        from sanic import Sanic
        from sanic.response import json as sjson

        app = Sanic("overload")

        @app.get("/work")
        async def work(request):
            burn()
            return sjson({"ok": True})

        app.run(host="127.0.0.1", port=port, single_process=True, access_log=False, debug=False,
                motd=False)
    else:
        raise SystemExit(f"unknown server {kind}")


def starlette_work_app():
    """The Starlette app of the uvicorn and aioserve-asgi rows: one route that burns CPU_MS."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def work(request):
        burn()
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/work", work)])


# -- load generator -------------------------------------------------------------------------------
REQUEST = b"GET /work HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def request_for(path: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode()


def deadline_of(path: str) -> float:
    return SLOW_DEADLINE if path == "/slow" else DEADLINE


class Conn(asyncio.Protocol):
    def __init__(self, gen: Load) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.due = 0.0  # when the request in progress was due; 0 when idle
        self.alive = True
        self.path = "/work"  # of the request in progress (mixed load: counted per route)

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, due: float, path: str = "/work") -> None:
        self.due = due
        self.path = path
        self.transport.write(REQUEST if path == "/work" else request_for(path))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].lower()  # bytes, in C: no per-line Python work on the hot path
            i = head.find(b"content-length:")
            length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
            if len(buf) < end + 4 + length:
                break
            buf = buf[end + 4 + length:]
            status = int(head[9:12])
            timing = None
            if status == 503:
                j = head.find(b"server-timing:")
                if j >= 0:
                    timing = head[j + 14:head.find(b"\r\n", j)].decode()
            if self.due:
                self.gen.answered(self, status, timing)
            if b"connection: close" in head:
                self.alive = False
                self.transport.close()
                break
            if self.due == 0.0 and self.alive:
                self.gen.idle.append(self)
        self.buf = buf

    def connection_lost(self, exc):
        self.alive = False
        if self.due:
            self.gen.failed(self, "reset")


class Load:
    def __init__(self, port: int, rate: float, duration: float, mix: list[tuple[str, float]] | None = None) -> None:
        self.port = port
        self.rate = rate
        # Mixed load: (path, rate) streams, each on its own timetable, merged; counted per path.
        self.mix = mix or [("/work", rate)]
        self.by_path: dict[str, dict] = {p: {"sent": 0, "ok": [], "shed": 0, "timeout": 0, "reset": 0}
                                         for p, _ in self.mix}
        self.duration = duration
        self.loop = asyncio.get_running_loop()
        self.idle: list[Conn] = []
        self.busy: set[Conn] = set()
        self.ok: list[float] = []  # latency of 200s
        self.shed: list[float] = []  # latency of 503s
        self.shed_server_ms: list[float] = []
        self.other = 0
        self.errors = {"timeout": 0, "reset": 0, "connect": 0}
        self.opened = 0
        self.connecting = 0
        self.send_late: list[float] = []  # how late the generator itself sent (its own saturation)

    async def open(self) -> Conn | None:
        self.connecting += 1
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: Conn(self), "127.0.0.1", self.port), TIMEOUT * 5)
            self.opened += 1
            return conn
        except (OSError, asyncio.TimeoutError):
            return None
        finally:
            self.connecting -= 1

    def answered(self, conn: Conn, status: int, timing: str | None) -> None:
        latency = self.loop.time() - conn.due
        conn.due = 0.0
        self.busy.discard(conn)
        mine = self.by_path[conn.path]
        if status == 200:
            self.ok.append(latency)
            mine["ok"].append(latency)
        elif status == 503:
            mine["shed"] += 1
            self.shed.append(latency)
            if timing and "dur=" in timing:
                self.shed_server_ms.append(float(timing.split("dur=")[1].split(";")[0]))
        else:
            self.other += 1

    def failed(self, conn: Conn, why: str) -> None:
        conn.due = 0.0
        self.busy.discard(conn)
        self.errors[why] += 1
        if why in ("timeout", "reset"):
            self.by_path[conn.path][why] += 1

    async def dispatch(self, due: float, path: str = "/work") -> None:
        self.by_path[path]["sent"] += 1
        while self.idle:
            conn = self.idle.pop()
            if conn.alive:
                break
        else:
            conn = await self.open()
            if conn is None:
                self.errors["connect"] += 1
                return
        self.busy.add(conn)
        self.send_late.append(self.loop.time() - due)
        conn.send(due, path)

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            limit = self.loop.time() - TIMEOUT
            for conn in [c for c in self.busy if c.due and c.due < limit]:
                self.failed(conn, "timeout")
                conn.alive = False
                conn.transport.abort()

    async def run(self) -> dict:
        conns = await asyncio.gather(*(self.open() for _ in range(CONNECTIONS)))
        self.idle = [c for c in conns if c is not None]
        sweeper = self.loop.create_task(self.sweep())
        start = self.loop.time() + 0.05
        # The timetable: each path's requests evenly spaced at its rate, merged in time order, so a
        # mixed load alternates paths in proportion to their rates.
        table = sorted((k / rate, path) for path, rate in self.mix for k in range(int(rate * self.duration)))
        total = len(table)
        i = 0
        pending = set()
        while i < total:
            now = self.loop.time()
            while i < total and start + table[i][0] <= now:
                due, path = start + table[i][0], table[i][1]
                if self.idle:
                    await self.dispatch(due, path)  # does not suspend when a connection is idle
                else:
                    task = self.loop.create_task(self.dispatch(due, path))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                i += 1
            if i < total:
                await asyncio.sleep(max(0.0, start + table[i][0] - self.loop.time()))
        end = self.loop.time() + TIMEOUT * 5 + 1
        while (self.busy or pending) and self.loop.time() < end:
            await asyncio.sleep(0.01)
        sweeper.cancel()
        # How long does a brand-new client wait now that the load has stopped?
        t = time.perf_counter()
        probe = None
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 10)
            w.write(REQUEST)
            await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            probe = time.perf_counter() - t
            w.close()
        except (OSError, asyncio.TimeoutError):
            probe = None
        for c in list(self.idle) + list(self.busy):
            if c.transport is not None:
                c.transport.abort()
        summary = self.summary(total, probe)
        summary["server_metrics"] = await self.scrape()
        return summary

    async def scrape(self) -> dict:
        """aioserve's own view, from /metrics: shed and deadline counters, worst loop lag."""
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 5)
            w.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = (await asyncio.wait_for(r.read(), 5)).decode("latin-1")
            w.close()
        except (OSError, asyncio.TimeoutError):
            return {}
        if " 200 " not in data.split("\r\n", 1)[0]:
            return {}
        out = {}
        for line in data.split("\r\n\r\n", 1)[1].splitlines():
            if line.startswith(("aioserve_requests_shed_total", "aioserve_deadline_missed_total",
                                "aioserve_event_loop_lag_max_seconds", "aioserve_admission_limit",
                                'aioserve_requests_total{route="/work"')):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def summary(self, total: int, probe: float | None) -> dict:
        ok = sorted(self.ok)

        def pct(xs, q):
            return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else None

        shed_server = sorted(self.shed_server_ms)
        routes = {}
        for path, d in self.by_path.items():
            lat = sorted(d["ok"])
            good = sum(1 for x in lat if x <= deadline_of(path))
            routes[path] = {"sent": d["sent"], "ok": len(lat), "ok_in_deadline": good,
                            "goodput": good / self.duration, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
                            "p999_ms": pct(lat, 0.999), "shed": d["shed"], "timeout": d["timeout"],
                            "reset": d["reset"], "deadline": deadline_of(path)}
        return {"routes": routes,
            "rate": self.rate, "duration": self.duration, "sent": total,
            "ok": len(ok), "ok_in_deadline": sum(1 for x in ok if x <= DEADLINE),
            "goodput": sum(1 for x in ok if x <= DEADLINE) / self.duration,
            "p50_ms": pct(ok, 0.5), "p99_ms": pct(ok, 0.99), "p999_ms": pct(ok, 0.999),
            "shed": len(self.shed), "shed_p99_ms": pct(sorted(self.shed), 0.99),
            "shed_server_p99_ms": shed_server[min(len(shed_server) - 1, int(0.99 * len(shed_server)))] if shed_server else None,
            "other_status": self.other, **self.errors, "connections_opened": self.opened,
            "new_client_wait_s": probe,
            "client_send_late_p99_ms": pct(sorted(self.send_late), 0.99),
        }


async def closed_loop(port: int, conns: int = 8, duration: float = 3.0, path: str = "/work") -> float:
    done = 0
    stop = False

    async def worker():
        nonlocal done
        r, w = await asyncio.open_connection("127.0.0.1", port)
        while not stop:
            w.write(request_for(path))
            head = await r.readuntil(b"\r\n\r\n")
            n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await r.readexactly(n)
            if head.startswith(b"HTTP/1.1 200"):
                done += 1
        w.close()

    tasks = [asyncio.create_task(worker()) for _ in range(conns)]
    await asyncio.sleep(0.5)  # warm up
    start_done, t = done, time.perf_counter()
    await asyncio.sleep(duration)
    rate = (done - start_done) / (time.perf_counter() - t)
    stop = True
    await asyncio.wait(tasks, timeout=3)
    for task in tasks:
        task.cancel()
    return rate


def run_loop(coro):
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# -- orchestration --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(kind: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, __file__, "serve", kind, str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(REQUEST)
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return proc, port
        except OSError:
            time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError(f"{kind} did not start")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def client(args: list[str], timeout: float) -> dict:
    out = subprocess.run(["taskset", "-c", "1", sys.executable, __file__, *args], capture_output=True,
                         timeout=timeout, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_mixed(kind: str, duration: float, loads: list[float]) -> list[dict]:
    """Fast and slow routes, each offered half of what the server answers of it alone at 1x; one
    result row per route, its goodput (within its own deadline) against its share of capacity."""
    caps = {}
    for path in ("/work", "/slow"):
        proc, port = start_server(kind)
        try:
            caps[path] = client(["capacity", "--port", str(port), "--path", path], 30)["capacity"]
        finally:
            stop_server(proc)
    print(f"{kind}: capacity " + ", ".join(f"{p} {c:.0f} req/s" for p, c in caps.items()), flush=True)
    results = []
    for x in loads:
        mix = ",".join(f"{p}:{0.5 * c * x:.1f}" for p, c in caps.items())
        proc, port = start_server(kind)
        try:
            r = client(["load", "--port", str(port), "--rate", "1", "--mix", mix, "--duration", str(duration)],
                       duration + 60)
        finally:
            stop_server(proc)
        for path, rr in r["routes"].items():
            row = dict(r, **rr, server=f"{kind} {path}", capacity=0.5 * caps[path], load=x,
                       rate=0.5 * caps[path] * x)
            row.pop("routes")
            results.append(row)
            print(json.dumps(row), flush=True)
    return results


def run_all(servers: list[str], duration: float, loads: list[float]) -> list[dict]:
    results = []
    for kind in servers:
        if kind == "aioserve-mixed":
            results.extend(run_mixed(kind, duration, loads))
            continue
        proc, port = start_server(kind)
        try:
            capacity = client(["capacity", "--port", str(port)], 30)["capacity"]
        finally:
            stop_server(proc)
        print(f"{kind}: capacity {capacity:.0f} req/s", flush=True)
        for x in loads:
            proc, port = start_server(kind)
            try:
                rate = capacity * x
                r = client(["load", "--port", str(port), "--rate", f"{rate:.1f}", "--duration", str(duration)],
                           duration + 60)
            finally:
                stop_server(proc)
            r.update(server=kind, capacity=capacity, load=x)
            results.append(r)
            print(json.dumps(r), flush=True)
    return results


def fmt(v, spec="{:.1f}"):
    return "-" if v is None else spec.format(v)


def write_report(results: list[dict], outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "overload.json").write_text(json.dumps(results, indent=1))
    lines = [
        "| server | load | offered/s | goodput/s (within deadline) | goodput % of capacity (mixed: of its share) | p50 ms | p99 ms | p99.9 ms "
        "| 503 | timeouts | resets | new client wait s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['server']} | {r['load']}x | {r['rate']:.0f} | {r['goodput']:.0f} | "
            f"{100 * r['goodput'] / r['capacity']:.0f}% | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | "
            f"{fmt(r['p999_ms'])} | {r['shed']} | {r['timeout']} | {r['reset'] + r['connect']} | "
            f"{fmt(r['new_client_wait_s'], '{:.3f}')} |")
    caps = {r["server"]: r["capacity"] for r in results}
    lines.append("")
    lines.append("Capacity (closed loop, 8 connections): " + ", ".join(f"{k} {v:.0f}/s" for k, v in caps.items()))
    shed = [r for r in results if r.get("shed_server_p99_ms") is not None]
    if shed:
        lines.append("Server time of shed answers (Server-Timing, p99): " + ", ".join(
            f"{r['server']} {r['load']}x {r['shed_server_p99_ms']:.3f} ms" for r in shed))
    (outdir / "overload.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind in dict.fromkeys(r["server"] for r in results):
        rs = [r for r in results if r["server"] == kind]
        xs = [r["load"] for r in rs]
        ax1.plot(xs, [100 * r["goodput"] / r["capacity"] for r in rs], marker="o", label=kind)
        ax2.plot(xs, [r["p99_ms"] or float("nan") for r in rs], marker="o", label=kind)
    ax1.set(xlabel="offered load (x capacity)", ylabel="goodput, % of capacity (answers <= 50 ms)",
            xscale="log", ylim=(0, 110))
    ax2.set(xlabel="offered load (x capacity)", ylabel="p99 of answered requests (ms)", xscale="log",
            yscale="log")
    ax2.axhline(DEADLINE * 1000, color="grey", ls="--", lw=1)
    for ax in (ax1, ax2):
        ax.minorticks_off()
        ax.set_xticks(LOADS, [f"{x}x" for x in LOADS])
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle(f"1 ms CPU per request, one worker, open loop, deadline {int(DEADLINE * 1000)} ms")
    fig.tight_layout()
    fig.savefig(outdir / "overload.png", dpi=110)


def simulate_table(duration: float, loads: list[float], seed: int = 1) -> str:
    """The issue-15 scenarios through aioserve.admission and a simulated one-worker server."""
    import random

    sys.path.insert(0, str(ROOT))
    from aioserve.admission import Admission
    from benchmarks import loopsim as ls

    lines = ["| scenario | route | load | offered/s | goodput/s | goodput % of capacity (share) | p50 ms | "
             "p99 ms | max ms | 503 | late |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def row(name, route, x, res, budget, cap):
        r = res.summary(budget, duration)
        lines.append(f"| {name} | {route} | {x}x | {r['sent'] / duration:.0f} | {r['goodput']:.0f} | "
                     f"{100 * r['goodput'] / cap:.0f}% | {ls.fmt(r['p50_ms'])} | {ls.fmt(r['p99_ms'])} | "
                     f"{ls.fmt(r['max_ms'])} | {r['shed'] + r['expired']} | {r['late']} |")

    for x in loads:
        cap = ls.capacity(CPU_MS / 1000)
        arr = ls.even("/work", cap * x, duration, DEADLINE, ls.constant(CPU_MS / 1000))
        row("1 ms, admission", "/work", x, ls.simulate(arr, Admission())["/work"], DEADLINE, cap)
        row("1 ms, deadline only", "/work", x, ls.simulate(arr, ls.AdmitAll())["/work"], DEADLINE, cap)
    for x in loads:
        rng = random.Random(seed)
        mean = sum(VARY_MS) / 2 / 1000
        cap = ls.capacity(mean)
        arr = ls.even("/work", cap * x, duration, DEADLINE, ls.uniform(VARY_MS[0] / 1000, VARY_MS[1] / 1000, rng))
        row("0.5-3 ms, admission", "/work", x, ls.simulate(arr, Admission())["/work"], DEADLINE, cap)
    for x in loads:
        capf, caps = ls.capacity(CPU_MS / 1000), ls.capacity(SLOW_MS / 1000)
        arr = ls.merge(ls.even("/work", 0.5 * capf * x, duration, DEADLINE, ls.constant(CPU_MS / 1000)),
                       ls.even("/slow", 0.5 * caps * x, duration, SLOW_DEADLINE, ls.constant(SLOW_MS / 1000),
                               start=0.0003))
        res = ls.simulate(arr, Admission())
        row("mixed, admission", "/work (1 ms, 50 ms)", x, res["/work"], DEADLINE, 0.5 * capf)
        row("mixed, admission", "/slow (20 ms, 500 ms)", x, res["/slow"], SLOW_DEADLINE, 0.5 * caps)
    lines.append("")
    lines.append(f"Simulated server: parse {ls.PARSE * 1e6:.0f} us a head, {ls.SHED * 1e6:.0f} us a 503, "
                 f"{ls.OVERHEAD * 1e6:.0f} us a answer beyond the handler; arrivals evenly spaced; {duration:g} s "
                 "per row. Capacity = 1 / (service + costs); mixed: share = half of each route's capacity.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("kind")
    s.add_argument("port", type=int)
    c = sub.add_parser("capacity")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--path", default="/work")
    ld = sub.add_parser("load")
    ld.add_argument("--port", type=int, required=True)
    ld.add_argument("--rate", type=float, required=True)
    ld.add_argument("--duration", type=float, default=10.0)
    ld.add_argument("--mix", default=None, help="PATH:RATE,... alternate paths in proportion (mixed app)")
    r = sub.add_parser("run")
    r.add_argument("--duration", type=float, default=10.0)
    r.add_argument("--servers", default=",".join(SERVERS))
    r.add_argument("--loads", default=",".join(map(str, LOADS)))
    r.add_argument("--out", default=str(HERE / "results"))
    sm = sub.add_parser("sim", help="the issue-15 table from a simulated server (aioserve.admission)")
    sm.add_argument("--duration", type=float, default=10.0)
    sm.add_argument("--loads", default=",".join(map(str, LOADS)))
    rep = sub.add_parser("report", help="rewrite the table and chart from results/overload.json")
    rep.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()
    if args.cmd == "serve":
        serve(args.kind, args.port)
    elif args.cmd == "capacity":
        print(json.dumps({"capacity": run_loop(closed_loop(args.port, path=args.path))}))
    elif args.cmd == "load":
        async def go():
            mix = [(p, float(r)) for p, r in (m.rsplit(":", 1) for m in args.mix.split(","))] if args.mix else None
            return await Load(args.port, args.rate, args.duration, mix).run()
        print(json.dumps(run_loop(go())))
    elif args.cmd == "sim":
        print(simulate_table(args.duration, [float(x) for x in args.loads.split(",")]))
    elif args.cmd == "report":
        write_report(json.loads((Path(args.out) / "overload.json").read_text()), Path(args.out))
    else:
        results = run_all(args.servers.split(","), args.duration, [float(x) for x in args.loads.split(",")])
        write_report(results, Path(args.out))


if __name__ == "__main__":
    main()
