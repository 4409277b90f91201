"""Algorithmic-complexity bounds: input within every limit must not cost work out of proportion to its
size. Each test counts operations (calls, pieces) for a hostile shape of input, fed in process to a
``Connection`` read by read, never wall time, so it holds on a loaded machine."""

from __future__ import annotations

import asyncio
import os

import multipart
import pytest

from aioserve import App
from aioserve import forms, staticfiles
from aioserve.config import Config
from aioserve.connection import Connection
from aioserve.shared import ServerState
from tests.support import RecordingTransport

BOUNDARY = b"complexity-boundary"


def chunked(body: bytes, size: int) -> bytes:
    """``body`` as a chunked message body of ``size``-byte chunks."""
    pieces = (body[i:i + size] for i in range(0, len(body), size))
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def post_chunked(path: str, content_type: bytes, body: bytes, size: int) -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
            % (path.encode(), content_type)) + chunked(body, size)


def one_field_form(value: bytes) -> bytes:
    return (b"--%s\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\n%s\r\n--%s--\r\n"
            % (BOUNDARY, value, BOUNDARY))


class Answered(RecordingTransport):
    """Sets ``written`` on the first write: the answer has begun."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, data: bytes) -> None:
        super().write(data)
        self.written.set()


async def feed(app: App, reads: list[bytes], done: asyncio.Event | None = None) -> bytes:
    """Feed ``reads`` to a fresh connection, one ``data_received`` each, and wait for ``done`` (set by
    the handler; by default, the first write); what the connection wrote."""
    app.compile()
    state = ServerState(app, Config(access_log=False), asyncio.get_running_loop())
    connection, transport = Connection(state), Answered()
    connection.connection_made(transport)
    try:
        for data in reads:
            connection.data_received(data)
        await asyncio.wait_for((done or transport.written).wait(), 10)
        for _ in range(5):  # bounded: let the answer be written
            if transport.data:
                break
            await asyncio.sleep(0)
        return transport.data
    finally:
        connection.connection_lost(None)
        state.timers.close()


async def test_a_body_of_one_byte_chunks_streams_in_pieces_per_read_not_per_chunk():
    """``request.stream()`` hands over what arrived as one piece: a chunked body of 4,000 one-byte
    chunks in one read is not 4,000 trips through the consumer."""
    app, done, pieces = App(), asyncio.Event(), []

    @app.post("/stream")
    async def consume(request):
        async for piece in request.stream():
            pieces.append(piece)
        done.set()
        return {"size": sum(map(len, pieces))}

    body = bytes(range(256)) * 16  # 4,096 bytes
    out = await feed(app, [post_chunked("/stream", b"application/octet-stream", body, 1)], done)
    assert b"".join(pieces) == body
    assert len(pieces) <= 2, f"{len(pieces)} pieces for one read"
    assert out.startswith(b"HTTP/1.1 200 ") and b'{"size":4096}' in out


async def test_a_multipart_form_in_one_byte_chunks_costs_the_parser_a_call_per_read(monkeypatch):
    """The multipart parser is called once per read of the body, whatever its chunk size: one-byte
    chunks (six bytes on the wire each) cost it no more calls than one chunk for the whole body."""
    calls = []

    class Counting(multipart.PushMultipartParser):
        def parse(self, chunk):
            calls.append(len(chunk))
            return super().parse(chunk)

    monkeypatch.setattr(forms, "PushMultipartParser", Counting)
    app, done, seen = App(), asyncio.Event(), []

    @app.post("/form")
    async def form(request):
        seen.append((await request.form())["field"])
        done.set()
        return "ok"

    value = b"v" * 3000
    content_type = b"multipart/form-data; boundary=" + BOUNDARY
    request = post_chunked("/form", content_type, one_field_form(value), 1)
    half = len(request) // 2
    out = await feed(app, [request[:half], request[half:]], done)
    assert seen == [value.decode()]
    assert out.startswith(b"HTTP/1.1 200 ")
    assert len(calls) <= 4, f"{len(calls)} parser calls for a body in two reads"


@pytest.mark.parametrize("follow_symlinks", [False, True], ids=["nofollow", "follow"])
async def test_a_static_path_of_thousands_of_segments_is_refused_before_any_is_decoded(
        tmp_path, monkeypatch, follow_symlinks):
    """Each segment of a static path costs a decode and a system call (an lstat per component under
    ``follow_symlinks``): a path deeper than ``MAX_DEPTH`` is 404 before any is spent, and a file at
    exactly that depth is still served."""
    deep = tmp_path.joinpath(*["d"] * (staticfiles.MAX_DEPTH - 1))
    deep.mkdir(parents=True)
    (deep / "f.txt").write_bytes(b"deep file")
    decoded, lstats = [], []
    real_unquote, real_lstat = staticfiles.unquote_to_bytes, os.lstat
    monkeypatch.setattr(staticfiles, "unquote_to_bytes", lambda part: decoded.append(part) or real_unquote(part))
    monkeypatch.setattr(os, "lstat", lambda *a, **kw: lstats.append(a) or real_lstat(*a, **kw))

    def get(target: bytes) -> bytes:
        return b"GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % target

    app = App()
    app.static("/s", str(tmp_path), follow_symlinks=follow_symlinks)
    out = await feed(app, [get(b"/s/" + b"d/" * (staticfiles.MAX_DEPTH - 1) + b"f.txt")])
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"deep file"), out[:200]

    app = App()
    app.static("/s", str(tmp_path), follow_symlinks=follow_symlinks)
    decoded.clear()
    lstats.clear()
    out = await feed(app, [get(b"/s/" + b"d/" * 4000 + b"f.txt")])
    assert out.startswith(b"HTTP/1.1 404 "), out[:200]
    assert len(decoded) == 0 and len(lstats) == 0, (len(decoded), len(lstats))


def client_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A masked, final client frame (payloads under 126 bytes)."""
    mask = b"\x0f\x1e\x2d\x3c"
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class SlowReader(Answered):
    """A transport whose peer reads nothing: past ``HIGH`` unsent bytes it pauses its protocol's
    writing, as asyncio's transports do; it records whether reading is paused."""

    HIGH = 64 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.protocol = None
        self.reading = True
        self.unsent = 0

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def get_protocol(self):
        return self.protocol

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def write(self, data: bytes) -> None:
        super().write(data)
        was_high = self.unsent > self.HIGH
        self.unsent += len(data)
        if self.unsent > self.HIGH and not was_high and self.protocol is not None:
            self.protocol.pause_writing()

    def writelines(self, pieces) -> None:
        self.write(b"".join(pieces))

    def drain(self) -> None:
        """The peer reads everything."""
        self.unsent = 0
        self.protocol.resume_writing()


