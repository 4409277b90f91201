"""Starlette benchmark app, served by uvicorn (httptools + uvloop, one worker, no access log)."""
from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .payload import EXTRA_ROUTES, JSON_OBJ


async def plaintext(request: Request):
    return PlainTextResponse("Hello, World!")


async def json_(request: Request):
    return JSONResponse(JSON_OBJ)


def _make_extra(i: int):
    async def extra(request: Request):
        return JSONResponse({"route": i, "id": request.path_params["id"]})

    return extra


async def user(request: Request):
    return JSONResponse({"id": request.path_params["id"]})


async def echo(request: Request):
    return Response(await request.body(), media_type="application/json")


routes = [Route("/plaintext", plaintext), Route("/json", json_)]
routes += [Route(f"/r{i}/{{id:int}}/x", _make_extra(i)) for i in range(EXTRA_ROUTES)]
routes += [Route("/users/{id:int}", user), Route("/echo", echo, methods=["POST"])]

app = Starlette(routes=routes)
