"""Resident memory of a process, sampled on a thread: how the bounded-memory tests see growth."""

from __future__ import annotations

import os
import threading


def status_kb(pid: int, field_name: str) -> int:
    """A kB field of /proc/PID/status (VmRSS, VmHWM); 0 when unavailable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples VmRSS of ``pid`` every ``interval`` seconds on a daemon thread; keeps the peak."""

    def __init__(self, pid: int | None = None, interval: float = 0.02) -> None:
        self.pid = pid or os.getpid()
        self.interval = interval
        self.start_kb = status_kb(self.pid, "VmRSS")
        self.peak_kb = self.start_kb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(10_000_000):
            rss = status_kb(self.pid, "VmRSS")
            if rss > self.peak_kb:
                self.peak_kb = rss
            if self._stop.wait(self.interval):
                return

    @property
    def growth_mib(self) -> float:
        return (self.peak_kb - self.start_kb) / 1024

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
