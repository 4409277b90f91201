"""aiohttp benchmark app: ``python -m benchmarks.servers.aiohttp_app --port P`` (uvloop, no access log)."""
from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from .payload import EXTRA_ROUTES, JSON_OBJ

try:
    import orjson

    def _dumps(obj) -> str:
        return orjson.dumps(obj).decode()
except ImportError:  # pragma: no cover
    import json

    _dumps = json.dumps


async def plaintext(request: web.Request):
    return web.Response(text="Hello, World!")


async def json_(request: web.Request):
    return web.json_response(JSON_OBJ, dumps=_dumps)


def _make_extra(i: int):
    async def extra(request: web.Request):
        return web.json_response({"route": i, "id": int(request.match_info["id"])}, dumps=_dumps)

    return extra


async def user(request: web.Request):
    return web.json_response({"id": int(request.match_info["id"])}, dumps=_dumps)


async def echo(request: web.Request):
    return web.Response(body=await request.read(), content_type="application/json")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/plaintext", plaintext)
    app.router.add_get("/json", json_)
    for i in range(EXTRA_ROUTES):
        app.router.add_get(f"/r{i}/{{id:\\d+}}/x", _make_extra(i))
    app.router.add_get("/users/{id:\\d+}", user)
    app.router.add_post("/echo", echo)
    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    a = p.parse_args()
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    web.run_app(make_app(), host=a.host, port=a.port, access_log=None, print=None,
                keepalive_timeout=120, loop=loop)
