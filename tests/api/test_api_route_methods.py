"""The methods a route is registered for: one string is one method; each must be an HTTP token
(RFC 9110 5.6.2), checked at registration with one clear line naming the route.

Real server on 127.0.0.1, httpx2 client.
"""

from __future__ import annotations

import pytest

from aioserve import App
from aioserve.radix import RouteError
from tests.support import http_client, running


def _allow(response) -> list[str]:
    return [m.strip() for m in response.headers["allow"].split(",")]


@pytest.mark.parametrize("methods", ["POST", "post", ("POST",)])
async def test_methods_given_as_one_string_is_one_method(methods):
    app = App()

    @app.route("/x", methods=methods)
    async def x(request):
        return "x"

    assert app.routes[-1].methods == ("POST",)
    async with running(app) as server, http_client(server) as client:
        assert (await client.post("/x")).text == "x"
        r = await client.get("/x")
        assert r.status_code == 405 and _allow(r) == ["POST"]


@pytest.mark.parametrize("methods", [["GET POST"], ["GE(T"], ["PO\r\nST"], [""], [b"GET"], [None], "GET POST"])
def test_methods_that_are_not_tokens_are_refused_at_registration(methods):
    app = App()
    with pytest.raises((RouteError, TypeError), match="/x"):
        app.route("/x", methods=methods)(lambda request: "x")
    with pytest.raises((RouteError, TypeError), match="/x"):
        app.add_route("/x", lambda request: "x", methods)
    assert app.routes == [] and app.tree.match("/x") is None
