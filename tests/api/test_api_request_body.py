"""Reading the request body: ``body()`` (repeatable; ``stream()`` afterwards replays it) and ``stream()``
(once, keeping nothing: a read after it raises ``RuntimeError`` rather than seeing an empty body).

Real server on 127.0.0.1, httpx2 client.
"""

from __future__ import annotations

from aioserve import App
from tests.support import http_client, running


async def test_body_after_stream_raises_instead_of_answering_empty():
    app = App()

    async def attempt(read):
        try:
            return {"got": repr(await read())}
        except RuntimeError as exc:
            return {"error": str(exc)}

    @app.post("/after-stream/{then}")
    async def after_stream(request, then: str):
        async for _ in request.stream():
            if then.startswith("partial"):
                break
        what = then.removeprefix("partial-")
        return await attempt({"body": request.body, "json": request.json, "form": request.form,
                              "stream": lambda: _drain(request)}[what])

    @app.post("/body-first")
    async def body_first(request):
        body = await request.body()
        return {"body": body.decode(), "stream": (await _drain(request)).decode(), "again": (await request.body()).decode()}

    async with running(app) as server, http_client(server) as client:
        for then in ("body", "json", "form", "stream", "partial-body", "partial-stream"):
            r = await client.post(f"/after-stream/{then}", content=b"a=1",
                                  headers={"content-type": "application/x-www-form-urlencoded"})
            assert r.status_code == 200, then
            assert "stream()" in r.json().get("error", ""), (then, r.json())
        r = await client.post("/after-stream/body")  # an empty body too: the read already happened
        assert "stream()" in r.json().get("error", "")
        r = await client.post("/body-first", content=b"hello")  # body() first: stream() replays it
        assert r.json() == {"body": "hello", "stream": "hello", "again": "hello"}


async def _drain(request) -> bytes:
    return b"".join([piece async for piece in request.stream()])
