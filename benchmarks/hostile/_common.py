"""Shared pieces of the hostile-client measurements: the server subprocess and memory readings."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.procstats import status_kb  # noqa: E402

HOST = "127.0.0.1"
LISTEN = re.compile(r"Listening on http://127\.0\.0\.1:(\d+)")


class Server:
    """``python -m aioserve benchmarks.hostile.app:app --port 0 ...``; stopped (by pid) on exit."""

    def __init__(self, loop: str, extra: list[str], cpu: int | None = None) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []  # the server on a core of its own
        self.argv = [*pin, sys.executable, "-m", "aioserve", "benchmarks.hostile.app:app", "--port", "0",
                     "--loop", loop, "--no-access-log", *extra]
        self.proc = subprocess.Popen(self.argv, cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self.port = 0
        ready = threading.Event()

        def pump() -> None:
            for raw in iter(self.proc.stderr.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                self.lines.append(line)
                m = LISTEN.search(line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(30) or not self.port:
            self.stop()
            raise SystemExit("server did not start:\n" + "\n".join(self.lines[-20:]))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int:
        return status_kb(self.pid, "VmRSS")

    def hwm_kb(self) -> int:
        return status_kb(self.pid, "VmHWM")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class PeakSampler(threading.Thread):
    """VmRSS of ``pid`` every ``interval`` s; keeps the peak (VmHWM alone would include start-up)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_kb = status_kb(pid, "VmRSS")
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))

    def stop(self) -> int:
        self.done.set()
        self.join(5)
        return self.peak_kb


def get(port: int, path: str = "/", timeout: float = 10.0) -> bytes:
    import socket

    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def mib(kb: int) -> float:
    return kb / 1024
