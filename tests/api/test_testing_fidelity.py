"""aioserve.testing runs a handler as the server does: an inline handler has no task, and an https
base_url (or request URL) is served as https."""
from __future__ import annotations

import asyncio

from aioserve import App, WebSocket, redirect
from aioserve.testing import AsyncTestClient, TestClient
from tests.support.server import http_client, running


# -- a handler run inline has no task, as on the server ------------------------------------------------

def where_app() -> App:
    app = App()

    @app.get("/inline")
    async def inline(request):  # no await: the connection runs it inline
        return {"task": asyncio.current_task() is not None}

    @app.get("/task")
    async def in_task(request):
        await asyncio.sleep(0)
        return {"task": asyncio.current_task() is not None}

    return app


async def test_inline_handler_has_no_task_as_on_a_real_server():
    app = where_app()
    async with running(app) as server, http_client(server) as client:
        real = [(await client.get(p)).json()["task"] for p in ("/inline", "/task")]
    async with AsyncTestClient(app) as client:
        in_async = [(await client.get(p)).json()["task"] for p in ("/inline", "/task")]
    with TestClient(app) as client:
        in_sync = [client.get(p).json()["task"] for p in ("/inline", "/task")]
    assert real == in_async == in_sync == [False, True]


# -- an https base_url is served as https --------------------------------------------------------------

def scheme_app() -> App:
    app = App()

    @app.middleware
    async def https_only(request, call_next):
        if request.scheme != "https":
            return redirect(f"https://{request.headers['host']}{request.path}", status=308)
        return await call_next(request)

    @app.get("/s")
    async def s(request):
        return {"scheme": request.scheme}

    @app.websocket("/ws")
    async def ws(w: WebSocket):
        await w.accept()
        await w.send(w.request.scheme)

    return app


def test_https_base_url_is_served_as_https():
    with TestClient(scheme_app(), base_url="https://testserver") as client:
        r = client.get("/s")
        assert r.json() == {"scheme": "https"} and not r.history
        with client.websocket_connect("/ws") as ws:  # wss://
            assert ws.receive_text() == "https"
    with TestClient(scheme_app()) as client:
        r = client.get("/s")  # http: redirected once, then served over https
        assert r.json()["scheme"] == "https" and [h.status_code for h in r.history] == [308]
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_text() == "http"


async def test_async_https_request_url_is_served_as_https():
    async with AsyncTestClient(scheme_app()) as client:
        r = await client.get("https://testserver/s", follow_redirects=False)
        assert r.json()["scheme"] == "https"
