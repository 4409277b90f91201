"""Helpers for the hostile-client tests (limits, smuggling, timeouts, flow control, shutdown, fuzz).

This module imports only ``aioserve`` at the top, so a subprocess can serve ``tests.hostile_helpers:app``
without the test-only helpers on its path.  Every wait here is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import aioserve
from aioserve import App, Response, stream

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------
# An app whose handlers report what they saw
# --------------------------------------------------------------------------


class Probe:
    """Counters and events shared between a test and the handlers of one app."""

    def __init__(self) -> None:
        self.started = 0  # handlers entered
        self.finished = 0  # handlers that returned normally
        self.paths: list[str] = []
        self.release: asyncio.Event | None = None  # created lazily on the test's loop
        self.produced = 0  # bytes a streaming generator has yielded
        self.generator_closed = False
        self.consumed = 0  # bytes a streaming upload handler has read
        self.errors: list[BaseException] = []

    def event(self) -> asyncio.Event:
        if self.release is None:
            self.release = asyncio.Event()
        return self.release


def hostile_app(probe: Probe | None = None) -> tuple[App, Probe]:
    probe = probe or Probe()
    app = App()

    @app.get("/")
    async def index(request):
        probe.started += 1
        probe.paths.append(request.path)
        return "ok"

    @app.get("/long/{rest:path}")
    async def long_path(request, rest: str):
        return {"len": len(request.raw_path)}

    @app.get("/headers")
    async def headers(request):
        return {"count": len(request.headers.items())}

    @app.post("/echo")
    async def echo(request):
        body = await request.body()
        return {"size": len(body)}

    @app.post("/small", max_body_size=10)
    async def small(request):
        return {"size": len(await request.body())}

    @app.post("/upload", max_body_size=None)
    async def upload(request):
        size = 0
        async for piece in request.stream():
            size += len(piece)
            probe.consumed = size
        return {"size": size}

    @app.post("/slow-upload", max_body_size=None)
    async def slow_upload(request):
        # Waits for the test's signal before it reads a byte: the server must not buffer meanwhile.
        await asyncio.wait_for(probe.event().wait(), 30)
        size = 0
        async for piece in request.stream():
            size += len(piece)
            probe.consumed = size
        return {"size": size}

    @app.get("/sleep")
    async def sleep(request):
        probe.started += 1
        await asyncio.sleep(float(request.query.get("s", "1")))
        probe.finished += 1
        return "slept"

    @app.get("/block")
    async def block(request):
        probe.started += 1
        probe.paths.append(request.path)
        await asyncio.wait_for(probe.event().wait(), 30)
        probe.finished += 1
        return "released"

    @app.get("/hang")
    async def hang(request):
        probe.started += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            probe.generator_closed = True  # reused as "the hung handler was cancelled"
            raise
        return "never"

    @app.get("/big")
    async def big(request):
        size = int(request.query.get("n", str(8 * 1024 * 1024)))
        return Response(b"b" * size, content_type="application/octet-stream")

    @app.get("/endless")
    async def endless(request):
        piece = b"e" * 65536
        limit = int(request.query.get("n", str(1 << 30)))

        async def gen():
            try:
                while probe.produced < limit:
                    probe.produced += len(piece)
                    yield piece
            finally:
                probe.generator_closed = True

        return stream(gen(), content_type="application/octet-stream")

    @app.get("/boom")
    async def boom(request):
        raise RuntimeError("handler failure on purpose")

    @app.get("/cancelled")
    async def cancelled(request):
        raise asyncio.CancelledError()

    @app.get("/split-value")
    async def split_value(request):
        return Response(b"x", headers={"X-Evil": "a\r\nInjected: 1"})

    @app.get("/split-name")
    async def split_name(request):
        return Response(b"x", headers={"X-Evil\r\nInjected": "1"})

    @app.get("/split-lf")
    async def split_lf(request):
        return Response(b"x", headers={"X-Evil": "a\nInjected: 1"})

    @app.get("/split-set")
    async def split_set(request):
        response = Response(b"x")
        response.headers["X-Evil"] = "a\r\nInjected: 1"
        return response

    @app.get("/split-cookie")
    async def split_cookie(request):
        response = Response(b"x")
        response.set_cookie("a", "b", path="/\r\nInjected: 1")
        return response

    return app, probe


#: Served by the subprocess tests: ``python -m aioserve tests.hostile_helpers:app``.
app, _subprocess_probe = hostile_app()
SHUTDOWN_MARKER = "HOSTILE-SHUTDOWN-HOOK-RAN"
INFLIGHT_MARKER = "HOSTILE-IN-FLIGHT"


@app.get("/inflight")
async def _inflight(request):
    print(INFLIGHT_MARKER, file=sys.stderr, flush=True)
    await asyncio.sleep(float(request.query.get("s", "1")))
    return "full-answer-" + request.query.get("i", "")


@app.on_shutdown
async def _on_shutdown():
    print(SHUTDOWN_MARKER, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Blocking (thread-side) HTTP: used by the fuzz harness, which runs hypothesis in a worker thread
# --------------------------------------------------------------------------

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


@dataclass
class SyncResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    chunked: bool = False

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def comparable(self) -> tuple:
        """What must match between two runs (Date may tick between them)."""
        return (self.status, tuple((k, v) for k, v in self.headers if k != "date"), self.body)


class BadResponseBytes(AssertionError):
    pass


def parse_responses(data: bytes, head_methods: frozenset[int] = frozenset()) -> list[SyncResponse]:
    """Split ``data`` (everything the server sent) into strictly framed responses.

    Close-delimited bodies are allowed only for the last response.  ``head_methods`` holds the
    indexes of responses to HEAD requests (no body).
    """
    out: list[SyncResponse] = []
    pos = 0
    for index in range(10_000):
        if pos == len(data):
            return out
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            raise BadResponseBytes(f"incomplete response head at {pos}: {data[pos:pos + 200]!r}")
        lines = data[pos:end].split(b"\r\n")
        m = re.fullmatch(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*", lines[0])
        if not m:
            raise BadResponseBytes(f"bad status line {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN.match(name) or any(c in value for c in b"\r\n\x00"):
                raise BadResponseBytes(f"bad header line {line!r}")
            headers.append((name.decode("latin-1").lower(), value.strip(b" \t").decode("latin-1")))
        resp = SyncResponse(int(m.group(1)), headers)
        pos = end + 4
        te = resp.header("transfer-encoding")
        cl = resp.header("content-length")
        if resp.status in (204, 304) or 100 <= resp.status < 200 or index in head_methods:
            pass
        elif te is not None:
            if te.lower() != "chunked" or cl is not None:
                raise BadResponseBytes(f"bad framing te={te!r} cl={cl!r}")
            resp.chunked = True
            body = bytearray()
            for _ in range(1_000_000):
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    raise BadResponseBytes("incomplete chunk size line")
                try:
                    size = int(data[pos:eol].split(b";")[0], 16)
                except ValueError:
                    raise BadResponseBytes(f"bad chunk size line {data[pos:eol]!r}") from None
                pos = eol + 2
                if size == 0:
                    if data[pos:pos + 2] != b"\r\n":
                        raise BadResponseBytes("no CRLF after the last chunk")
                    pos += 2
                    break
                if data[pos + size:pos + size + 2] != b"\r\n":
                    raise BadResponseBytes("chunk not followed by CRLF")
                body += data[pos:pos + size]
                pos += size + 2
            resp.body = bytes(body)
        elif cl is not None:
            if not cl.isdigit():
                raise BadResponseBytes(f"bad Content-Length {cl!r}")
            n = int(cl)
            if len(data) - pos < n:
                raise BadResponseBytes(f"body shorter than Content-Length {n}")
            resp.body = data[pos:pos + n]
            pos += n
        else:
            resp.body = data[pos:]
            pos = len(data)
        out.append(resp)
    raise BadResponseBytes("too many responses")


def exchange(port: int, pieces: list[bytes], *, pause: float = 0.0, half_close: bool = True,
             timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send ``pieces`` one write each (TCP_NODELAY), optionally half-close, and read until the
    server closes.  Returns (bytes received, closed by the server within ``timeout``)."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for piece in pieces:
                sock.sendall(piece)
                if pause:
                    time.sleep(pause)  # pacing, so that pieces tend to arrive as separate reads
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before reading everything (EPIPE, ECONNRESET, ENOTCONN)
        received = bytearray()
        deadline = time.monotonic() + timeout
        for _ in range(100_000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(received), False
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return bytes(received), True
            except socket.timeout:
                return bytes(received), False
            if not data:
                return bytes(received), True
            received += data
        return bytes(received), False
    finally:
        sock.close()


# --------------------------------------------------------------------------
# Memory readings
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# A server in a subprocess, with its stderr pumped by a thread
# --------------------------------------------------------------------------

LISTEN_RE = re.compile(r"Listening on http://127\.0\.0\.1:(\d+)")


class ServerProcess:
    """``python -m aioserve TARGET ...`` (or any argv) in a subprocess, optionally with a lowered
    RLIMIT_NOFILE.  Always stopped by pid on exit."""

    def __init__(self, args: list[str], *, module: bool = True, nofile: int | None = None,
                 env: dict | None = None) -> None:
        argv = [sys.executable, "-m", "aioserve", *args] if module else [sys.executable, *args]
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")]))
        if env:
            full_env.update(env)

        def limit_fds() -> None:
            if nofile is not None:
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            argv, cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env=full_env, preexec_fn=limit_fds if nofile else None,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        self.port: int | None = None

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            for _ in range(100_000):
                if predicate(self.lines):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    return predicate(self.lines)
                self._cond.wait(remaining)
        return predicate(self.lines)

    def count(self, marker: str) -> int:
        with self._cond:
            return sum(1 for line in self.lines if marker in line)

    def wait_listening(self, timeout: float = 20.0) -> int:
        found: list[int] = []

        def has_port(lines: list[str]) -> bool:
            for line in lines:
                m = LISTEN_RE.search(line)
                if m:
                    found.append(int(m.group(1)))
                    return True
            return False

        if not self.wait_for(has_port, timeout):
            raise AssertionError(f"server did not start (rc={self.proc.poll()}):\n{self.stderr_text()}")
        self.port = found[0]
        return self.port

    def stderr_text(self) -> str:
        with self._cond:
            return "\n".join(self.lines[-60:])

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._thread.join(5)
        return rc

    def stop(self) -> None:
        from helpers import stop_process  # lazily: this module is also imported by served subprocesses

        stop_process(self.proc)
        self._thread.join(5)
        if self.proc.stderr is not None:
            with contextlib.suppress(Exception):
                self.proc.stderr.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------
# Loop-level fault detection
# --------------------------------------------------------------------------


@contextlib.contextmanager
def loop_exceptions(loop: asyncio.AbstractEventLoop) -> Iterator[list[dict]]:
    """Collect every call of the loop's exception handler for the duration of the block."""
    seen: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


