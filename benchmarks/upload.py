"""A 100 MiB multipart upload, MB/s and the server's peak RSS growth: aioserve vs Starlette
(python-multipart, under uvicorn) and aiohttp, one worker each, uvloop for all, rounds interleaved.

    python -m benchmarks.upload [--size-mib 100] [--rounds 3] [--servers aioserve,starlette,aiohttp]

The client streams the body from one 1 MiB buffer over a plain socket, so it costs the server's CPU
nothing; the figure is the time from the first byte sent to the answer, median over rounds.
Results: printed, and written to ``benchmarks/results/upload.md``.
"""
from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from .procstats import status_kb

HOST = "127.0.0.1"
BOUNDARY = "benchBoundary7MA4YWxkTrZu0gW"
MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent

SERVERS = {
    "aioserve": lambda port: [sys.executable, "-m", "aioserve", "benchmarks.servers.upload_apps:aioserve_app",
                              "--factory", "--port", str(port), "--loop", "uvloop", "--no-access-log",
                              "--max-body-size", "-1"],
    "starlette": lambda port: [sys.executable, "-m", "uvicorn", "benchmarks.servers.upload_apps:starlette_app",
                               "--factory", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                               "--no-access-log", "--log-level", "warning"],
    "aiohttp": lambda port: [sys.executable, "-c",
                             "import asyncio, uvloop; from aiohttp import web; "
                             "from benchmarks.servers.upload_apps import aiohttp_app; "
                             f"asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
                             f"web.run_app(aiohttp_app(), host='{HOST}', port={port}, access_log=None, print=None)"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


def upload(port: int, size: int) -> tuple[float, bytes]:
    piece = bytes(range(256)) * 4096
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    length = len(head) + size + len(tail)
    with socket.create_connection((HOST, port), timeout=120) as sock:
        t0 = time.perf_counter()
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n%s"
                     % (BOUNDARY.encode(), length, head))
        for _ in range(size // MiB):
            sock.sendall(piece)
        sock.sendall(piece[: size % MiB] + tail)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            got = sock.recv(65536)
            if not got:
                break
            data += got
        return time.perf_counter() - t0, data


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.pid, self.start, self.peak = pid, status_kb(pid, "VmRSS"), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, status_kb(self.pid, "VmRSS"))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(names: list[str], size: int, rounds: int) -> list[dict]:
    """Every server runs at once (idle but one); rounds alternate between them, so a burst of load
    from elsewhere on the machine falls on all of them alike."""
    procs: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        for name in names:
            port = free_port()
            procs[name] = (subprocess.Popen(SERVERS[name](port), cwd=ROOT, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL), port)
            wait_port(port)
            upload(port, MiB)  # warm up
        times: dict[str, list[float]] = {name: [] for name in names}
        growth: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            for name in names:
                proc, port = procs[name]
                with PeakRss(proc.pid) as rss:
                    seconds, answer = upload(port, size)
                if b'"size":%d' % size not in answer.replace(b" ", b""):
                    raise RuntimeError(f"{name}: unexpected answer {answer[:300]!r}")
                times[name].append(seconds)
                growth[name].append(max(0, rss.peak - rss.start) / 1024)
        rows = []
        for name in names:
            best = statistics.median(times[name])
            rows.append({"server": name, "seconds": best, "mb_s": size / best / 1e6,
                         "rss_growth_mib": max(growth[name])})
        return rows
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round of 20 MiB")
    parser.add_argument("--servers", default=",".join(SERVERS))
    args = parser.parse_args(argv)
    size = (20 if args.quick else args.size_mib) * MiB
    rounds = 1 if args.quick else args.rounds
    rows = measure(args.servers.split(","), size, rounds)
    base = next((r for r in rows if r["server"] == "starlette"), None)
    lines = [f"A {size // MiB} MiB multipart upload, median of {rounds} round(s), one worker each, uvloop.", "",
             "| server | MB/s | vs Starlette | seconds | peak RSS growth MiB |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['mb_s'] / base['mb_s']:.2f}x" if base else "-"
        lines.append(f"| {r['server']} | {r['mb_s']:.0f} | {ratio} | {r['seconds']:.3f} | {r['rss_growth_mib']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / "upload.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
