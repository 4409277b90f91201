"""A server in a subprocess (``python -m aioserve ...`` or any command), and blocking clients for it.

``ServerProcess`` is the one wrapper: it reads stderr line by line on a thread, knows the one
"Listening on" line format (``LISTENING``), and always stops its process (SIGTERM, then SIGKILL).
Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
EOF_LINE = "<EOF>"  # appended to ``lines`` once the process closed its stderr
LISTENING = re.compile(r"Listening on (?:(https?)://(\[[^\]]+\]|[^:\s]+):(\d+)|unix:(\S+))")
#: Variables of the test runner's environment that would change how a served process behaves.
CLEAN_ENV = (
    "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS", "AIOSERVE_RELOAD_FD",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
)


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a served process: unbuffered, the checkout importable (``tests.support.apps``)."""
    extra = dict(extra or {})
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    # the repository first, after any test-specific path (a shim, a temporary module)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra.pop("PYTHONPATH", ""), str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM a test's process, then SIGKILL it if it has not exited within 10 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class ServerProcess:
    """``python -m aioserve ARGS`` (or ``command``) with stderr collected line by line in ``lines``.

    ``nofile`` lowers RLIMIT_NOFILE in the child. Use it as a context manager: it is always stopped.
    """

    def __init__(self, *args: str, command: Sequence[str] | None = None, env: dict[str, str] | None = None,
                 pass_fds: Sequence[int] = (), cwd: Path | str = REPO_ROOT, nofile: int | None = None) -> None:
        cmd = list(command) if command is not None else [sys.executable, "-m", "aioserve", *args]

        def limit_fds() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=server_env(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, pass_fds=tuple(pass_fds), preexec_fn=limit_fds if nofile else None,
        )
        self.lines: list[str] = []
        self._stdout: list[bytes] = []
        self._cond = threading.Condition()
        self._readers = [threading.Thread(target=self._read_stderr, daemon=True),
                         threading.Thread(target=self._read_stdout, daemon=True)]
        for reader in self._readers:
            reader.start()
        self.host = "127.0.0.1"
        self.port = 0
        self.uds: str | None = None

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append(EOF_LINE)
            self._cond.notify_all()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(lambda: self.proc.stdout.read1(65536), b""):
            self._stdout.append(raw)

    @property
    def output(self) -> str:
        """Everything on stderr so far."""
        with self._cond:
            return "\n".join(self.lines)

    @property
    def stdout(self) -> bytes:
        """Everything on stdout so far."""
        return b"".join(self._stdout)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 10.0, count: int = 1) -> list[re.Match[str]]:
        """Wait until ``pattern`` matched ``count`` stderr lines (counted from the start); return the matches.
        Raises AssertionError, with the output, on timeout or when the process closed stderr first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            for _ in range(1_000_000):
                found = [m for m in (regex.search(line) for line in self.lines) if m]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] == EOF_LINE):
                    break
                self._cond.wait(left)
            raise AssertionError(
                f"no {count} line(s) matching {regex.pattern!r} (rc={self.proc.poll()}); output:\n" + "\n".join(self.lines)
            )

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if regex.search(line))

    def wait_listening(self, timeout: float = 20.0) -> ServerProcess:
        """Wait for the first "Listening on" line; set ``host`` and ``port``, or ``uds``."""
        m = self.wait_for(LISTENING, timeout)[0]
        if m.group(4):
            self.uds = m.group(4)
        else:
            self.host = m.group(2).strip("[]")
            self.port = int(m.group(3))
        return self

    def url(self, path: str = "/") -> str:
        assert self.port, "call wait_listening() first"
        return f"http://{self.host}:{self.port}{path}"

    def worker_pids(self) -> list[int]:
        return [int(m.group(1)) for m in self.wait_for(r"Worker (\d+) ready", 0.1)]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 15.0) -> int:
        rc = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return rc

    def stop(self) -> None:
        """Always safe: terminate, then kill, the process this object started."""
        stop_process(self.proc)
        for reader in self._readers:
            reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def run_cli(args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    """``python -m aioserve ARGS`` to completion (for commands that exit: --help, bad flags)."""
    return subprocess.run(
        [sys.executable, "-m", "aioserve", *args],
        cwd=str(REPO_ROOT),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=server_env(),
    )


# --------------------------------------------------------------------------
# Blocking clients for a server in a subprocess (stdlib only: they also run from threads)
# --------------------------------------------------------------------------


def http_get(host: str, port: int, path: str = "/", headers: dict[str, str] | None = None,
             timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection (``Connection: close``): status, headers, body."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def http_get_json(host: str, port: int, path: str = "/", headers: dict[str, str] | None = None) -> Any:
    status, _, body = http_get(host, port, path, headers)
    assert status == 200, (status, body)
    return json.loads(body)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts connections on host:port (for servers that print nothing)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 2):
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # polling a port that has no event to await
    raise AssertionError(f"nothing accepted on {host}:{port} within {timeout}s")


def deployment_snippet(lang: str) -> str:
    """The fenced ``lang`` block of the Deployment section (README.md once merged, else docs/deployment.md)."""
    for doc in (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "deployment.md"):
        if doc.exists():
            text = doc.read_text(encoding="utf-8")
            section = text[text.find("## Deployment"):] if "## Deployment" in text else ""
            m = re.search(rf"```{lang}\n(.*?)```", section, re.S)
            if m:
                return m.group(1)
    raise AssertionError(f"no ```{lang} block in the Deployment section")
