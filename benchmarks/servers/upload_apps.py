"""One upload endpoint per framework for ``benchmarks.upload``: parse a multipart form the way each
framework's documentation shows, and answer with the file's size. Factories, so each import stays
with its own server process."""
from __future__ import annotations


def aioserve_app():
    from aioserve import App

    app = App()

    @app.post("/upload", max_body_size=None)
    async def upload(request):
        async with await request.form() as form:
            return {"size": form.files["file"].size}

    return app


def starlette_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def upload(request):
        async with request.form() as form:  # python-multipart; files spool past 1 MiB
            return JSONResponse({"size": form["file"].size})

    return Starlette(routes=[Route("/upload", upload, methods=["POST"])])


def aiohttp_app():
    from aiohttp import web

    async def upload(request):
        form = await request.post()  # files go to a temporary file
        f = form["file"]
        f.file.seek(0, 2)
        return web.json_response({"size": f.file.tell()})

    app = web.Application(client_max_size=2**31)
    app.router.add_post("/upload", upload)
    return app
