"""WebSocket scopes both ways: Starlette and FastAPI WebSocket endpoints served by aioserve (through
the WebSocket session, wsconn.py), and an aioserve App's ``@app.websocket`` handlers under uvicorn.
The client is the ``websockets`` library."""

from __future__ import annotations

import asyncio
import base64
import logging
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI, WebSocket as FastAPIWebSocket, WebSocketDisconnect as FastAPIDisconnect
from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from aioserve import App, WebSocket, WebSocketDisconnect
from aioserve.asgi import ClientGone
from tests.api.test_asgi import under_uvicorn
from tests.support import READ_TIMEOUT, capture_logs, http_client, raw_connection, running, upgraded_session, wait_until


def ws_url(port: int, path: str) -> str:
    return f"ws://127.0.0.1:{port}{path}"


def starlette_ws_app(seen: dict) -> Starlette:
    @asynccontextmanager
    async def lifespan(app):
        yield {"greeting": "hi"}

    class Echo(WebSocketEndpoint):
        encoding = None  # text stays text, bytes stay bytes

        async def on_connect(self, websocket):
            seen["scope"] = {k: websocket.scope[k] for k in ("type", "scheme", "path", "query_string", "subprotocols")}
            seen["state"] = websocket.state.greeting
            await websocket.accept(subprotocol="chat" if "chat" in websocket.scope["subprotocols"] else None)

        async def on_receive(self, websocket, data):
            if data == "close":
                await websocket.close(code=4001, reason="asked")
            elif isinstance(data, bytes):
                await websocket.send_bytes(data[::-1])
            else:
                await websocket.send_text(data.upper())

        async def on_disconnect(self, websocket, close_code):
            seen["disconnect"] = close_code
            seen["gone"].set()

    async def refuse(websocket):
        await websocket.close()  # before accept: the handshake is refused with 403

    async def crash(websocket):
        await websocket.accept()
        raise RuntimeError("handler bug")

    async def home(request):
        return PlainTextResponse("http too")

    routes = [WebSocketRoute("/ws/echo", Echo), WebSocketRoute("/ws/refuse", refuse), WebSocketRoute("/ws/crash", crash),
              Route("/ws/echo", home)]
    return Starlette(routes=routes, lifespan=lifespan)


async def test_starlette_websocket_endpoint_under_aioserve():
    seen = {"gone": asyncio.Event()}
    async with running(starlette_ws_app(seen)) as server:
        async with connect(ws_url(server.port, "/ws/echo?x=1"), subprotocols=["chat"]) as ws:
            assert ws.subprotocol == "chat"
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 5) == "HELLO"
            await ws.send(b"abc")
            assert await asyncio.wait_for(ws.recv(), 5) == b"cba"
        await asyncio.wait_for(seen["gone"].wait(), 5)  # websocket.disconnect reached the app
        assert seen["disconnect"] == 1000
        assert seen["scope"] == {"type": "websocket", "scheme": "ws", "path": "/ws/echo", "query_string": b"x=1",
                                 "subprotocols": ["chat"]}
        assert seen["state"] == "hi"  # lifespan state in the websocket scope

        seen["gone"].clear()
        async with connect(ws_url(server.port, "/ws/echo")) as ws:  # the app closes with its code
            await ws.send("close")
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd.code == 4001 and closed.value.rcvd.reason == "asked"

        with pytest.raises(InvalidStatus) as refused:
            await asyncio.wait_for(connect(ws_url(server.port, "/ws/refuse")), 5)
        assert refused.value.response.status_code == 403

        async with connect(ws_url(server.port, "/ws/crash")) as ws:  # raises after accept: 1011
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd.code == 1011

        async with http_client(server) as client:  # plain GET on the same path is still the app's
            assert (await client.get("/ws/echo")).text == "http too"


async def test_fastapi_websocket_under_aioserve():
    api = FastAPI()
    done = asyncio.Event()
    codes = []

    @api.websocket("/items/{item_id}/ws")
    async def items(websocket: FastAPIWebSocket, item_id: int):
        await websocket.accept()
        try:
            while True:
                data = await websocket.receive_json()
                await websocket.send_json({"item": item_id, "got": data})
        except FastAPIDisconnect as exc:
            codes.append(exc.code)
            done.set()

    async with running(api) as server:
        async with connect(ws_url(server.port, "/items/7/ws")) as ws:
            await ws.send('{"a": 1}')
            assert await asyncio.wait_for(ws.recv(), 5) == '{"item":7,"got":{"a":1}}'
            await ws.close(code=4005)
        await asyncio.wait_for(done.wait(), 5)
        assert codes == [4005]


