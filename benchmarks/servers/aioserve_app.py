"""aioserve benchmark app (launched by ``python -m aioserve benchmarks.servers.aioserve_app:app``)."""
from __future__ import annotations

from aioserve import App, Request, Response

from .payload import EXTRA_ROUTES, JSON_OBJ

app = App()


@app.get("/plaintext")
async def plaintext(request: Request):
    return "Hello, World!"


@app.get("/plaintext-def")
def plaintext_def(request: Request):  # a plain def: runs inline on the loop
    return "Hello, World!"


@app.get("/json")
async def json_(request: Request):
    return JSON_OBJ


def _make_extra(i: int):
    async def extra(request: Request, id: int):
        return {"route": i, "id": id}

    extra.__name__ = f"extra_{i}"
    return extra


for _i in range(EXTRA_ROUTES):
    app.get(f"/r{_i}/{{id:int}}/x")(_make_extra(_i))


@app.get("/users/{id:int}")
async def user(request: Request, id: int):
    return {"id": id}


@app.post("/echo")
async def echo(request: Request):
    body = await request.body()
    return Response(body, content_type="application/json")
