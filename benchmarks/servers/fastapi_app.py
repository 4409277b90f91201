"""FastAPI benchmark app: the Starlette app's endpoints (starlette_app.py), written the FastAPI way,
``async def`` throughout, path parameters typed (so the int conversion and validation are FastAPI's)."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from .payload import EXTRA_ROUTES, JSON_OBJ

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/plaintext", response_class=PlainTextResponse)
async def plaintext():
    return "Hello, World!"


@app.get("/json")
async def json_():
    return JSON_OBJ


def _make_extra(i: int):
    async def extra(id: int):
        return {"route": i, "id": id}

    return extra


for _i in range(EXTRA_ROUTES):
    app.get(f"/r{_i}/{{id}}/x")(_make_extra(_i))


@app.get("/users/{id}")
async def user(id: int):
    return {"id": id}


@app.post("/echo")
async def echo(request: Request):
    return Response(await request.body(), media_type="application/json")
