"""Test helpers: an in-process server, a strict raw HTTP/1.x client, log capture,
and a small harness for running the CLI in a subprocess.

Everything here is bounded in time: every network read goes through
``asyncio.wait_for`` and every subprocess wait has a deadline.  All traffic
goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Iterable, Iterator

import httpx

import aioserve

HOST = "127.0.0.1"
READ_TIMEOUT = 5.0
REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------
# In-process server
# --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(app, **settings) -> AsyncIterator["aioserve.Server"]:
    """Serve ``app`` on 127.0.0.1 with a free port for the duration of the block."""
    settings.setdefault("host", HOST)
    settings.setdefault("port", 0)
    settings.setdefault("access_log", False)
    server = await aioserve.serve(app, **settings)
    try:
        assert isinstance(server.port, int) and server.port > 0
        yield server
    finally:
        await asyncio.wait_for(server.shutdown(timeout=5), 15)


def base_url(server) -> str:
    return f"http://{HOST}:{server.port}"


@contextlib.asynccontextmanager
async def http_client(server, **kwargs) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client bound to ``server`` that never consults proxy variables."""
    kwargs.setdefault("timeout", READ_TIMEOUT)
    async with httpx.AsyncClient(base_url=base_url(server), trust_env=False, **kwargs) as client:
        yield client


# --------------------------------------------------------------------------
# Raw HTTP/1.x client with a strict response parser
# --------------------------------------------------------------------------


class ProtocolViolation(AssertionError):
    """The server sent bytes that are not valid HTTP/1.x framing."""


