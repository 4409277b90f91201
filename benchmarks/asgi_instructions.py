"""Instructions per request of an ASGI app under aioserve and under uvicorn, counted by callgrind.

    python -m benchmarks.asgi_instructions [--servers aioserve,uvicorn,alone] [--paths /plaintext,/json] [--app starlette]

Noise-free (no wall clock, no lock needed): the server runs under ``valgrind --tool=callgrind`` and a
client on one keep-alive connection sends N requests one after the other, then the server is stopped.
Each count is taken for N = 3000 and N = 1000; (I(3000) - I(1000)) / 2000 is the cost of one request,
with startup, imports and shutdown cancelled out. Slow (a minute or two per server and path).
``alone`` is no server: the app called directly (``benchmarks/asgi_alone.py``), so a server's own share
of a request is its count minus that one.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .asgi import APPS, HOST, server_argv
from .harness import free_port

ROOT = Path(__file__).resolve().parent.parent


def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def _read_response(sock: socket.socket, buf: bytearray) -> None:
    """Read one response (Content-Length framed) off ``sock``, leaving what follows in ``buf``."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buf[:end]).lower()
            match = re.search(rb"content-length: *(\d+)", head)
            size = int(match.group(1)) if match else 0
            if len(buf) >= end + 4 + size:
                del buf[:end + 4 + size]
                return
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("server closed")
        buf += data


def _callgrind_total(out: Path) -> int:
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no total in {out}")


def count_alone(target: str, path: str, n: int) -> int:
    """Total instructions of a process that called the app itself ``n`` times, with no server."""
    out = Path(tempfile.mkdtemp(prefix="aioserve-cg-")) / "callgrind.out"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
                    "--compress-strings=no", sys.executable, "-m", "benchmarks.asgi_alone", target, path, str(n)],
                   cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=600)
    return _callgrind_total(out)


def count(server: str, target: str, path: str, n: int) -> int:
    """Total instructions of a server process that answered ``n`` requests for ``path``."""
    if server == "alone":
        return count_alone(target, path, n)
    port = free_port()
    out = Path(tempfile.mkdtemp(prefix="aioserve-cg-")) / "callgrind.out"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
           "--compress-strings=no", *server_argv(server, target, port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                sock = socket.create_connection((HOST, port), timeout=60)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{server} did not start")
                time.sleep(0.5)
        buf = bytearray()
        request = _request(path)
        with sock:
            for _ in range(n):
                sock.sendall(request)
                _read_response(sock, buf)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    total = 0
    for f in out.parent.glob("callgrind.out*"):  # one file per process (uvicorn forks none with 1 worker)
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                total = max(total, int(line.split()[1])) if f == out else total
                break
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="aioserve,uvicorn")
    parser.add_argument("--paths", default="/plaintext,/json")
    parser.add_argument("--app", default="starlette", choices=sorted(APPS))
    parser.add_argument("--low", type=int, default=1000)
    parser.add_argument("--high", type=int, default=3000)
    args = parser.parse_args()
    for server in args.servers.split(","):
        for path in args.paths.split(","):
            low = count(server, APPS[args.app], path, args.low)
            high = count(server, APPS[args.app], path, args.high)
            per = (high - low) / (args.high - args.low)
            print(f"{args.app} {path} {server}: {per:,.0f} instructions/request "
                  f"({low:,} for {args.low}, {high:,} for {args.high})", flush=True)


if __name__ == "__main__":
    main()
