"""An ASGI app whose ``send()`` raised ClientGone (the client went away) inside a task group.

asyncio's and anyio's task groups wrap a child's exception in an ExceptionGroup; a client leaving is
still not an application error (uvicorn does not log it either), so the wrapped one must end the
request as quietly as a bare one: no error log line, and the same access-log line.
"""
from __future__ import annotations

import asyncio
import base64
import logging

import anyio
import pytest
from websockets.asyncio.client import connect

from aioserve import App, ClientDisconnected, WebSocket, WebSocketDisconnect
from aioserve.asgi import ClientGone
from tests.api.test_asgi import under_uvicorn
from tests.support import READ_TIMEOUT, capture_logs, raw_connection, running, upgraded_session, wait_until

CHUNK = {"type": "http.response.body", "body": b"x" * 1000, "more_body": True}


async def bare(step):
    await step()


async def in_asyncio_task_group(step):
    async with asyncio.TaskGroup() as group:
        group.create_task(step())


async def in_anyio_task_group(step):
    async with anyio.create_task_group() as group:
        group.start_soon(step)


async def nested_task_groups(step):
    await in_anyio_task_group(lambda: in_asyncio_task_group(step))


WRAPPINGS = [bare, in_asyncio_task_group, in_anyio_task_group, nested_task_groups]


def leaf(exc: BaseException) -> BaseException:
    """The one exception inside what the task groups made of it."""
    while isinstance(exc, BaseExceptionGroup):
        (exc,) = exc.exceptions
    return exc


def access_lines(logs) -> list[tuple]:
    return [(r.method, r.path, r.status) for r in logs.by_logger("aioserve.access")]


@pytest.mark.parametrize("wrap", WRAPPINGS, ids=lambda w: w.__name__)
async def test_http_send_after_the_client_left_ends_quietly(wrap):
    """A streamed response: the app waits for http.disconnect, then sends until send() raises."""
    raised: list[BaseException] = []
    done = asyncio.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send(CHUNK)

        async def step():
            while (await receive())["type"] != "http.disconnect":
                pass
            for _ in range(100):  # the queue fills, or send() sees the client gone: ClientGone
                await send(CHUNK)

        try:
            await wrap(step)
        except BaseException as exc:
            raised.append(exc)
            raise
        finally:
            done.set()

    with capture_logs() as logs:
        async with running(app, lifespan="off", access_log=True) as server:
            async with raw_connection(server) as conn:
                await conn.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await conn.read_some()).startswith(b"HTTP/1.1 200 ")
                conn.reset()
            await asyncio.wait_for(done.wait(), READ_TIMEOUT)
            await wait_until(lambda: not server.state.connections)
            await wait_until(lambda: access_lines(logs))
    assert len(raised) == 1 and isinstance(leaf(raised[0]), ClientGone), raised
    assert not logs.at_least(logging.ERROR), logs.describe()
    assert access_lines(logs) == [("GET", "/stream", 200)], logs.describe()  # as nginx: the status sent


def handshake(path: str) -> bytes:
    key = base64.b64encode(b"0123456789abcdef").decode()
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


@pytest.mark.parametrize("wrap", WRAPPINGS, ids=lambda w: w.__name__)
async def test_websocket_send_after_the_client_left_ends_quietly(wrap):
    """Starlette and FastAPI WebSocket apps often pump messages in a task group: a send() to a client
    that left raises ClientGone there, and the app ends as if it had let the bare one escape."""
    go, done = asyncio.Event(), asyncio.Event()
    raised: list[BaseException] = []

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})

        async def step():
            await go.wait()  # the client has left by now
            await send({"type": "websocket.send", "text": "late"})

        try:
            await wrap(step)
        except BaseException as exc:
            raised.append(exc)
            raise
        finally:
            done.set()

    with capture_logs() as logs:
        async with running(app, lifespan="off", access_log=True, ws_ping_interval=None) as server:
            async with raw_connection(server) as conn:
                await conn.send(handshake("/ws"))
                assert (await conn.read_response()).status == 101
                session = upgraded_session(server)
                conn.reset()
            await wait_until(lambda: session.lost)
            go.set()
            await asyncio.wait_for(done.wait(), READ_TIMEOUT)
            await wait_until(lambda: not server.state.connections)
            await wait_until(lambda: len(access_lines(logs)) == 2)
    assert len(raised) == 1 and isinstance(leaf(raised[0]), ClientGone), raised
    assert not logs.at_least(logging.ERROR), logs.describe()
    handshake_line, close_line = logs.by_logger("aioserve.access")
    assert (handshake_line.path, handshake_line.status) == ("/ws", 101)
    assert (close_line.method, close_line.path, close_line.status) == ("WEBSOCKET", "/ws", 1006), logs.describe()


# -- an aioserve App under uvicorn (asgiapp.py): the other side of the same rule --------------------------