def describe_contexts(contexts: list[dict]) -> str:
    return "\n".join(f"{c.get('message')}: {c.get('exception')!r}" for c in contexts)


def small_rcvbuf_socket(size: int = 16384) -> socket.socket:
    """A connected-later TCP socket with a small receive buffer (so a non-reading client stalls
    the server quickly)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    sock.setblocking(False)
    return sock


async def open_small_rcvbuf(port: int, size: int = 16384):
    sock = small_rcvbuf_socket(size)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), 5)
    return await asyncio.open_connection(sock=sock)


@dataclass
class Timed:
    start: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


# --------------------------------------------------------------------------
# A client that keeps writing after the server has answered and closed (as an attacker does),
# without the write errors hiding the answer that already arrived
# --------------------------------------------------------------------------


class _Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.arrived = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.arrived.set()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc) -> None:
        self.arrived.set()
        if not self.closed.done():
            self.closed.set_result(None)


class HostileClient:
    """Raw TCP client: ``write`` never raises once the server is gone; ``response()`` parses what
    arrived; ``closed()`` waits for the server to close."""

    def __init__(self, transport: asyncio.Transport, sink: _Sink) -> None:
        self.transport = transport
        self.sink = sink

    @classmethod
    async def open(cls, port: int, rcvbuf: int | None = None) -> "HostileClient":
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), 5)
        transport, sink = await loop.create_connection(_Sink, sock=sock)
        return cls(transport, sink)

    @property
    def is_closed(self) -> bool:
        return self.sink.closed.done()

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False (and nothing sent) when the connection is already gone."""
        if self.is_closed or self.transport.is_closing():
            return False
        try:
            self.transport.write(data)
        except (OSError, RuntimeError):
            return False
        return True

    async def dribble(self, data: bytes, interval: float, piece: int = 1) -> int:
        """Send ``data`` ``piece`` bytes at a time, ``interval`` seconds apart, until done or the
        server closes.  Returns how many pieces were written."""
        written = 0
        for start in range(0, len(data), piece):
            if not self.write(data[start:start + piece]):
                break
            written += 1
            await asyncio.sleep(interval)
        return written

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    async def closed(self, timeout: float = 5.0) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(self.sink.closed), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def responses(self, count: int = 1, timeout: float = 5.0) -> list[SyncResponse]:
        """Wait until ``count`` complete responses have arrived (or the connection closed)."""
        deadline = time.monotonic() + timeout
        for _ in range(100_000):
            try:
                parsed = parse_responses(bytes(self.sink.data))
            except BadResponseBytes:
                parsed = None  # incomplete so far
            if parsed is not None and len(parsed) >= count:
                return parsed
            if self.is_closed:
                return parse_responses(bytes(self.sink.data))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sink.arrived.clear()
            try:
                await asyncio.wait_for(self.sink.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        raise AssertionError(f"no {count} complete response(s) within {timeout}s; got {bytes(self.sink.data[:300])!r}")

    async def response(self, timeout: float = 5.0) -> SyncResponse:
        got = await self.responses(1, timeout)
        assert got, f"connection closed without a response; got {bytes(self.sink.data[:300])!r}"
        return got[0]

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()
