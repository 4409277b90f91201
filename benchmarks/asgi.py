"""The same Starlette app and the same FastAPI app (``async def`` endpoints) under aioserve, uvicorn
(httptools, uvloop), Granian (``--interface asgi``) and Hypercorn (uvloop worker).

    python -m benchmarks.asgi [--rounds 3] [--duration 5] [--connections 1,64,256] [--servers ...] [--apps ...]

Scenarios: ``plaintext``, ``json``, ``users`` (a path parameter, behind 100 other parameterised
routes) and ``echo`` (a 1 KiB POST echoed back): the harness's wrk scripts. One worker each, access
log off. Every server runs at once, pinned to CPU 0 (``taskset``); wrk (one thread) runs on CPU 1.
Rounds alternate: each round visits every (app, scenario, connections) item and, for each, every
server, in an order rotated per item, so load from elsewhere falls on all of them alike. The table
shows the median req/s over rounds, the ratio to uvicorn and to Granian, p50/p99 from the median
round and the 1-minute load average seen during the runs. Results: printed and written to
``benchmarks/results/asgi.md`` (and ``asgi.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import CLIENT_CPU, SERVER_CPU, can_pin, free_port, http_request, install_cleanup, kill_all, run_wrk, _LIVE
from .servers.payload import ECHO_BODY

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
APPS = {"starlette": "benchmarks.servers.starlette_app:app", "fastapi": "benchmarks.servers.fastapi_app:app"}
SERVERS = ("aioserve", "uvicorn", "granian", "hypercorn")
SCENARIOS = ("plaintext", "json", "users", "echo")


def server_argv(server: str, target: str, port: int) -> list[str]:
    py = sys.executable
    if server == "aioserve":
        return [py, "-m", "aioserve", target, "--host", HOST, "--port", str(port), "--loop", "uvloop",
                "--no-access-log", "--log-level", "warning"]
    if server == "uvicorn":
        return [py, "-m", "uvicorn", target, "--host", HOST, "--port", str(port), "--loop", "uvloop", "--http",
                "httptools", "--no-access-log", "--log-level", "warning", "--workers", "1"]
    if server == "granian":
        return [py, "-m", "granian", "--interface", "asgi", "--host", HOST, "--port", str(port), "--workers", "1",
                "--loop", "uvloop", "--no-access-log", "--log-level", "warning", target]
    if server == "hypercorn":
        return [py, "-m", "hypercorn", "--bind", f"{HOST}:{port}", "--workers", "1", "--worker-class", "uvloop",
                "--log-level", "warning", target]
    if server == "bare-asgi":  # the ceiling, not a server to use (benchmarks/servers/bare_asgi.py)
        return [py, "-m", "benchmarks.servers.bare_asgi", target, "--host", HOST, "--port", str(port)]
    raise ValueError(server)


def start(server: str, app: str, logdir: Path) -> int:
    port = free_port()
    argv = server_argv(server, APPS[app], port)
    if can_pin():
        argv = ["taskset", "-c", str(SERVER_CPU), *argv]
    log = open(logdir / f"{server}-{app}.log", "wb")
    proc = subprocess.Popen(argv, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _LIVE[proc.pid] = proc
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{server} {app} exited: {(logdir / f'{server}-{app}.log').read_text()[-500:]}")
        try:
            if http_request(port, "GET", "/plaintext")[0] == 200:
                return port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{server} {app} did not start")


def check(port: int) -> list[str]:
    """Every endpoint answers as the others' do (the same app, so the same bodies)."""
    problems = []
    for method, path, body, want in (("GET", "/plaintext", None, b"Hello, World!"),
                                     ("GET", "/json", None, b'{"message":"Hello,World!"}'),
                                     ("GET", "/users/4242", None, b'{"id":4242}'),
                                     ("POST", "/echo", ECHO_BODY, ECHO_BODY)):
        status, _, got = http_request(port, method, path, body=body, headers={"Content-Type": "application/json"})
        if status != 200 or (got if path == "/plaintext" else got.replace(b" ", b"")) != want:
            problems.append(f"{method} {path}: {status} {got[:60]!r}")
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", default="1,64,256")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--apps", default=",".join(APPS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="one round of 2 s")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "asgi"),
                        help="where the .md and .json go (without the suffix)")
    args = parser.parse_args(argv)
    rounds, duration = (1, 2) if args.quick else (args.rounds, args.duration)
    servers, apps = args.servers.split(","), args.apps.split(",")
    scenarios, conns = args.scenarios.split(","), [int(c) for c in args.connections.split(",")]
    install_cleanup()
    logdir = Path(tempfile.mkdtemp(prefix="aioserve-asgi-bench-"))
    ports: dict[tuple[str, str], int] = {}
    results: dict[tuple[str, str, str, int], list[dict]] = {}
    load: list[float] = []
    try:
        for app in apps:
            for server in servers:
                port = ports[(server, app)] = start(server, app, logdir)
                problems = check(port)
                if problems:
                    raise SystemExit(f"{server} {app}: " + "; ".join(problems))
        turn = 0
        for _ in range(rounds):
            for app in apps:
                for scenario in scenarios:
                    for c in conns:
                        turn += 1
                        order = servers[turn % len(servers):] + servers[:turn % len(servers)]
                        for server in order:
                            url = f"http://{HOST}:{ports[(server, app)]}/"
                            run_wrk(url, scenario, c, 1)  # warm-up
                            load.append(os.getloadavg()[0])
                            r = run_wrk(url, scenario, c, duration)
                            results.setdefault((app, scenario, server, c), []).append(
                                {"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "errors": r.errors, "ok": r.ok})
                            print(f"{app} {scenario} c={c} {server}: {r.rps:,.0f} req/s p99 {r.p99_ms} ms", flush=True)
    finally:
        kill_all()
    text = report(results, apps, scenarios, servers, conns, rounds, duration, load)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"|".join(map(str, k)): v for k, v in results.items()}, indent=1))


def report(results: dict, apps: list[str], scenarios: list[str], servers: list[str], conns: list[int], rounds: int,
           duration: int, load: list[float]) -> str:
    lines = [f"wrk -t1, {rounds} round(s) x {duration} s, servers pinned to CPU {SERVER_CPU}, wrk to CPU {CLIENT_CPU}; "
             f"{os.cpu_count()} CPUs; 1-min load average during the runs "
             + (f"{min(load):.1f}..{max(load):.1f}." if load else "-"), ""]
    for app in apps:
        lines += [f"### {app}", "", "| scenario | conns | server | req/s | vs uvicorn | vs Granian | p50 ms | p99 ms | errors | rounds req/s |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
        for scenario in scenarios:
            for c in conns:
                median = {s: statistics.median(r["rps"] for r in results[(app, scenario, s, c)])
                          for s in servers if (app, scenario, s, c) in results}
                for s in servers:
                    runs = results.get((app, scenario, s, c))
                    if not runs:
                        continue
                    mid = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
                    vs = lambda other: f"{median[s] / median[other]:.2f}x" if median.get(other) else "-"  # noqa: E731
                    ms = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
                    each = ", ".join(f"{r['rps']:,.0f}" for r in runs)
                    lines.append(f"| {scenario} | {c} | {s} | {median[s]:,.0f} | {vs('uvicorn')} | {vs('granian')} | "
                                 f"{ms(mid['p50_ms'])} | {ms(mid['p99_ms'])} | {sum(r['errors'] for r in runs)} | {each} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
