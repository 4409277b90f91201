"""aioserve.testing at its edges: uploads and answers in both directions at once, timeouts, a test that
lets go of a request, a WebSocket under a base_url path, a client used after close.

Every wait is bounded: a client that deadlocks fails here within seconds instead of hanging the suite
(the synchronous client's calls run in a thread joined with a timeout, ``bounded``).
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Callable

import httpx2
import pytest

from aioserve import App, Response, WebSocket, stream
from aioserve.testing import AsyncTestClient, TestClient, WebSocketClosed
from tests.support import wait_until

LIMIT = 5.0  # seconds any one step may take before the test calls it a hang
BIG = 200_000  # an answer well past the test transport's 64 KiB high-water mark


def bounded(call: Callable[[], Any], timeout: float = LIMIT) -> Any:
    """Run a synchronous client call in a thread; a call still blocked after ``timeout`` fails the test."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"the test client hung for {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


async def pieces(count: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"u" * size


def duplex_app(log: list[str] | None = None) -> App:
    app = App()

    @app.post("/answer-first")
    async def answer_first(request):
        return Response(b"a" * BIG)  # large, and the upload never read

    @app.post("/echo")
    async def echo(request):
        return Response(await request.body())

    @app.post("/count")
    async def count(request):
        n = 0
        async for chunk in request.stream():
            n += len(chunk)
        return {"n": n}

    @app.get("/stall")
    async def stall(request):
        try:
            await asyncio.Event().wait()
        finally:
            log.append("stall ended")  # type: ignore[union-attr]

    @app.post("/never-read")
    async def never_read(request):
        await asyncio.Event().wait()

    @app.post("/ticks")
    async def ticks(request):
        async for _ in request.stream():
            break  # the upload has begun: answered while it goes on

        async def gen():
            while True:
                yield b"t" * 1024
                await asyncio.sleep(0)  # a loop turn between chunks, as a producer has

        return stream(gen())

    @app.on_shutdown
    async def down():
        if log is not None:
            log.append("shutdown hook")

    return app


# -- an upload and a large answer at the same time ----------------------------------------------------

@pytest.mark.parametrize("content", ["bytes", "generator"])
async def test_async_large_answer_before_reading_the_upload(content):
    body = b"u" * 1_000_000 if content == "bytes" else pieces(16)
    async with AsyncTestClient(duplex_app()) as client:
        r = await asyncio.wait_for(client.post("/answer-first", content=body), LIMIT)
    assert r.status_code == 200 and r.content == b"a" * BIG


async def test_async_large_upload_echoed_in_pieces():
    async with AsyncTestClient(duplex_app()) as client:
        r = await asyncio.wait_for(client.post("/echo", content=pieces(16)), LIMIT)
    assert r.content == b"u" * 16 * 64 * 1024


def test_sync_large_answer_before_reading_a_small_upload():
    with TestClient(duplex_app()) as client:
        r = bounded(lambda: client.post("/answer-first", content=b"tiny"))
        assert r.content == b"a" * BIG
        r = bounded(lambda: client.post("/answer-first", content=iter([b"u" * 100_000] * 10)))
        assert r.content == b"a" * BIG


async def test_async_stream_closed_early_stops_an_upload_still_going():
    finished = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"u" * 1024
        finally:
            finished.set()

    async with AsyncTestClient(duplex_app()) as client:
        async with asyncio.timeout(LIMIT):
            async with client.stream("POST", "/ticks", content=endless()) as r:
                async for chunk in r.aiter_bytes():
                    assert chunk.startswith(b"t")
                    break
            assert finished.is_set()  # the upload's generator was closed with the stream
        assert not client._server.state.connections


async def test_async_failing_upload_raises_the_generators_own_error():
    async def failing() -> AsyncIterator[bytes]:
        yield b"u" * 10
        raise ZeroDivisionError("from the test's generator")

    async with AsyncTestClient(duplex_app()) as client:
        with pytest.raises(ZeroDivisionError, match="test's generator"):
            await asyncio.wait_for(client.post("/count", content=failing()), LIMIT)


# -- timeouts and a test that lets go -------------------------------------------------------------------

async def test_async_read_timeout_then_the_handler_is_cancelled_before_the_hooks():
    log: list[str] = []
    async with AsyncTestClient(duplex_app(log)) as client:
        with pytest.raises(httpx2.ReadTimeout):
            await asyncio.wait_for(client.get("/stall", timeout=0.2), LIMIT)
    assert log == ["stall ended", "shutdown hook"]


async def test_async_write_timeout_when_the_server_never_reads():
    async with AsyncTestClient(duplex_app()) as client:
        with pytest.raises(httpx2.WriteTimeout):
            await asyncio.wait_for(client.post("/never-read", content=pieces(32),
                                               timeout=httpx2.Timeout(LIMIT, write=0.2)), LIMIT)


async def test_async_cancelled_request_lets_go_of_its_connection():
    async with AsyncTestClient(duplex_app([])) as client:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.get("/stall", timeout=None), 0.2)
        assert not client._server.state.connections  # the handler saw its client leave


def test_sync_read_timeout():
    log: list[str] = []
    with TestClient(duplex_app(log)) as client:
        with pytest.raises(httpx2.ReadTimeout):
            bounded(lambda: client.get("/stall", timeout=0.2))
    assert log == ["stall ended", "shutdown hook"]


# -- what the server's failures look like ------------------------------------------------------------

async def test_async_answer_cut_short_is_an_httpx_error():
    app = App()

    @app.get("/cut")
    async def cut(request):
        async def gen():
            yield b"first"
            raise ValueError("the generator failed")

        return stream(gen())

    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
            await asyncio.wait_for(client.get("/cut"), LIMIT)


# -- WebSocket -------------------------------------------------------------------------------------------

def ws_app() -> App:
    app = App()

    @app.websocket("/api/ws")
    async def under_api(ws: WebSocket):
        await ws.accept()
        query = "&".join(f"{k}={v}" for k, v in ws.query.multi_items())
        await ws.send(f"{ws.path}?{query}" if query else ws.path)

    @app.websocket("/ws")
    async def top(ws: WebSocket):
        await ws.accept()
        await ws.send("top")

    return app


def test_sync_websocket_under_the_base_url_path():
    with TestClient(ws_app(), base_url="http://testserver/api") as client:
        with client.websocket_connect("/ws?x=1") as ws:
            assert bounded(ws.receive_text) == "/api/ws?x=1"
        with client.websocket_connect("ws://testserver/ws") as ws:  # an absolute URL is taken as it is
            assert bounded(ws.receive_text) == "top"


async def test_async_websocket_under_the_base_url_path():
    async with AsyncTestClient(ws_app(), base_url="http://testserver/api") as client:
        async with client.websocket_connect("/ws") as ws:
            assert await asyncio.wait_for(ws.receive_text(), LIMIT) == "/api/ws"
        async with client.websocket_connect("ws") as ws:  # relative, as for a request
            assert await asyncio.wait_for(ws.receive_text(), LIMIT) == "/api/ws"


async def test_async_websocket_send_blocked_when_the_server_closes():
    app = App()
    close = asyncio.Event()

    @app.websocket("/ws")
    async def never_reads(ws: WebSocket):
        await ws.accept()
        await close.wait()
        await ws.close(4000, "bye")

    # The server, not reading, never takes the close answer: it drops the connection after ws_ping_timeout.
    async with AsyncTestClient(app, ws_ping_timeout=0.2) as client:
        async with client.websocket_connect("/ws") as ws:
            async def flood() -> None:
                while True:
                    await ws.send_bytes(b"f" * 64 * 1024)
                    if ws.transport.closed:
                        return

            sender = asyncio.ensure_future(flood())
            # the server's inbox is full and it stopped reading: the next send waits
            await wait_until(lambda: not ws.transport.reading or sender.done(), LIMIT)
            assert not sender.done()
            close.set()
            await asyncio.wait_for(sender, LIMIT)
            with pytest.raises(WebSocketClosed):
                await asyncio.wait_for(ws.receive(), LIMIT)
            assert ws.close_code == 4000


def test_websocket_connect_after_close_is_refused():
    client = TestClient(ws_app())
    with client:
        pass
    threads = threading.active_count()
    with pytest.raises(RuntimeError, match="closed"):
        client.websocket_connect("/ws").__enter__()
    assert threading.active_count() == threads  # no event loop thread started for it


# -- hooks -----------------------------------------------------------------------------------------------

async def test_async_failing_startup_raises_and_leaves_the_logger_alone():
    from aioserve.errors import error_logger

    app = App()

    @app.on_startup
    async def up():
        raise RuntimeError("startup failed")

    with pytest.raises(RuntimeError, match="startup failed"):
        async with AsyncTestClient(app):
            pass
    assert not {"isEnabledFor", "handle"} & set(vars(error_logger))  # the client's hook on it is gone
