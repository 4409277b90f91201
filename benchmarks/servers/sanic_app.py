"""Sanic benchmark app: ``python -m benchmarks.servers.sanic_app --port P`` (single process, no access log)."""
from __future__ import annotations

import argparse

from sanic import Sanic
from sanic.response import json as sjson
from sanic.response import raw, text

from .payload import EXTRA_ROUTES, JSON_OBJ

app = Sanic("bench")
app.config.KEEP_ALIVE_TIMEOUT = 120  # idle-connection benchmark holds connections open
app.config.REQUEST_MAX_SIZE = 1 << 20


@app.get("/plaintext")
async def plaintext(request):
    return text("Hello, World!")


@app.get("/json")
async def json_(request):
    return sjson(JSON_OBJ)


def _make_extra(i: int):
    async def extra(request, id: int):
        return sjson({"route": i, "id": id})

    extra.__name__ = f"extra_{i}"
    return extra


for _i in range(EXTRA_ROUTES):
    app.add_route(_make_extra(_i), f"/r{_i}/<id:int>/x", methods=["GET"], name=f"extra_{_i}")


@app.get("/users/<id:int>")
async def user(request, id: int):
    return sjson({"id": id})


@app.post("/echo")
async def echo(request):
    return raw(request.body, content_type="application/json")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    a = p.parse_args()
    app.run(host=a.host, port=a.port, single_process=True, access_log=False, debug=False, motd=False)
