"""Helpers for the operations tests: a server subprocess whose stderr we can wait on, and tiny clients.

Every wait is bounded; every server is killed in ``finally`` (use ``ServerProcess`` as a context manager).
"""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"Listening on (?:(https?)://(\[[^\]]+\]|[^:\s]+):(\d+)|unix:(\S+))")
CLEAN_ENV = ("WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS", "AIOSERVE_RELOAD_FD")


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    extra = dict(extra or {})
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    # the repository's aioserve first, after any test-specific path (a shim, a temporary module)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra.pop("PYTHONPATH", ""), str(REPO), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


class ServerProcess:
    """``python -m aioserve ARGS`` (or any command) with stderr collected line by line."""

    def __init__(self, *args: str, command: Sequence[str] | None = None, env: dict[str, str] | None = None,
                 pass_fds: Sequence[int] = (), cwd: Path | str = REPO) -> None:
        cmd = list(command) if command is not None else [sys.executable, "-m", "aioserve", *args]
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=server_env(env), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=tuple(pass_fds),
                                     text=True, bufsize=1)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.host = "127.0.0.1"
        self.port = 0
        self.uds: str | None = None

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<EOF>")
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 10.0, count: int = 1) -> list[re.Match[str]]:
        """Wait until ``pattern`` matched ``count`` stderr lines; return the matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in (regex.search(line) for line in self.lines) if m]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] == "<EOF>"):
                    raise AssertionError(f"no {count} line(s) matching {pattern!r}; output:\n" + "\n".join(self.lines))
                self._cond.wait(left)

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if regex.search(line))

    def wait_listening(self, timeout: float = 15.0) -> ServerProcess:
        m = self.wait_for(LISTENING.pattern, timeout)[0]
        if m.group(4):
            self.uds = m.group(4)
        else:
            self.host = m.group(2).strip("[]")
            self.port = int(m.group(3))
        return self

    def worker_pids(self) -> list[int]:
        return [int(m.group(1)) for m in self.wait_for(r"Worker (\d+) ready", 0.1)]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        from helpers import stop_process  # lazily: this module is also imported by served subprocesses

        stop_process(self.proc)
        self._reader.join(5)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def get(host: str, port: int, path: str = "/", headers: dict[str, str] | None = None,
        timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection (``Connection: close``): status, headers, body."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def get_json(host: str, port: int, path: str = "/", headers: dict[str, str] | None = None) -> Any:
    status, _, body = get(host, port, path, headers)
    assert status == 200, (status, body)
    return json.loads(body)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts connections on host:port (for servers that print nothing)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # polling a port that has no event to await


def deployment_snippet(lang: str) -> str:
    """The fenced ``lang`` block of the Deployment section (README.md once merged, else docs/deployment.md)."""
    for doc in (REPO / "README.md", REPO / "docs" / "deployment.md"):
        if doc.exists():
            text = doc.read_text(encoding="utf-8")
            section = text[text.find("## Deployment"):] if "## Deployment" in text else ""
            m = re.search(rf"```{lang}\n(.*?)```", section, re.S)
            if m:
                return m.group(1)
    raise AssertionError(f"no ```{lang} block in the Deployment section")
