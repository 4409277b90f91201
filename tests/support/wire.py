"""Raw HTTP/1.x on the wire: one strict response parser, the clients built on it, and a request builder.

``parse_response`` is the only place that decides where a response ends (RFC 9112 section 6.3). It works
on bytes already received, so the stream client (``RawConnection``), the client that keeps writing after
the server closed (``HostileClient``) and the blocking helper used from threads (``exchange`` +
``parse_responses``) all frame responses the same way. Every read is bounded in time; 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Iterable

HOST = "127.0.0.1"
READ_TIMEOUT = 5.0
READ_SIZE = 65536

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STATUS_LINE = re.compile(r"HTTP/(1\.[01]) (\d{3})(?: ([^\r\n]*))?")
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]+")


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

    def comparable(self) -> tuple:
        """What must match between two runs of the same exchange (``Date`` may tick between them)."""
        return (self.status, tuple((k, v) for k, v in self.headers if k != "date"), self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


# --------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------


def _parse_head(head: bytes) -> RawResponse:
    text = head.decode("latin-1")
    lines = text[:-4].split("\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if not match:
        raise ProtocolViolation(f"bad status line: {lines[0]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or line[:1] in (" ", "\t"):
            raise ProtocolViolation(f"bad header line: {line!r} in {head!r}")
        if not _TOKEN.fullmatch(name):
            raise ProtocolViolation(f"bad header name: {name!r}")
        if any(c in value for c in "\r\n\x00"):
            raise ProtocolViolation(f"bad header value: {line!r}")
        headers.append((name.lower(), value.strip(" \t")))
    return RawResponse(
        version=match.group(1),
        status=int(match.group(2)),
        reason=match.group(3) or "",
        headers=headers,
        raw_head=head,
    )


def _parse_chunked(data: bytes | bytearray, pos: int, response: RawResponse, eof: bool) -> int | None:
    """Walk the chunks from ``pos``; fill ``response`` and return the end offset, or None if incomplete."""
    pieces: list[tuple[int, int]] = []
    sizes: list[int] = []
    for _ in range(1_000_000):
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return _incomplete(eof, "connection closed inside a chunk size line")
        size_text = bytes(data[pos:eol]).split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise ProtocolViolation(f"bad chunk size line {bytes(data[pos:eol])!r}")
        size = int(size_text, 16)
        sizes.append(size)
        pos = eol + 2
        if size == 0:
            break
        if len(data) < pos + size + 2:
            return _incomplete(eof, "connection closed inside chunk data")
        if data[pos + size : pos + size + 2] != b"\r\n":
            raise ProtocolViolation(f"chunk data not followed by CRLF: {bytes(data[pos + size:pos + size + 2])!r}")
        pieces.append((pos, size))
        pos += size + 2
    else:  # pragma: no cover
        raise ProtocolViolation("too many chunks")
    trailers: list[tuple[str, str]] = []
    for _ in range(1000):
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return _incomplete(eof, "connection closed inside the trailers")
        line = bytes(data[pos:eol])
        pos = eol + 2
        if not line:
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ProtocolViolation(f"bad trailer line {line!r}")
        trailers.append((name.strip().lower(), value.strip()))
    response.chunked = True
    response.chunk_sizes = sizes
    response.trailers = trailers
    response.body = b"".join(bytes(data[start : start + size]) for start, size in pieces)
    return pos


def _incomplete(eof: bool, what: str) -> None:
    if eof:
        raise ProtocolViolation(what)
    return None


def parse_response(
    data: bytes | bytearray, start: int = 0, *, method: str = "GET", eof: bool = False
) -> tuple[RawResponse, int] | None:
    """Parse one response from ``data[start:]``: (response, end offset), or None until more bytes come.

    ``eof`` says the server has closed: a body delimited by the close ends there, and anything
    incomplete is a ``ProtocolViolation``. ``method`` is the request's (HEAD answers have no body).
    1xx responses are returned as responses of their own.
    """
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        if eof:
            raise ProtocolViolation(
                f"connection closed before a complete response head; got {bytes(data[start:start + 300])!r}"
            )
        return None
    response = _parse_head(bytes(data[start : end + 4]))
    pos = end + 4
    status = response.status
    te = ",".join(response.getall("transfer-encoding")).lower()
    lengths = response.getall("content-length")
    if 100 <= status < 200:
        if lengths or te:
            raise ProtocolViolation(f"{status} response with framing headers")
        return response, pos
    if status in (204, 304) or method.upper() == "HEAD":
        if status in (204, 304) and te:
            raise ProtocolViolation(f"{status} response with Transfer-Encoding")
        if status == 204 and lengths:
            raise ProtocolViolation("204 response with Content-Length")
        return response, pos
    if te:
        if lengths:
            raise ProtocolViolation("both Transfer-Encoding and Content-Length sent")
        if te.strip() != "chunked":
            raise ProtocolViolation(f"unexpected Transfer-Encoding {te!r}")
        after = _parse_chunked(data, pos, response, eof)
        return None if after is None else (response, after)
    if lengths:
        if len(set(lengths)) != 1 or not lengths[0].isdigit():
            raise ProtocolViolation(f"bad Content-Length {lengths!r}")
        size = int(lengths[0])
        if len(data) - pos < size:
            return _incomplete(eof, f"body shorter than Content-Length {size}: {len(data) - pos} bytes")
        response.body = bytes(data[pos : pos + size])
        return response, pos + size
    # Neither: the body runs until the server closes the connection.
    if not eof:
        return None
    response.close_delimited = True
    response.body = bytes(data[pos:])
    return response, len(data)


def parse_responses(
    data: bytes | bytearray, head_indexes: frozenset[int] = frozenset(), *, eof: bool = True
) -> list[RawResponse]:
    """Every complete response in ``data``. With ``eof`` (the default: ``data`` is all the server
    sent), a trailing incomplete response is a ``ProtocolViolation``; without it, it is left out.
    ``head_indexes`` holds the indexes of responses to HEAD requests."""
    out: list[RawResponse] = []
    pos = 0
    for index in range(10_000):
        if pos == len(data):
            return out
        parsed = parse_response(data, pos, method="HEAD" if index in head_indexes else "GET", eof=eof)
        if parsed is None:
            return out
        response, pos = parsed
        out.append(response)
    raise ProtocolViolation("too many responses")


# --------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------


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
# A stream client
# --------------------------------------------------------------------------


class RawConnection:
    """A plain TCP connection speaking hand-written HTTP/1.x; responses are framed by ``parse_response``.

    Bytes read past the end of one response stay in ``self.buffer`` for the next read, so pipelined
    responses are never lost. (Reading ``self.reader`` directly is fine before the first response.)
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()
        self._eof = False

    @classmethod
    async def open(cls, port: int, host: str = HOST, rcvbuf: int | None = None) -> "RawConnection":
        """``rcvbuf``: a small socket receive buffer, so a client that does not read stalls the server soon."""
        if rcvbuf is None:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=2**20), READ_TIMEOUT)
            return cls(reader, writer)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), READ_TIMEOUT)
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        return cls(reader, writer)

    @property
    def local_port(self) -> int:
        return self.writer.get_extra_info("sockname")[1]

    def write(self, data: bytes) -> None:
        """Queue ``data`` without waiting for it to drain (to pipeline several requests)."""
        self.writer.write(data)

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

    async def request(
        self, method: str, target: str = "/", *, headers: dict | None = None, body: bytes = b""
    ) -> RawResponse:
        """Send one request and read its (first) response."""
        self.write(request_bytes(method, target, headers, body))
        return await self.read_response(method)

    async def read_response(self, method: str = "GET", timeout: float = READ_TIMEOUT) -> RawResponse:
        """Read exactly one response (1xx responses are returned as such)."""
        return await asyncio.wait_for(self._read_response(method), timeout)

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
        return [await self.read_response(method, timeout) for method in methods]

    async def _read_response(self, method: str) -> RawResponse:
        for _ in range(10_000_000):
            parsed = parse_response(self.buffer, method=method, eof=self._eof)
            if parsed is not None:
                response, end = parsed
                del self.buffer[:end]
                return response
            await self._fill()
        raise ProtocolViolation("response never ended")  # pragma: no cover

    async def _fill(self) -> None:
        try:
            data = await self.reader.read(READ_SIZE)
        except ConnectionResetError:
            data = b""
        if data:
            self.buffer += data
        else:
            self._eof = True

    def _take_buffer(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def read_some(self, timeout: float = READ_TIMEOUT) -> bytes:
        if self.buffer:
            return self._take_buffer()
        return await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)

    async def read_exactly(self, n: int, timeout: float = READ_TIMEOUT) -> bytes:
        taken = bytes(self.buffer[:n])
        del self.buffer[:n]
        if len(taken) == n:
            return taken
        return taken + await asyncio.wait_for(self.reader.readexactly(n - len(taken)), timeout)

    async def is_closed_by_peer(self, timeout: float = READ_TIMEOUT) -> bool:
        """True when the server closes the connection (EOF or reset) within ``timeout``
        without sending anything more.  Extra bytes make the assertion fail."""
        if self.buffer:
            raise AssertionError(f"expected the connection to close, got more bytes: {bytes(self.buffer[:200])!r}")
        if self._eof:
            return True
        try:
            data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except asyncio.TimeoutError:
            return False
        if data:
            raise AssertionError(f"expected the connection to close, got more bytes: {data[:200]!r}")
        return True

    async def assert_silent(self, timeout: float = 0.2) -> None:
        """Assert nothing arrives within ``timeout`` (the connection stays open and quiet)."""
        if self.buffer or self._eof:
            raise AssertionError(f"expected no data yet, got {bytes(self.buffer)!r} (connection closed: {self._eof})")
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
async def raw_connection(server_or_port, rcvbuf: int | None = None) -> AsyncIterator[RawConnection]:
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    conn = await RawConnection.open(port, rcvbuf=rcvbuf)
    try:
        yield conn
    finally:
        await conn.close()


