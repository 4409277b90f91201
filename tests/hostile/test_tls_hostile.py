"""Hostile and slow clients over TLS: asyncio's and uvloop's SSL transports buffer, flow-control and
close differently from a plain socket, so the bounds of the plain-TCP tests are checked again here."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time

import pytest

from aioserve import App, StreamResponse

from tests.support import running, wait_until
from tests.support.tls import client_context, make_pki, tls_settings, tls_socket

pytest.importorskip("trustme", reason="TLS tests need trustme (pip install -e '.[test]')")

CHUNK = b"t" * 65536


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _slow_link_app(servers: list) -> tuple[App, dict]:
    seen = {"closed": 0}
    app = App()

    @app.get("/big")
    async def big(request):
        # The server's end of a slow link: a kernel send queue of a few kilobytes (autotuning keeps it
        # small when the path is slow), so what the client has not taken waits in the transport's buffers.
        for conn in servers[0].state.connections:
            conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)

        async def produce():
            try:
                for _ in range(200):  # 12.5 MiB: far more than the test reads
                    yield CHUNK
            finally:
                seen["closed"] += 1
        return StreamResponse(produce())

    return app, seen


def _read_steadily(pki, port: int, seconds: float) -> int:
    """Read 16 KiB every 0.2 s (80 kB/s) for ``seconds``; the bytes read (fails if the server closes)."""
    received = 0
    end = time.monotonic() + seconds
    with tls_socket(pki, port, rcvbuf=32768) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        while time.monotonic() < end:
            piece = sock.recv(16384)
            assert piece, f"dropped after {received} bytes"
            received += len(piece)
            time.sleep(0.2)  # the pace of the reader: wall time is the point
    return received


@pytest.mark.parametrize("settings", [
    {"timeout_write": 1.0, "min_response_rate": 0},
    {"min_response_rate": 20_000, "min_rate_grace_period": 1.5},
], ids=["timeout_write", "min_response_rate"])
async def test_a_steady_slow_reader_over_tls_is_not_dropped(pki, settings):
    """An 80 kB/s reader meets a 1 s write timeout and a 20 kB/s rate by far. Over TLS what it has not
    taken sits partly in the TCP transport under the TLS one (half a megabyte at a time), which the TLS
    transport's buffer size does not count and the kernel's queue does not hold: judged by those two,
    the reader looked stalled for seconds and was dropped."""
    servers: list = []
    app, seen = _slow_link_app(servers)
    async with running(app, **tls_settings(pki), **settings) as server:
        servers.append(server)
        received = await asyncio.to_thread(_read_steadily, pki, server.port, 4.0)
        assert seen["closed"] == 0, "the stream was cut"
        assert 100_000 < received < 1_000_000, received  # it read steadily, and slowly


async def test_a_tls_client_closing_its_side_with_a_request_outstanding_is_gone_without_a_warning(pki, logs):
    """A TLS client's close_notify ends the connection both ways on asyncio's and uvloop's SSL transports:
    the handler hears the client is gone, and nothing is logged (eof_received returning True made the
    loop log "returning true from eof_received() has no effect when using ssl" for every such client)."""
    app = App()
    started, gone = asyncio.Event(), asyncio.Event()

    @app.get("/wait")
    async def wait(request):
        started.set()
        await request.wait_disconnected()
        gone.set()
        return "never sent"

    async with running(app, **tls_settings(pki)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client_context(pki),
                                                       server_hostname="localhost")
        writer.write(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(started.wait(), 5)
        writer.close()  # close_notify, with the request outstanding
        await asyncio.wait_for(gone.wait(), 5)
        await wait_until(lambda: server.connections == 0, timeout=5, message="the connection stayed open")
        with contextlib.suppress(OSError):
            await asyncio.wait_for(writer.wait_closed(), 5)
    warnings = logs.at_least(logging.WARNING)
    assert not warnings, logs.describe(warnings)


BODY = bytes(range(256)) * 4096  # 1 MiB: far more than the kernel's small queue and the TLS shutdown window take


def _whole_app(servers: list) -> App:
    """GET /whole answers BODY over a slow link's small kernel send queue (see _slow_link_app)."""
    app = App()

    @app.get("/whole")
    async def whole(request):
        for conn in servers[0].state.connections:
            conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        return BODY

    return app


def _read_whole(pki, port: int, pace: float, close: bool) -> bytes:
    """GET /whole (with ``Connection: close`` or kept alive), 16 KiB per ``pace`` seconds, until the whole
    answer has come or the server closes."""
    data = b""
    ask = b"GET /whole HTTP/1.1\r\nHost: x\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n"
    with tls_socket(pki, port, rcvbuf=32768, timeout=20) as sock:
        sock.sendall(ask)
        for _ in range(100_000):  # bounded: the socket's timeout, and the answer's length
            try:
                piece = sock.recv(16384)
            except (ssl.SSLError, OSError):
                break
            if not piece:
                break
            data += piece
            _, sep, got = data.partition(b"\r\n\r\n")
            if sep and len(got) >= len(BODY):
                break
            time.sleep(pace)  # the pace of the reader: wall time is the point
    return data


