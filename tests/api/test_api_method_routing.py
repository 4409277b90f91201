"""Routing by path AND method: a request goes to the first route (in match order) whose pattern matches
its path and that allows its method; 405 only when routes match the path but none allows the method,
with an ``Allow`` listing the methods of every route matching the path.

Real server on 127.0.0.1, httpx2 client.
"""

from __future__ import annotations

from aioserve import App
from tests.support import http_client, running


def _allow(response) -> list[str]:
    return [m.strip() for m in response.headers["allow"].split(",")]


async def test_a_static_route_for_another_method_does_not_hide_a_parameter_route():
    app = App()

    @app.get("/users/me")
    async def me(request):
        return "me"

    @app.delete("/users/{uid}")
    async def delete(request, uid: str):
        return f"deleted {uid}"

    async with running(app) as server, http_client(server) as client:
        r = await client.delete("/users/me")
        assert (r.status_code, r.text) == (200, "deleted me")
        assert (await client.get("/users/me")).text == "me"
        assert (await client.head("/users/me")).status_code == 200
        assert (await client.delete("/users/7")).text == "deleted 7"
        r = await client.put("/users/me")  # both routes match the path, neither allows PUT
        assert r.status_code == 405 and _allow(r) == ["DELETE", "GET", "HEAD"]
        r = await client.get("/users/7")  # only the parameter route matches
        assert r.status_code == 405 and _allow(r) == ["DELETE"]


async def test_a_parameter_route_for_another_method_does_not_hide_a_lower_priority_one():
    app = App()

    @app.get("/items/{iid:int}")
    async def get_item(request, iid: int):
        return {"iid": iid}

    @app.post("/items/{name}")
    async def post_item(request, name: str):
        return {"name": name}

    async with running(app) as server, http_client(server) as client:
        for _ in range(2):  # the second time from the lookup cache
            r = await client.post("/items/5")
            assert r.status_code == 200 and r.json() == {"name": "5"}
            assert (await client.get("/items/5")).json() == {"iid": 5}
        assert (await client.post("/items/abc")).json() == {"name": "abc"}
        r = await client.get("/items/abc")
        assert r.status_code == 405 and _allow(r) == ["POST"]
        r = await client.put("/items/5")
        assert r.status_code == 405 and _allow(r) == ["GET", "HEAD", "POST"]
        assert (await client.get("/items/5/x")).status_code == 404


async def test_a_static_post_route_does_not_hide_a_get_route_below_it():
    app = App()

    @app.post("/files/upload")
    async def upload(request):
        return "uploaded"

    @app.get("/files/{rest:path}")
    async def files(request, rest: str):
        return f"file {rest}"

    @app.post("/files/{a}/{b}")
    async def two(request, a: str, b: str):
        return f"two {a} {b}"

    async with running(app) as server, http_client(server) as client:
        assert (await client.post("/files/upload")).text == "uploaded"
        assert (await client.get("/files/upload")).text == "file upload"
        r = await client.head("/files/upload")
        assert r.status_code == 200 and r.content == b""
        assert (await client.get("/files/x/y")).text == "file x/y"
        assert (await client.post("/files/x/y")).text == "two x y"
        r = await client.delete("/files/upload")
        assert r.status_code == 405 and _allow(r) == ["GET", "HEAD", "POST"]


async def test_options_preflight_and_plain_options_see_every_matching_route():
    app = App()
    app.add_cors(allow_origins=["https://example.com"], allow_methods=["GET", "DELETE"])

    @app.get("/users/me")
    async def me(request):
        return "me"

    @app.delete("/users/{uid}")
    async def delete(request, uid: str):
        return f"deleted {uid}"

    @app.options("/own/{x}")
    async def own_options(request, x: str):
        return f"own {x}"

    @app.get("/own/fixed")
    async def fixed(request):
        return "fixed"

    async with running(app) as server, http_client(server) as client:
        r = await client.options("/users/me")  # plain OPTIONS: a 405 naming every method the path has
        assert r.status_code == 405 and _allow(r) == ["DELETE", "GET", "HEAD"]
        r = await client.options("/users/me", headers={"Origin": "https://example.com",
                                                      "Access-Control-Request-Method": "DELETE"})
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "https://example.com"
        # A route that declares OPTIONS handles its own, even under a static route for another method.
        assert (await client.options("/own/fixed")).text == "own fixed"
