"""Static files and a compressed JSON answer, per framework, for ``benchmarks.files``.

Each app serves the directory in ``AIOSERVE_BENCH_FILES`` at ``/f/`` the way its documentation shows,
and ``GET /json`` (the 20 KB ``payload()``) gzip-compressed when the client accepts it (level 6 for
all: Starlette's GZipMiddleware defaults to 9, which would measure zlib, not the server). Factories,
so each import stays with its own server process.
"""
from __future__ import annotations

import os


def payload() -> list[dict]:
    """About 20 KB of JSON: 168 records of a typical API list answer."""
    return [{"id": i, "name": f"user-{i:04d}", "email": f"user{i}@example.com", "active": i % 3 != 0,
             "score": round(i * 1.37, 2), "tags": ["alpha", "beta"][: i % 3], "city": "Lisbon"}
            for i in range(168)]


def aioserve_app():
    from aioserve import App

    app = App(compress=True)
    app.static("/f", os.environ["AIOSERVE_BENCH_FILES"])
    data = payload()

    @app.get("/json")
    async def json_(request):
        return data

    return app


def starlette_app():
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    data = payload()

    async def json_(request):
        return JSONResponse(data)

    return Starlette(routes=[Route("/json", json_), Mount("/f", StaticFiles(directory=os.environ["AIOSERVE_BENCH_FILES"]))],
                     middleware=[Middleware(GZipMiddleware, minimum_size=500, compresslevel=6)])


def aiohttp_app():
    from aiohttp import web

    data = payload()

    async def json_(request):
        response = web.json_response(data)
        response.enable_compression()  # negotiates from Accept-Encoding; zlib's default level (6)
        return response

    app = web.Application()
    app.router.add_get("/json", json_)
    app.router.add_static("/f", os.environ["AIOSERVE_BENCH_FILES"])
    return app
