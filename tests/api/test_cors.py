"""CORS (aioserve/cors.py) and the App.finishers seam: preflights, simple requests, credentials,
regex origins, error answers, Vary, and finishers on every kind of answer."""

from __future__ import annotations

import pytest

from aioserve import App, HTTPError, Response, stream
from tests.support import http_client, running

A = "https://a.example"
EVIL = "https://evil.example"


def cors_headers(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def make_app(**cors) -> App:
    app = App()
    cors.setdefault("allow_origins", [A])
    app.add_cors(**cors)

    @app.get("/")
    async def index(request):
        return "hi"

    @app.route("/items/{item_id:int}", methods=["GET", "PUT"])
    async def item(request, item_id: int):
        return {"id": item_id}

    @app.get("/boom")
    async def boom(request):
        raise RuntimeError("boom")

    @app.get("/teapot")
    async def teapot(request):
        raise HTTPError(418, "short and stout")

    @app.get("/stream")
    async def streamed(request):
        async def gen():
            yield "a"
            yield "b"
        return stream(gen(), content_type="text/plain")

    @app.get("/vary")
    async def vary(request):
        return Response("v", headers={"Vary": "Accept-Encoding"})

    @app.route("/own", methods=["GET", "OPTIONS"])
    async def own(request):
        return Response(b"", 200, {"X-Own-Options": "yes"}) if request.method == "OPTIONS" else "own"

    return app


def preflight(method: str = "PUT", origin: str = A, headers: str | None = None) -> dict[str, str]:
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        h["Access-Control-Request-Headers"] = headers
    return h


# --------------------------------------------------------------------------
# preflights
# --------------------------------------------------------------------------


async def test_allowed_preflight_is_answered_without_a_handler():
    app = make_app(allow_methods=["GET", "PUT"], allow_headers=["X-Token"], max_age=123, allow_credentials=True)
    async with running(app) as server, http_client(server) as c:
        r = await c.options("/items/7", headers=preflight("PUT", headers="x-token, Content-Type"))
        assert r.status_code == 204 and r.content == b""
        h = cors_headers(r)
        assert h["access-control-allow-origin"] == A
        assert h["access-control-allow-methods"] == "GET, PUT"
        assert h["access-control-allow-headers"] == "x-token, content-type"
        assert h["access-control-max-age"] == "123"
        assert h["access-control-allow-credentials"] == "true"
        assert "Origin" in r.headers["vary"]


@pytest.mark.parametrize("case", ["origin", "method", "header"])
async def test_refused_preflight_is_403_without_cors_headers(case):
    app = make_app(allow_methods=["GET"], allow_headers=["x-token"])
    request = {
        "origin": preflight("GET", origin=EVIL),
        "method": preflight("DELETE"),
        "header": preflight("GET", headers="x-token, x-other"),
    }[case]
    async with running(app) as server, http_client(server) as c:
        r = await c.options("/", headers=request)
        assert r.status_code == 403
        assert cors_headers(r) == {}
        assert r.headers["vary"] == "Origin"


async def test_a_route_that_declares_options_answers_its_own_preflight():
    app = make_app()
    async with running(app) as server, http_client(server) as c:
        r = await c.options("/own", headers=preflight("GET"))
        assert r.status_code == 200 and r.headers["x-own-options"] == "yes"
        assert r.headers["access-control-allow-origin"] == A  # the finisher still speaks for the origin
        r = await c.options("/own", headers=preflight("GET", origin=EVIL))
        assert r.status_code == 200 and cors_headers(r) == {}


async def test_plain_options_stays_405_and_unknown_path_404():
    app = make_app()
    async with running(app) as server, http_client(server) as c:
        r = await c.options("/items/3")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, PUT"
        r = await c.options("/nowhere", headers=preflight("GET"))
        assert r.status_code == 404 and r.headers["access-control-allow-origin"] == A


async def test_wildcard_methods_and_headers_echo_the_request():
    app = make_app(allow_methods="*", allow_headers=["*"])
    async with running(app) as server, http_client(server) as c:
        r = await c.options("/", headers=preflight("PURGE", headers="X-Anything"))
        assert r.status_code == 204
        assert r.headers["access-control-allow-methods"] == "PURGE"
        assert r.headers["access-control-allow-headers"] == "x-anything"
        assert "Access-Control-Request-Method" in r.headers["vary"]


# --------------------------------------------------------------------------
# simple requests and every kind of answer
# --------------------------------------------------------------------------


async def test_allowed_origin_gets_cors_headers_and_vary():
    app = make_app(expose_headers=["X-Request-Id", "X-Other"])
    async with running(app) as server, http_client(server) as c:
        r = await c.get("/", headers={"Origin": A})
        assert r.status_code == 200 and r.text == "hi"
        assert cors_headers(r) == {"access-control-allow-origin": A,
                                   "access-control-expose-headers": "X-Other, X-Request-Id"}
        assert r.headers["vary"] == "Origin"


async def test_disallowed_or_absent_origin_gets_no_cors_headers_but_vary():
    app = make_app()
    async with running(app) as server, http_client(server) as c:
        for headers in ({"Origin": EVIL}, {}, {"Origin": "null"}, {"Origin": A + ".evil.example"}):
            r = await c.get("/", headers=headers)
            assert r.status_code == 200 and cors_headers(r) == {}, headers
            assert r.headers["vary"] == "Origin"


@pytest.mark.parametrize("path,status", [("/nowhere", 404), ("/boom", 500), ("/teapot", 418), ("/stream", 200)])
async def test_error_and_streamed_answers_carry_cors_headers(path, status):
    app = make_app()
    async with running(app) as server, http_client(server) as c:
        r = await c.get(path, headers={"Origin": A})
        assert r.status_code == status
        assert r.headers["access-control-allow-origin"] == A and r.headers["vary"] == "Origin"
        r = await c.get(path, headers={"Origin": EVIL})
        assert r.status_code == status and cors_headers(r) == {}


async def test_405_carries_cors_headers():
    app = make_app()
    async with running(app) as server, http_client(server) as c:
        r = await c.delete("/", headers={"Origin": A})
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
        assert r.headers["access-control-allow-origin"] == A


async def test_vary_is_merged_with_the_handlers():
    app = make_app()
    async with running(app) as server, http_client(server) as c:
        r = await c.get("/vary", headers={"Origin": A})
        assert r.headers.get_list("vary") == ["Accept-Encoding", "Origin"]


async def test_wildcard_origin_answers_star_without_vary():
    app = make_app(allow_origins=["*"])
    async with running(app) as server, http_client(server) as c:
        r = await c.get("/", headers={"Origin": EVIL})
        assert r.headers["access-control-allow-origin"] == "*"
        assert "vary" not in r.headers
        r = await c.options("/", headers=preflight("GET", origin=EVIL))
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"


async def test_credentials_echo_the_origin_and_never_star():
    app = make_app(allow_credentials=True)
    async with running(app) as server, http_client(server) as c:
        r = await c.get("/", headers={"Origin": A})
        assert r.headers["access-control-allow-origin"] == A
        assert r.headers["access-control-allow-credentials"] == "true"
    with pytest.raises(ValueError, match="credentials"):
        App().add_cors(allow_origins=["*"], allow_credentials=True)


async def test_origin_regex_is_matched_whole():
    app = make_app(allow_origins=[], allow_origin_regex=r"https://[a-z0-9-]+\.example\.org")
    async with running(app) as server, http_client(server) as c:
        r = await c.get("/", headers={"Origin": "https://shop.example.org"})
        assert r.headers["access-control-allow-origin"] == "https://shop.example.org"
        for origin in ("https://shop.example.org.evil.com", "http://shop.example.org", "https://example.org"):
            r = await c.get("/", headers={"Origin": origin})
            assert cors_headers(r) == {}, origin
        r = await c.options("/", headers=preflight("GET", origin="https://x.example.org"))
        assert r.status_code == 204


def test_configuration_errors():
    with pytest.raises(ValueError):
        App().add_cors(allow_origins=[])
    with pytest.raises(ValueError):
        App().add_cors(allow_origins=[A], max_age=-1)


async def test_cors_with_middleware():
    app = make_app()

    @app.middleware
    async def mark(request, call_next):
        response = await call_next(request)
        response.headers["X-Mw"] = "1"
        return response

    async with running(app) as server, http_client(server) as c:
        r = await c.get("/", headers={"Origin": A})
        assert r.headers["x-mw"] == "1" and r.headers["access-control-allow-origin"] == A
        r = await c.options("/", headers=preflight("GET"))
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == A


# --------------------------------------------------------------------------
# the finishers seam
# --------------------------------------------------------------------------


async def test_finishers_run_in_order_on_every_answer():
    app = App()
    app.finishers.append(lambda request, response: (response.headers.add("X-Trail", "1"), response)[1])
    app.finishers.append(lambda request, response: (response.headers.add("X-Trail", "2"), response)[1])

    @app.get("/dict")
    async def as_dict(request):
        return {"a": 1}

    @app.get("/boom")
    async def boom(request):
        raise RuntimeError("boom")

    async with running(app) as server, http_client(server) as c:
        for path, status in (("/dict", 200), ("/boom", 500), ("/nowhere", 404)):
            r = await c.get(path)
            assert r.status_code == status and r.headers.get_list("x-trail") == ["1", "2"], path
        r = await c.post("/dict")
        assert r.status_code == 405 and r.headers.get_list("x-trail") == ["1", "2"]


def test_an_app_without_finishers_pays_nothing():
    app = App()

    @app.get("/")
    async def index(request):
        return "hi"

    app.compile()
    assert app.finish is None and app.entry is None
    app.add_cors(allow_origins=[A])
    app.compile()
    assert app.finish is not None and app.entry is None  # the connection applies it: no middleware cost
