"""Static files (1 KiB and 1 MiB) and a gzip-compressed 20 KB JSON answer under wrk at 64 connections:
aioserve (asyncio loop: loop.sendfile; uvloop: os.sendfile in a thread) vs nginx (sendfile on), Starlette
(StaticFiles, GZipMiddleware) under uvicorn, and aiohttp (add_static, enable_compression).

    python -m benchmarks.files [--rounds 3] [--duration 5] [--connections 64] [--servers ...]

Every server runs at once, pinned to CPU 0 (``taskset``), one process each; wrk (one thread) runs on
CPU 1. Rounds alternate between servers (round 1: every server, every scenario; then round 2...), so
load from elsewhere on the machine falls on all of them alike. The table shows the median req/s over
rounds, p50/p99 latency from the median round, MB/s of body, and bytes per answer on the wire (wrk's
byte count over its request count: head included). Results: printed and written to
``benchmarks/results/files.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import CLIENT_CPU, LUA_DIR, SERVER_CPU, can_pin, free_port, install_cleanup, kill_all, _LIVE

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
KiB, MiB = 1024, 1024 * 1024
SCENARIOS = {  # name -> (path, extra headers)
    "file-1k": ("/f/1k.bin", {}),
    "file-1m": ("/f/1m.bin", {}),
    "json-gzip": ("/json", {"Accept-Encoding": "gzip"}),
}
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port};
        location /f/ {{ alias {files}/; }}
    }}
}}
"""


def server_argv(name: str, port: int, work: Path) -> list[str] | None:
    py = sys.executable
    if name in ("aioserve-asyncio", "aioserve-uvloop"):
        return [py, "-m", "aioserve", "benchmarks.servers.file_apps:aioserve_app", "--factory", "--port", str(port),
                "--loop", name.split("-")[1], "--no-access-log"]
    if name == "starlette":
        return [py, "-m", "uvicorn", "benchmarks.servers.file_apps:starlette_app", "--factory", "--port", str(port),
                "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    if name == "aiohttp":
        return [py, "-c", "import asyncio, uvloop; from aiohttp import web; "
                "from benchmarks.servers.file_apps import aiohttp_app; "
                "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
                f"web.run_app(aiohttp_app(), host='{HOST}', port={port}, access_log=None, print=None)"]
    if name == "nginx":
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if nginx is None:
            return None
        conf = work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=work, host=HOST, port=port, files=work / "files"))
        return [nginx, "-c", str(conf), "-p", str(work)]
    raise ValueError(name)


def start(name: str, work: Path) -> tuple[subprocess.Popen, int] | None:
    port = free_port()
    argv = server_argv(name, port, work)
    if argv is None:
        return None
    if can_pin():
        argv = ["taskset", "-c", str(SERVER_CPU), *argv]
    env = dict(os.environ, AIOSERVE_BENCH_FILES=str(work / "files"), PYTHONPATH=str(ROOT))
    log = open(work / f"{name}.log", "wb")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    _LIVE[proc.pid] = proc
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {(work / f'{name}.log').read_text()[-500:]}")
        try:
            out = subprocess.run(["curl", "-sf", "--noproxy", "*", "-o", "/dev/null", f"http://{HOST}:{port}/f/1k.bin"],
                                 timeout=2)
            if out.returncode == 0:
                return proc, port
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not start")


def wrk(port: int, scenario: str, connections: int, duration: int, work: Path) -> dict:
    path, headers = SCENARIOS[scenario]
    script = work / f"{scenario}.lua"
    lines = [f'wrk.method = "GET"', f'wrk.path = "{path}"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n" + (LUA_DIR / "report.lua").read_text())
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout=5s", "-s", str(script),
            f"http://{HOST}:{port}{path}"]
    if can_pin():
        argv = ["taskset", "-c", str(CLIENT_CPU), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("@@BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out[-300:]}")
    d = json.loads(line[len("@@BENCH "):])
    seconds = d["duration_us"] / 1e6
    errors = d["connect"] + d["read"] + d["write"] + d["timeout"] + d["status"]
    return {"rps": d["requests"] / seconds, "p50_ms": d["p50_us"] / 1000, "p99_ms": d["p99_us"] / 1000,
            "mb_s": d["bytes"] / seconds / 1e6, "bytes_per_answer": d["bytes"] / max(1, d["requests"]),
            "errors": errors}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--servers", default="aioserve-asyncio,aioserve-uvloop,nginx,starlette,aiohttp")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="one round of 2 s")
    args = parser.parse_args(argv)
    rounds, duration = (1, 2) if args.quick else (args.rounds, args.duration)
    names, scenarios = args.servers.split(","), args.scenarios.split(",")
    install_cleanup()
    work = Path(tempfile.mkdtemp(prefix="aioserve-files-bench-"))
    os.chmod(work, 0o755)
    (work / "files").mkdir()
    (work / "files" / "1k.bin").write_bytes(os.urandom(KiB))
    (work / "files" / "1m.bin").write_bytes(os.urandom(MiB))
    running: dict[str, int] = {}
    results: dict[tuple[str, str], list[dict]] = {}
    load: list[float] = []
    try:
        for name in names:
            started = start(name, work)
            if started is not None:
                running[name] = started[1]
        for _ in range(rounds):
            for scenario in scenarios:
                for name, port in running.items():
                    if name == "nginx" and not scenario.startswith("file"):
                        continue
                    wrk(port, scenario, args.connections, 1, work)  # warm-up
                    load.append(os.getloadavg()[0])
                    results.setdefault((name, scenario), []).append(wrk(port, scenario, args.connections, duration, work))
    finally:
        kill_all()
    text = report(results, names, scenarios, rounds, duration, args.connections, load)
    print(text)
    (ROOT / "benchmarks" / "results" / "files.md").write_text(text)
    shutil.rmtree(work, ignore_errors=True)


def report(results: dict, names: list[str], scenarios: list[str], rounds: int, duration: int, connections: int,
           load: list[float]) -> str:
    lines = [f"wrk -t1 -c{connections}, {rounds} round(s) x {duration} s, servers pinned to CPU {SERVER_CPU}, wrk to "
             f"CPU {CLIENT_CPU}; {os.cpu_count()} CPUs; 1-min load average during the runs "
             f"{min(load):.1f}..{max(load):.1f}." if load else "no runs", ""]
    for scenario in scenarios:
        rows = {name: results[(name, scenario)] for name in names if (name, scenario) in results}
        if not rows:
            continue
        median = {name: statistics.median(r["rps"] for r in runs) for name, runs in rows.items()}
        lines += [f"### {scenario} ({SCENARIOS[scenario][0]})", "",
                  "| server | req/s | vs nginx | vs Starlette | p50 ms | p99 ms | MB/s | bytes/answer | errors | rounds req/s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for name, runs in rows.items():
            mid = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
            each = ", ".join(f"{r['rps']:,.0f}" for r in runs)
            vs = lambda other: f"{median[name] / median[other]:.2f}x" if other in median else "-"  # noqa: E731
            lines.append(f"| {name} | {median[name]:,.0f} | {vs('nginx')} | {vs('starlette')} | {mid['p50_ms']:.2f} | "
                         f"{mid['p99_ms']:.2f} | {mid['mb_s']:,.0f} | {mid['bytes_per_answer']:,.0f} | "
                         f"{sum(r['errors'] for r in runs)} | {each} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
