"""aioserve.testing runs a handler as the server does: an inline handler has no task, and an https
base_url (or request URL) is served as https."""
from __future__ import annotations

import asyncio

from aioserve import App, WebSocket, redirect
from aioserve.testing import AsyncTestClient, TestClient
from tests.support.server import http_client, running


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
