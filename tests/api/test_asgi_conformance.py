"""ASGI apps under aioserve, held to the ASGI spec (asgiref ``www.rst``) and to HTTP: what the app
declares is what the client gets, a response the server cannot send is a 500 while nothing was sent,
and ``receive()`` says ``http.disconnect`` as soon as the client is gone or the response is sent."""
from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tests.support import raw_connection, request_bytes, running


def one_response(headers: list, bodies: list[tuple[bytes, bool]]):
    """A bare ASGI app answering every request with ``headers`` and the body messages ``bodies``."""
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for body, more in bodies:
            await send({"type": "http.response.body", "body": body, "more_body": more})

    return app


def errors_naming(logs, name: str) -> list[logging.LogRecord]:
    return [r for r in logs.at_least(logging.ERROR) if name in r.getMessage()]


# -- HEAD: the Content-Length a GET would carry (RFC 9110 9.3.2) ------------------------------------------
async def test_head_keeps_the_content_length_the_app_declared(tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"b" * 5000)
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "s.txt").write_bytes(b"s" * 777)
    raw = one_response([(b"content-length", b"1234"), (b"content-type", b"text/plain")], [(b"", False)])
    app = Starlette(routes=[Route("/file", lambda r: FileResponse(blob), methods=["GET", "HEAD"]),
                            Mount("/static", StaticFiles(directory=tmp_path / "static")), Mount("/raw", raw)])
    async with running(app, lifespan="off") as server, raw_connection(server) as conn:
        for target, length in (("/file", "5000"), ("/static/s.txt", "777"), ("/raw/x", "1234")):
            await conn.send(request_bytes("HEAD", target))
            response = await conn.read_final_response("HEAD")
            assert response.status == 200 and response.body == b"", target
            assert response.getall("content-length") == [length], target
        await conn.send(request_bytes("GET", "/file"))  # the connection is still in step
        response = await conn.read_final_response()
        assert response.status == 200 and response.body == b"b" * 5000
