"""aioserve.testing's WebSocket sessions: the handshake a browser would send, and every frame the server
wrote before it closed, with the close code of the close handshake."""
from __future__ import annotations

import asyncio

import pytest

from aioserve import App, Response, WebSocket
from aioserve.testing import AsyncTestClient, TestClient, WebSocketClosed


def ws_app(sent: asyncio.Event | None = None) -> App:
    app = App()

    @app.get("/login")
    async def login(request):
        r = Response("in")
        r.set_cookie("sess", "abc")
        r.set_cookie("other", "path-scoped", path="/elsewhere")
        return r

    @app.websocket("/ws/who")
    async def who(ws: WebSocket):
        await ws.accept()
        await ws.send_json({"cookies": ws.cookies, "default": ws.headers.get("x-default"),
                            "call": ws.headers.get("x-call"), "upgrade": ws.headers.get("upgrade"),
                            "connection": ws.headers.get("connection")})

    @app.websocket("/ws/echo")
    async def echo(ws: WebSocket):
        await ws.accept()
        async for message in ws:
            await ws.send(message)

    @app.websocket("/ws/sent")
    async def sent_two(ws: WebSocket):
        await ws.accept()
        await ws.send("one")
        await ws.send("two")
        sent.set()  # type: ignore[union-attr]
        async for _ in ws:
            pass

    @app.websocket("/ws/parting")
    async def parting(ws: WebSocket):
        await ws.accept()
        await ws.send("one")
        await ws.send("two")
        await ws.close(4002, "done")

    return app


# -- the handshake carries the client's cookies and default headers ------------------------------------

def test_sync_websocket_handshake_sends_cookies_and_default_headers():
    with TestClient(ws_app(), headers={"x-default": "D"}) as client:
        client.get("/login")
        with client.websocket_connect("/ws/who", headers={"x-call": "C"}) as ws:
            seen = ws.receive_json()
    # The cookie scoped to another path stays home, as in a browser; the handshake's own headers win.
    assert seen == {"cookies": {"sess": "abc"}, "default": "D", "call": "C", "upgrade": "websocket",
                    "connection": "Upgrade"}


async def test_async_websocket_handshake_sends_cookies_and_default_headers():
    async with AsyncTestClient(ws_app(), headers={"x-default": "D"}) as client:
        await client.get("/login")
        async with client.websocket_connect("/ws/who", headers={"x-default": "per-call"}) as ws:
            seen = await ws.receive_json()
    assert seen["cookies"] == {"sess": "abc"} and seen["default"] == "per-call" and seen["call"] is None


def test_websocket_handshake_cookies_follow_the_url_and_call_headers_win():
    app = ws_app()

    @app.get("/secure-login")
    async def secure_login(request):
        r = Response("in")
        r.set_cookie("tls", "only", secure=True)
        return r

    @app.websocket("/ws/offer")
    async def offer(ws: WebSocket):
        await ws.accept(subprotocol=ws.subprotocols[-1] if ws.subprotocols else None)
        await ws.send_json({"cookies": ws.cookies, "host": ws.headers.get("host"),
                            "origin": ws.headers.get("origin"), "offered": ws.subprotocols})

    with TestClient(app, base_url="https://testserver") as client:
        client.get("/secure-login")
        with client.websocket_connect("/ws/offer", subprotocols=["a", "b"]) as ws:  # wss: the secure cookie goes
            assert ws.accepted_subprotocol == "b"
            assert ws.receive_json() == {"cookies": {"tls": "only"}, "host": "testserver", "origin": None,
                                         "offered": ["a", "b"]}
        with client.websocket_connect("ws://testserver/ws/offer", headers={"Host": "example.org",
                                      "Origin": "https://example.org"}) as ws:  # ws: it stays home
            assert ws.receive_json() == {"cookies": {}, "host": "example.org", "origin": "https://example.org",
                                         "offered": []}
        with client.websocket_connect("wss://testserver/ws/offer") as ws:
            assert ws.receive_json()["cookies"] == {"tls": "only"}


# -- frames written before the server closed are all delivered; close codes are the handshake's --------

def test_sync_websocket_frames_before_the_tcp_close_arrive_then_1009():
    sent = asyncio.Event()
    app = ws_app(sent)
    with TestClient(app, ws_max_size=100) as client:
        with client.websocket_connect("/ws/sent") as ws:
            client._portal.call(asyncio.wait_for(sent.wait(), 5))  # "one" and "two" are written
            ws.send_text("x" * 1000)  # past ws_max_size: the server sends close 1009 and closes TCP
            assert [ws.receive_text(), ws.receive_text()] == ["one", "two"]
            with pytest.raises(WebSocketClosed) as closed:
                ws.receive()
            assert closed.value.code == 1009
        assert ws.close_code == 1009


async def test_async_websocket_frames_before_the_tcp_close_arrive_then_1009():
    sent = asyncio.Event()
    app = ws_app(sent)
    async with AsyncTestClient(app, ws_max_size=100) as client:
        async with client.websocket_connect("/ws/sent") as ws:
            await asyncio.wait_for(sent.wait(), 5)
            await ws.send_bytes(b"x" * 1000)
            assert [await ws.receive_text(), await ws.receive_text()] == ["one", "two"]
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive()
            assert closed.value.code == 1009


def test_sync_websocket_close_records_the_servers_answer():
    with TestClient(ws_app()) as client:
        with client.websocket_connect("/ws/echo") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "hi"
            ws.close(1000)
            assert (ws.close_code, ws.close_reason) == (1000, "")
        with client.websocket_connect("/ws/parting") as ws:
            pass  # never read: the close in the buffer is still the one recorded
        assert (ws.close_code, ws.close_reason) == (4002, "done")
    with TestClient(ws_app(), ws_max_size=100) as client:
        with client.websocket_connect("/ws/echo") as ws:
            ws.send_text("x" * 1000)  # the server closed with 1009, and closed TCP, before the test reads
        assert ws.close_code == 1009