async def raw_get(port: int, target: str, *, headers: dict | None = None) -> RawResponse:
    """One GET on a connection of its own."""
    async with raw_connection(port) as conn:
        return await conn.request("GET", target, headers=headers)


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
            if not self.write(data[start : start + piece]):
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

    async def responses(self, count: int = 1, timeout: float = 5.0) -> list[RawResponse]:
        """Wait until ``count`` complete responses have arrived (or the connection closed)."""
        deadline = time.monotonic() + timeout
        for _ in range(100_000):
            if self.is_closed:
                return parse_responses(self.sink.data, eof=True)
            parsed = parse_responses(self.sink.data, eof=False)
            if len(parsed) >= count:
                return parsed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sink.arrived.clear()
            try:
                await asyncio.wait_for(self.sink.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        raise AssertionError(f"no {count} complete response(s) within {timeout}s; got {bytes(self.sink.data[:300])!r}")

    async def response(self, timeout: float = 5.0) -> RawResponse:
        got = await self.responses(1, timeout)
        assert got, f"connection closed without a response; got {bytes(self.sink.data[:300])!r}"
        return got[0]

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()


# --------------------------------------------------------------------------
# Blocking (thread-side): used by the fuzz harness, which runs hypothesis in a worker thread
# --------------------------------------------------------------------------


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
                data = sock.recv(READ_SIZE)
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


class RecordingTransport(asyncio.Transport):
    """A transport for a ``Connection`` fed by hand, read by read (no socket): it keeps what was
    written and whether the connection closed it, so where each read begins and ends is exact."""

    def __init__(self) -> None:
        super().__init__()
        self.data = b""
        self.closing = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