def _body_of(data: bytes) -> bytes:
    head, _, got = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return got


async def test_a_slow_reader_gets_the_whole_answer_before_a_tls_close(pki, monkeypatch):
    """A closing TLS connection gets the loop's TLS shutdown timeout (aioserve's 5 s, 0.5 s here) for the
    flush and the close_notify together; then the TLS and TCP transports drop what they still hold, up to
    a megabyte. A reader slower than that had the end of its answer cut short, a clean EOF where plain TCP
    delivers it all: the close now waits until the transport and the kernel hold nothing."""
    import aioserve.server

    monkeypatch.setattr(aioserve.server, "TLS_SHUTDOWN_TIMEOUT", 0.5)
    servers: list = []
    async with running(_whole_app(servers), **tls_settings(pki)) as server:
        servers.append(server)
        data = await asyncio.to_thread(_read_whole, pki, server.port, 0.03, True)  # about 500 kB/s
    assert b"connection: close" in data.partition(b"\r\n\r\n")[0].lower()
    got = _body_of(data)
    assert len(got) == len(BODY) and got == BODY, f"{len(got)} of {len(BODY)} bytes"


async def test_a_tls_close_waits_no_longer_than_timeout_write_for_a_client_that_reads_nothing(pki, monkeypatch):
    """The close that waits for the last bytes (above) is bounded: a client that takes none of them is
    closed after ``timeout_write`` of no progress, though the transport never paused for writing (the
    answer fits in its buffers), so the write timeout itself never ran."""
    import aioserve.server

    monkeypatch.setattr(aioserve.server, "TLS_SHUTDOWN_TIMEOUT", 0.5)
    app = App()

    @app.get("/some")
    async def some(request):
        return b"s" * 200_000  # under the TLS transport's high-water mark: no pause_writing

    def ask(port: int):
        sock = tls_socket(pki, port, rcvbuf=8192)
        sock.sendall(b"GET /some HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # then reads nothing
        return sock

    async with running(app, **tls_settings(pki), timeout_write=0.5) as server:
        sock = await asyncio.to_thread(ask, server.port)  # the handshake blocks: not on the server's loop
        try:
            await wait_until(lambda: server.connections == 0, timeout=8, message="the closing connection stayed")
        finally:
            sock.close()


async def test_a_slow_reader_gets_the_whole_answer_when_the_keep_alive_timeout_closes_over_tls(pki, monkeypatch):
    """The keep-alive timeout runs from the answer's last write, not from its arrival: over TLS a reader
    still taking the end of the answer when it expires had it cut short by the transport's shutdown
    timeout, as a closing answer was (above). That close waits for the last bytes too."""
    import aioserve.server

    monkeypatch.setattr(aioserve.server, "TLS_SHUTDOWN_TIMEOUT", 0.5)
    servers: list = []
    async with running(_whole_app(servers), **tls_settings(pki), timeout_keep_alive=0.2) as server:
        servers.append(server)
        data = await asyncio.to_thread(_read_whole, pki, server.port, 0.03, False)
    assert b"connection: close" not in data.partition(b"\r\n\r\n")[0].lower()
    got = _body_of(data)
    assert len(got) == len(BODY) and got == BODY, f"{len(got)} of {len(BODY)} bytes"


async def test_a_graceful_shutdown_lets_a_slow_reader_take_the_rest_of_its_answer_over_tls(pki, monkeypatch):
    """A graceful shutdown closes an idle keep-alive connection at once; over TLS one whose last answer
    is still on its way waits for it (bounded by the shutdown's own timeout), as a closing answer does."""
    import aioserve.server

    monkeypatch.setattr(aioserve.server, "TLS_SHUTDOWN_TIMEOUT", 0.5)
    servers: list = []
    server = await aioserve.serve(_whole_app(servers), host="127.0.0.1", port=0, access_log=False, **tls_settings(pki))
    servers.append(server)
    try:
        reader = asyncio.ensure_future(asyncio.to_thread(_read_whole, pki, server.port, 0.03, False))
        # Answered and idle (a connection starts in its head stage): every byte handed to the transport, most of them not yet taken by the client.
        await wait_until(lambda: any(conn.stage == 0 for conn in server.state.connections),
                         timeout=8, message="the connection never went idle after its answer")
        assert not reader.done()
        await asyncio.wait_for(server.shutdown(timeout=10), 15)
        data = await asyncio.wait_for(reader, 15)
    finally:
        await asyncio.wait_for(server.shutdown(timeout=1), 5)
    got = _body_of(data)
    assert len(got) == len(BODY) and got == BODY, f"{len(got)} of {len(BODY)} bytes"
