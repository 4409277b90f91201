"""aioserve.testing: the clients drive the real connection through an in-memory transport."""
from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import pytest

from aioserve import App, HTTPError, Response, WebSocket, stream
from aioserve.testing import AsyncTestClient, TestClient, WebSocketClosed, WebSocketRejected

README = Path(__file__).resolve().parents[2] / "README.md"


def make_app() -> tuple[App, list[str], dict]:
    app = App()
    hooks: list[str] = []
    gate: dict = {}

    @app.on_startup
    async def up():
        hooks.append("startup")

    @app.on_shutdown
    async def down():
        hooks.append("shutdown")

    @app.get("/boom")
    async def boom(request):
        raise ValueError("boom from the handler")

    @app.get("/teapot")
    async def teapot(request):
        raise HTTPError(418)

    @app.post("/echo")
    async def echo(request):
        return Response(await request.body(), content_type=request.headers.get("content-type"))

    @app.get("/login")
    async def login(request):
        r = Response("in")
        r.set_cookie("sid", "s3cret")
        return r

    @app.get("/me")
    async def me(request):
        return request.cookies.get("sid", "anonymous")

    @app.get("/ticks")
    async def ticks(request):
        async def gen():
            for i in range(3):
                yield f"{i}\n"
                # The test acknowledges each chunk before the next is made: proof it arrived on its own.
                ev = gate.setdefault(i, asyncio.Event())
                await asyncio.wait_for(ev.wait(), 5)
        return stream(gen(), content_type="text/plain")

    @app.get("/client")
    async def client(request):
        return {"client": list(request.client), "host": request.headers["host"]}

    @app.websocket("/ws/echo")
    async def ws_echo(ws: WebSocket):
        await ws.accept()
        async for message in ws:
            await ws.send(message)

    @app.websocket("/ws/refuse")
    async def ws_refuse(ws: WebSocket):
        await ws.close()

    @app.websocket("/ws/bye")
    async def ws_bye(ws: WebSocket):
        await ws.accept()
        await ws.close(4001, "bye")

    return app, hooks, gate


def test_readme_example_runs():
    text = README.read_text()
    section = text.split("## Testing your app", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README:Testing your app", "exec"), namespace)
    namespace["test_user"]()
    asyncio.run(namespace["test_echo"]())


def test_sync_basics_hooks_and_headers():
    app, hooks, _ = make_app()
    with TestClient(app) as client:
        assert hooks == ["startup"]
        r = client.post("/echo", json={"a": 1})
        assert r.status_code == 200 and r.json() == {"a": 1}
        assert r.headers["content-length"] == str(len(r.content)) and "date" in r.headers
        assert client.get("/client").json() == {"client": ["testclient", 50000], "host": "testserver"}
        assert client.get("/nope").status_code == 404
        assert client.get("/teapot").status_code == 418
    assert hooks == ["startup", "shutdown"]


def test_cookies_persist():
    app, _, _ = make_app()
    with TestClient(app) as client:
        assert client.get("/me").text == "anonymous"
        client.get("/login")
        assert client.get("/me").text == "s3cret"


def test_server_exceptions_raise_or_500():
    app, _, _ = make_app()
    with TestClient(app) as client:
        with pytest.raises(ValueError, match="boom from the handler"):
            client.get("/boom")
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
        assert r.status_code == 500 and r.text == "Internal Server Error"


def test_failing_startup_raises_on_enter():
    app = App()

    @app.on_startup
    async def broken():
        raise RuntimeError("no database")

    with pytest.raises(RuntimeError, match="no database"):
        with TestClient(app):
            pass


def test_server_limits_apply():
    app, _, _ = make_app()
    with TestClient(app, max_body_size=10) as client:
        assert client.post("/echo", content=b"x" * 10).status_code == 200
        assert client.post("/echo", content=b"x" * 11).status_code == 413


def test_sync_stream_arrives_as_produced():
    app, _, gate = make_app()
    with TestClient(app) as client:
        with client.stream("GET", "/ticks") as r:
            assert r.headers["transfer-encoding"] == "chunked"
            got = []
            for piece in r.iter_bytes():
                got.append(piece)
                n = int(piece.decode().strip())
                client._portal.call(_set(gate, n))
        assert got == [b"0\n", b"1\n", b"2\n"]


async def _set(gate: dict, n: int) -> None:
    gate.setdefault(n, asyncio.Event()).set()


async def test_async_client_stream_cookies_errors():
    app, hooks, gate = make_app()
    async with AsyncTestClient(app) as client:
        assert hooks == ["startup"]
        async with client.stream("GET", "/ticks") as r:
            got = []
            async for piece in r.aiter_bytes():
                got.append(piece)
                await _set(gate, int(piece.decode().strip()))
        assert got == [b"0\n", b"1\n", b"2\n"]
        await client.get("/login")
        assert (await client.get("/me")).text == "s3cret"
        with pytest.raises(ValueError):
            await client.get("/boom")
        r = await client.post("/echo", content=b"x" * 100_000)  # past the write high-water mark
        assert r.content == b"x" * 100_000
    assert hooks == ["startup", "shutdown"]


def test_sync_websocket():
    app, _, _ = make_app()
    with TestClient(app) as client:
        with client.websocket_connect("/ws/echo") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "hi"
            ws.send_bytes(b"\x00\x01")
            assert ws.receive_bytes() == b"\x00\x01"
            ws.send_json({"n": 1})
            assert ws.receive_json() == {"n": 1}
        with pytest.raises(WebSocketRejected) as refused:
            with client.websocket_connect("/ws/refuse"):
                pass
        assert refused.value.status == 403
        with client.websocket_connect("/ws/bye") as ws:
            with pytest.raises(WebSocketClosed) as closed:
                ws.receive()
            assert closed.value.code == 4001


async def test_async_websocket():
    app, _, _ = make_app()
    async with AsyncTestClient(app) as client:
        async with client.websocket_connect("/ws/echo") as ws:
            await ws.send_text("hello")
            assert await ws.receive_text() == "hello"


def test_sync_client_runs_app_off_the_test_thread():
    app = App()
    seen = []

    @app.get("/")
    async def index(request):
        seen.append(threading.current_thread() is threading.main_thread())
        return "ok"

    with TestClient(app) as client:
        assert client.get("/").text == "ok"
    assert seen == [False]


def test_factory_and_interface_mean_what_they_mean_to_serve():
    from aioserve import App

    def make() -> App:
        app = App()

        @app.get("/")
        async def index(request):
            return "made"

        return app

    with TestClient(make, factory=True) as client:
        assert client.get("/").text == "made"
    with TestClient(make(), interface="asgi") as client:  # through the ASGI adapter (App.__call__)
        assert client.get("/").text == "made"
    with pytest.raises(TypeError, match="factory=True"):
        TestClient(make(), factory=True)