def aioserve_ws_app(seen: dict) -> App:
    app = App()

    @app.websocket("/rooms/{room}")
    async def room(ws: WebSocket, room: str):
        await ws.accept(subprotocol="chat" if "chat" in ws.subprotocols else None)
        try:
            async for message in ws:
                await ws.send(f"{room}:{message}" if isinstance(message, str) else message * 2)
        finally:
            seen["closed"] = ws.close_code
            seen["gone"].set()

    @app.websocket("/refuse")
    async def refuse(ws: WebSocket):
        await ws.close()

    @app.websocket("/bye")
    async def bye(ws: WebSocket):
        await ws.accept()
        await ws.send(await ws.receive())
        await ws.close(4002, "bye")
        with pytest.raises(WebSocketDisconnect):
            await ws.send("too late")
        seen["bye"] = True

    @app.get("/plain")
    async def plain(request):
        return "plain"

    return app


async def test_aioserve_websocket_handlers_under_uvicorn():
    seen = {"gone": asyncio.Event()}
    async with under_uvicorn(aioserve_ws_app(seen)) as port:
        async with connect(ws_url(port, "/rooms/blue"), subprotocols=["chat"]) as ws:
            assert ws.subprotocol == "chat"
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), 5) == "blue:hi"
            await ws.send(b"ab")
            assert await asyncio.wait_for(ws.recv(), 5) == b"abab"
            await ws.close(code=4003)
        await asyncio.wait_for(seen["gone"].wait(), 5)
        assert seen["closed"] == 4003  # websocket.disconnect's code reached the handler

        async with connect(ws_url(port, "/bye")) as ws:
            await ws.send("echo")
            assert await asyncio.wait_for(ws.recv(), 5) == "echo"
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd.code == 4002 and closed.value.rcvd.reason == "bye"
        for path in ("/refuse", "/nowhere", "/plain"):  # refused, no route, not a WebSocket route: 403
            with pytest.raises(InvalidStatus) as refused:
                await asyncio.wait_for(connect(ws_url(port, path)), 5)
            assert refused.value.response.status_code == 403, path
    assert seen["bye"]


# -- bare ASGI apps over a raw socket -------------------------------------------------------------------

def handshake(path: str) -> bytes:
    key = base64.b64encode(b"0123456789abcdef").decode()
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


@pytest.mark.parametrize("code, reason", [(1006, ""), (1015, ""), (2000, ""), (1000, "r" * 124)],
                         ids=["1006", "1015", "2000", "reason-124-bytes"])
async def test_asgi_close_before_accept_is_403_whatever_the_code(code, reason):
    """ASGI: websocket.close before accept refuses with 403; no close frame is sent, so its code and
    reason never reach the wire and nothing in them makes it a 500."""
    async def app(scope, receive, send):
        if scope["type"] == "websocket":
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.close", "code": code, "reason": reason})

    with capture_logs() as logs:
        async with running(app, lifespan="off") as server, raw_connection(server) as conn:
            await conn.send(handshake("/ws"))
            response = await conn.read_response()
            assert response.status == 403
            assert await conn.is_closed_by_peer()
    assert not logs.at_least(logging.ERROR), logs.describe()


@pytest.mark.parametrize("message", [{"type": "websocket.accept"}, {"type": "websocket.close", "code": 1000}],
                         ids=["accept", "close"])
async def test_asgi_send_after_the_client_left_before_accept_raises_an_oserror(message):
    """ASGI: send() on a closed connection raises an OSError subclass (ClientGone, as for
    websocket.send), and an app that lets it escape ends quietly, as the client is simply gone."""
    go, done = asyncio.Event(), asyncio.Event()
    raised: list[BaseException | None] = []

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await go.wait()  # the client has left by now
        try:
            await send(message)
            raised.append(None)
        except BaseException as exc:
            raised.append(exc)
            raise
        finally:
            done.set()

    with capture_logs() as logs:
        async with running(app, lifespan="off") as server:
            async with raw_connection(server) as conn:
                await conn.send(handshake("/ws"))
                await wait_until(lambda: upgraded_session(server) is not None)
                session = upgraded_session(server)
            await wait_until(lambda: session.lost)
            go.set()
            await asyncio.wait_for(done.wait(), READ_TIMEOUT)
            await wait_until(lambda: not server.state.connections)  # the app's end was seen
    if message["type"] == "websocket.accept":
        assert len(raised) == 1 and isinstance(raised[0], ClientGone) and isinstance(raised[0], OSError), raised
    else:  # nothing to close any more: a no-op, or the same OSError, never anything else
        assert raised == [None] or isinstance(raised[0], ClientGone), raised
    assert not logs.at_least(logging.ERROR), logs.describe()