def app_under_uvicorn(wrap, started: asyncio.Event, done: asyncio.Event, raised: list) -> App:
    """Handlers whose client leaves: one reading the body, one receiving on a WebSocket; ``wrap``
    runs that step bare or in a task group."""
    app = App()

    async def watched(step):
        started.set()
        try:
            await wrap(step)
        except BaseException as exc:
            raised.append(exc)
            raise
        finally:
            done.set()

    @app.post("/upload")
    async def upload(request):
        await watched(request.body)
        return "read"

    @app.websocket("/ws")
    async def ws(socket: WebSocket):
        await socket.accept()
        await watched(socket.receive)

    return app



@pytest.mark.parametrize("wrap", WRAPPINGS, ids=lambda w: w.__name__)
async def test_app_under_uvicorn_client_leaving_mid_body_is_not_an_error(wrap):
    started, done, raised = asyncio.Event(), asyncio.Event(), []
    app = app_under_uvicorn(wrap, started, done, raised)
    with capture_logs("uvicorn.error") as logs:
        async with under_uvicorn(app) as port:
            async with raw_connection(port) as conn:
                await conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
                await asyncio.wait_for(started.wait(), READ_TIMEOUT)
                conn.reset()
            await asyncio.wait_for(done.wait(), READ_TIMEOUT)
    assert isinstance(leaf(raised[0]), ClientDisconnected), raised
    assert not logs.at_least(logging.ERROR), logs.describe()


@pytest.mark.parametrize("wrap", WRAPPINGS, ids=lambda w: w.__name__)
async def test_app_under_uvicorn_websocket_disconnect_escaping_ends_quietly(wrap):
    started, done, raised = asyncio.Event(), asyncio.Event(), []
    app = app_under_uvicorn(wrap, started, done, raised)
    with capture_logs("uvicorn.error") as logs:
        async with under_uvicorn(app) as port:
            client = await connect(f"ws://127.0.0.1:{port}/ws")
            await asyncio.wait_for(started.wait(), READ_TIMEOUT)
            await client.close()
            await asyncio.wait_for(done.wait(), READ_TIMEOUT)
    assert isinstance(leaf(raised[0]), WebSocketDisconnect), raised
    assert not logs.at_least(logging.ERROR), logs.describe()


async def test_websocket_app_error_beside_the_client_gone_is_still_logged():
    """Only a group made of nothing but this client's ClientGone is quiet: an app error in it is logged."""
    go, done = asyncio.Event(), asyncio.Event()

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await go.wait()
        try:
            await send({"type": "websocket.send", "text": "late"})
        except ClientGone as gone:
            raise ExceptionGroup("two tasks failed", [gone, ValueError("a real bug")]) from None
        finally:
            done.set()

    with capture_logs() as logs:
        async with running(app, lifespan="off", ws_ping_interval=None) as server:
            async with raw_connection(server) as conn:
                await conn.send(handshake("/ws"))
                assert (await conn.read_response()).status == 101
                session = next(c.upgraded for c in server.state.connections if c.upgraded is not None)
                conn.reset()
            await wait_until(lambda: session.lost)
            go.set()
            await asyncio.wait_for(done.wait(), READ_TIMEOUT)
            await wait_until(lambda: logs.at_least(logging.ERROR))
    (error,) = logs.at_least(logging.ERROR)
    assert isinstance(error.exc_info[1], ExceptionGroup), logs.describe()


# -- a native @app.websocket handler on aioserve's own server (wsconn.py) ---------------------------------


@pytest.mark.parametrize("wrap", WRAPPINGS, ids=lambda w: w.__name__)
async def test_native_websocket_disconnect_escaping_ends_quietly(wrap):
    """A handler that receives in a task group: the client's close makes receive() raise
    WebSocketDisconnect there, and the group wraps it; the handler ends as if the bare one escaped."""
    done = asyncio.Event()
    raised: list[BaseException] = []
    app = App()

    @app.websocket("/ws")
    async def ws(socket: WebSocket):
        await socket.accept()

        async def step():
            while True:
                await socket.receive()

        try:
            await wrap(step)
        except BaseException as exc:
            raised.append(exc)
            raise
        finally:
            done.set()

    with capture_logs() as logs:
        async with running(app, access_log=True, ws_ping_interval=None) as server:
            async with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=READ_TIMEOUT) as client:
                await client.send("hello")
                await client.close(code=1000)
            await asyncio.wait_for(done.wait(), READ_TIMEOUT)
            await wait_until(lambda: len(access_lines(logs)) == 2)
    assert len(raised) == 1 and isinstance(leaf(raised[0]), WebSocketDisconnect), raised
    assert not logs.at_least(logging.ERROR), logs.describe()
    close_line = logs.by_logger("aioserve.access")[1]
    assert (close_line.method, close_line.path, close_line.status) == ("WEBSOCKET", "/ws", 1000), logs.describe()