@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]  # names lower-cased, in wire order
    body: bytes = b""
    chunked: bool = False
    chunk_sizes: list[int] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    close_delimited: bool = False
    raw_head: bytes = b""

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def getall(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def has(self, name: str) -> bool:
        return self.header(name) is not None

    def connection_tokens(self) -> set[str]:
        tokens: set[str] = set()
        for value in self.getall("connection"):
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
        return tokens

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def _parse_head(head: bytes) -> RawResponse:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 never fails
        raise ProtocolViolation(repr(head)) from exc
    if not text.endswith("\r\n\r\n"):
        raise ProtocolViolation(f"response head not terminated by CRLFCRLF: {head!r}")
    lines = text[:-4].split("\r\n")
    match = re.fullmatch(r"HTTP/(\d\.\d) (\d{3})(?: (.*))?", lines[0])
    if not match:
        raise ProtocolViolation(f"bad status line: {lines[0]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if ":" not in line or line[:1] in (" ", "\t"):
            raise ProtocolViolation(f"bad header line: {line!r} in {head!r}")
        name, _, value = line.partition(":")
        if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
            raise ProtocolViolation(f"bad header name: {name!r}")
        headers.append((name.lower(), value.strip(" \t")))
    return RawResponse(
        version=match.group(1),
        status=int(match.group(2)),
        reason=match.group(3) or "",
        headers=headers,
        raw_head=head,
    )


class RawConnection:
    """A plain TCP connection speaking hand-written HTTP/1.x."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, host: str = HOST) -> "RawConnection":
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=2**20), READ_TIMEOUT
        )
        return cls(reader, writer)

    @property
    def local_port(self) -> int:
        return self.writer.get_extra_info("sockname")[1]

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), READ_TIMEOUT)

    async def send_ignoring_errors(self, data: bytes, piece: int = 65536) -> bool:
        """Send ``data`` in pieces; stop quietly if the server closes first.
        Returns True when everything was written."""
        for start in range(0, len(data), piece):
            try:
                self.writer.write(data[start : start + piece])
                await asyncio.wait_for(self.writer.drain(), READ_TIMEOUT)
            except (ConnectionError, asyncio.TimeoutError, OSError):
                return False
        return True

    async def send_bytewise(self, data: bytes, *, limit: int = 4096) -> None:
        """Send ``data`` one byte per write (bounded by ``limit`` bytes)."""
        assert len(data) <= limit, "send_bytewise is for small payloads"
        for i in range(len(data)):
            self.writer.write(data[i : i + 1])
            await asyncio.wait_for(self.writer.drain(), READ_TIMEOUT)
            # Yield to the loop so each byte tends to leave in its own segment.
            await asyncio.sleep(0)

    async def read_response(self, method: str = "GET", timeout: float = READ_TIMEOUT) -> RawResponse:
        """Read exactly one response (1xx responses are returned as such)."""
        return await asyncio.wait_for(self._read_response(method.upper()), timeout)

    async def read_final_response(self, method: str = "GET", timeout: float = READ_TIMEOUT) -> RawResponse:
        """Read one response, failing if an informational (1xx) response comes first."""
        response = await self.read_response(method, timeout)
        assert not 100 <= response.status < 200, f"unexpected interim response {response.status}"
        return response

    async def read_responses(
        self, count: int, methods: Iterable[str] | None = None, timeout: float = READ_TIMEOUT
    ) -> list[RawResponse]:
        methods = list(methods) if methods is not None else ["GET"] * count
        assert len(methods) == count
        out = []
        for method in methods:
            out.append(await self.read_response(method, timeout))
        return out

    async def _read_response(self, method: str) -> RawResponse:
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise ProtocolViolation(
                f"connection closed before a complete response head; got {exc.partial!r}"
            ) from None
        response = _parse_head(head)
        status = response.status
        te = ",".join(response.getall("transfer-encoding")).lower()
        lengths = response.getall("content-length")

        if 100 <= status < 200:
            if lengths or te:
                raise ProtocolViolation(f"{status} response with framing headers")
            return response
        if status in (204, 304) or method == "HEAD":
            if status in (204, 304) and te:
                raise ProtocolViolation(f"{status} response with Transfer-Encoding")
            if status == 204 and lengths:
                raise ProtocolViolation("204 response with Content-Length")
            return response
        if te:
            if lengths:
                raise ProtocolViolation("both Transfer-Encoding and Content-Length sent")
            if te.strip() != "chunked":
                raise ProtocolViolation(f"unexpected Transfer-Encoding {te!r}")
            await self._read_chunked(response)
            return response
        if lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit():
                raise ProtocolViolation(f"bad Content-Length {lengths!r}")
            size = int(lengths[0])
            try:
                response.body = await self.reader.readexactly(size)
            except asyncio.IncompleteReadError as exc:
                raise ProtocolViolation(
                    f"body shorter than Content-Length {size}: {len(exc.partial)} bytes"
                ) from None
            return response
        # Neither: the body runs until the server closes the connection.
        response.close_delimited = True
        response.body = await self._read_to_eof()
        return response

    async def _read_chunked(self, response: RawResponse) -> None:
        response.chunked = True
        body = bytearray()
        for _ in range(1_000_000):
            size_line = await self._readline_strict()
            size_text = size_line.split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9a-fA-F]+", size_text):
                raise ProtocolViolation(f"bad chunk size line {size_line!r}")
            size = int(size_text, 16)
            response.chunk_sizes.append(size)
            if size == 0:
                break
            data = await self.reader.readexactly(size)
            crlf = await self.reader.readexactly(2)
            if crlf != b"\r\n":
                raise ProtocolViolation(f"chunk data not followed by CRLF: {crlf!r}")
            body += data
        else:  # pragma: no cover
            raise ProtocolViolation("too many chunks")
        for _ in range(1000):
            line = await self._readline_strict()
            if line == b"":
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise ProtocolViolation(f"bad trailer line {line!r}")
            response.trailers.append((name.strip().lower(), value.strip()))
        response.body = bytes(body)

    async def _readline_strict(self) -> bytes:
        try:
            line = await self.reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError as exc:
            raise ProtocolViolation(f"connection closed inside chunked body: {exc.partial!r}") from None
        return line[:-2]

    async def _read_to_eof(self) -> bytes:
        chunks = []
        for _ in range(1_000_000):
            try:
                data = await self.reader.read(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

    async def read_some(self, timeout: float = READ_TIMEOUT) -> bytes:
        return await asyncio.wait_for(self.reader.read(65536), timeout)

    async def read_exactly(self, n: int, timeout: float = READ_TIMEOUT) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), timeout)

    async def is_closed_by_peer(self, timeout: float = READ_TIMEOUT) -> bool:
        """True when the server closes the connection (EOF or reset) within ``timeout``
        without sending anything more.  Extra bytes make the assertion fail."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except asyncio.TimeoutError:
            return False
        if data:
            raise AssertionError(f"expected the connection to close, got more bytes: {data[:200]!r}")
        return True

    async def assert_silent(self, timeout: float = 0.2) -> None:
        """Assert nothing arrives within ``timeout`` (the connection stays open and quiet)."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"expected no data yet, got {data!r} (connection closed: {data == b''})")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), READ_TIMEOUT)

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0)."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def __aenter__(self) -> "RawConnection":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


@contextlib.asynccontextmanager
async def raw_connection(server_or_port) -> AsyncIterator[RawConnection]:
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    conn = await RawConnection.open(port)
    try:
        yield conn
    finally:
        await conn.close()


def request_bytes(
    method: str = "GET",
    target: str = "/",
    headers: Iterable[tuple[str, str]] | dict | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
    host: bool = True,
    content_length: bool | None = None,
) -> bytes:
    """Build one request.  A Content-Length header is added when a body is given
    (or when ``content_length`` is True), unless the caller supplied framing."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in items}
    lines = [f"{method} {target} {version}"]
    if host and "host" not in names:
        lines.append(f"Host: {HOST}")
    for k, v in items:
        lines.append(f"{k}: {v}")
    if "content-length" not in names and "transfer-encoding" not in names:
        if content_length or (content_length is None and body):
            lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --------------------------------------------------------------------------
# Log capture that also sees loggers which do not propagate
# --------------------------------------------------------------------------


class _ListHandler(logging.Handler):
    def __init__(self, sink: "LogCapture"):
        super().__init__(level=logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink._add(record)


class LogCapture:
    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self._seen: set[int] = set()
        self._lock = threading.Lock()

    def _add(self, record: logging.LogRecord) -> None:
        with self._lock:
            if id(record) in self._seen:
                return
            self._seen.add(id(record))
            self.records.append(record)

    def at_least(self, level: int) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= level]

    def by_logger(self, name: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.name == name or r.name.startswith(name + ".")]

    def describe(self, records: Iterable[logging.LogRecord] | None = None) -> str:
        records = self.records if records is None else records
        return "\n".join(f"{r.levelname} {r.name}: {r.getMessage()}" for r in records)


@contextlib.contextmanager
def capture_logs(*extra_loggers: str, level: int = logging.DEBUG) -> Iterator[LogCapture]:
    """Capture records from the root logger and from ``aioserve``/``asyncio``
    (directly, in case they do not propagate).  Levels are lowered for the
    duration so INFO access lines are produced, then restored."""
    capture = LogCapture()
    handler = _ListHandler(capture)
    names = ["", "aioserve", "aioserve.access", "aioserve.error", "asyncio", *extra_loggers]
    saved = []
    for name in dict.fromkeys(names):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        if name:
            logger.setLevel(level)
        logger.addHandler(handler)
    try:
        yield capture
    finally:
        for logger, old_level in saved:
            logger.removeHandler(handler)
            logger.setLevel(old_level)


# --------------------------------------------------------------------------
# Miscellaneous
# --------------------------------------------------------------------------


async def wait_until(predicate, timeout: float = 3.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` (bounded in count and time); True once it holds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        if predicate():
            return True
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(interval)
    return bool(predicate())


# --------------------------------------------------------------------------
# CLI harness (used by test_cli.py and test_examples.py)
# --------------------------------------------------------------------------

LISTEN_TCP = re.compile(r"Listening on http://127\.0\.0\.1:(\d+)")
LISTEN_UNIX = re.compile(r"Listening on unix:(\S+)")


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM a test's server process, then SIGKILL it if it has not exited within 10 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class CliServer:
    """``python -m aioserve ...`` in a subprocess with stderr read by a thread."""

    def __init__(
        self,
        args: list[str],
        env: dict | None = None,
        pass_fds: tuple[int, ...] = (),
        python_args: list[str] | None = None,
    ):
        # python_args replaces "-m aioserve ARGS" (e.g. ["-c", code]) to run any program.
        self.args = [sys.executable, *(python_args if python_args is not None else ["-m", "aioserve", *args])]
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            full_env.pop(var, None)
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            self.args,
            cwd=str(REPO_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            pass_fds=pass_fds,
        )
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self.stderr_lines: list[str] = []
        self.stdout_chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._pump_stderr, daemon=True)
        self._reader.start()
        self._out_reader = threading.Thread(target=self._pump_stdout, daemon=True)
        self._out_reader.start()
        self.port: int | None = None
        self.uds: str | None = None

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.stderr_lines.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(lambda: self.proc.stdout.read1(65536), b""):
            self.stdout_chunks.append(raw)

    def wait_for_line(self, pattern: re.Pattern | str, timeout: float = 20.0) -> re.Match:
        if isinstance(pattern, str):
            pattern = re.compile(re.escape(pattern))
        # Lines already seen first.
        deadline = time.monotonic() + timeout
        for _ in range(100_000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                self.lines.put(None)  # keep the EOF marker for later waits
                raise AssertionError(
                    f"aioserve exited (rc={self.proc.poll()}) before printing {pattern.pattern!r}; "
                    f"stderr:\n{self.stderr_text()}"
                )
            match = pattern.search(line)
            if match:
                return match
        raise AssertionError(
            f"timed out after {timeout}s waiting for {pattern.pattern!r}; stderr:\n{self.stderr_text()}"
        )

    def wait_listening(self, timeout: float = 20.0) -> int:
        match = self.wait_for_line(LISTEN_TCP, timeout)
        self.port = int(match.group(1))
        return self.port

    def wait_listening_unix(self, timeout: float = 20.0) -> str:
        match = self.wait_for_line(LISTEN_UNIX, timeout)
        self.uds = match.group(1)
        return self.uds

    def url(self, path: str = "/") -> str:
        assert self.port is not None
        return f"http://{HOST}:{self.port}{path}"

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_lines)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        self._out_reader.join(timeout=5)
        return rc

    def stop(self) -> None:
        """Always safe: terminate, then kill, the process we started."""
        stop_process(self.proc)
        self._reader.join(timeout=5)
        self._out_reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    def __enter__(self) -> "CliServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_cli(args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "aioserve", *args],
        cwd=str(REPO_ROOT),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def sync_client(**kwargs) -> httpx.Client:
    kwargs.setdefault("timeout", 10.0)
    return httpx.Client(trust_env=False, **kwargs)


# --------------------------------------------------------------------------
# A tiny app for CLI shutdown tests: ``tests.helpers:inflight_app``
# --------------------------------------------------------------------------

INFLIGHT_MARKER = "AIOSERVE-TEST-IN-FLIGHT"

inflight_app = aioserve.App()


@inflight_app.get("/")
async def _inflight_index(request):
    return "ready"


@inflight_app.get("/loop")
async def _loop_kind(request):
    return type(asyncio.get_running_loop()).__module__


@inflight_app.get("/inflight")
async def _inflight(request):
    # Tell the test (which reads our stderr) that the request is being handled,
    # then keep working for a while: a graceful shutdown must let this finish.
    print(INFLIGHT_MARKER, file=sys.stderr, flush=True)
    await asyncio.sleep(0.75)
    return "finished"


def create_inflight_app():
    """Factory form of ``inflight_app`` for ``--factory``."""
    return inflight_app