async def test_pings_from_a_peer_that_reads_nothing_stop_being_read():
    """websockets answers every ping with a pong: a peer that sends pings and never reads must stop
    being read from once writing pauses, else the pongs pile up in the transport without bound."""
    app, gone = App(), asyncio.Event()

    @app.websocket("/ws")
    async def sink(ws):
        await ws.accept()
        async for _ in ws:
            pass
        gone.set()

    app.compile()
    state = ServerState(app, Config(access_log=False, ws_ping_interval=None), asyncio.get_running_loop())
    connection, transport = Connection(state), SlowReader()
    connection.connection_made(transport)
    try:
        connection.data_received(b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        await asyncio.wait_for(transport.written.wait(), 10)  # the 101: accepted
        assert transport.data.startswith(b"HTTP/1.1 101 ")
        session = transport.protocol
        pings = client_frame(0x9, b"p" * 125) * 100  # 13,100 bytes a read, as many bytes of pongs back
        for _ in range(1000):  # 13 MB, were it all read
            if not transport.reading:
                break
            session.data_received(pings)
        assert not transport.reading, "still reading pings from a peer that reads nothing"
        assert transport.unsent <= SlowReader.HIGH + len(pings), transport.unsent
        transport.drain()
        assert transport.reading, "reading did not resume once the peer read"
        session.data_received(client_frame(0x8, b"\x03\xe8"))  # close 1000
        await asyncio.wait_for(gone.wait(), 10)
    finally:
        connection.connection_lost(None)
        state.timers.close()


async def test_an_unread_body_of_tiny_chunks_pauses_reading_by_its_number_of_pieces():
    """An unread body pauses reading at 256 KiB, and also at ``BODY_PIECES_HIGH`` pieces: each piece
    costs about 40 bytes besides its own, so 256 KiB of two-byte chunks would hold some 6 MB."""
    from aioserve.connection import BODY_PIECES_HIGH

    app, go, done, got = App(), asyncio.Event(), asyncio.Event(), []

    @app.post("/later", max_body_size=None)
    async def later(request):
        await go.wait()
        got.append(await request.body())
        done.set()
        return "ok"

    app.compile()
    state = ServerState(app, Config(access_log=False), asyncio.get_running_loop())
    connection, transport = Connection(state), SlowReader()
    connection.connection_made(transport)
    try:
        connection.data_received(b"POST /later HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        read = b"2\r\nab\r\n" * 8192  # 8,192 pieces a read
        reads = 0
        for _ in range(100):  # 1.6 MB of pieces, were it all read
            if not transport.reading:
                break
            connection.data_received(read)
            reads += 1
        assert not transport.reading, "reading never paused"
        held = len(connection.current.chunks)
        assert held <= BODY_PIECES_HIGH + 8192, f"{held} pieces held before reading paused"
        go.set()
        for _ in range(100):  # bounded: the handler reads what came, and reading resumes
            if transport.reading:
                break
            await asyncio.sleep(0)
        assert transport.reading, "reading did not resume once the body was read"
        connection.data_received(b"0\r\n\r\n")
        await asyncio.wait_for(done.wait(), 10)
        assert got == [b"ab" * 8192 * reads]
    finally:
        connection.connection_lost(None)
        state.timers.close()
