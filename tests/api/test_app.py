"""App-level behaviour: routing, handler results, errors, middleware, hooks.

These tests use a real client (httpx2) against a real server."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from aioserve import App, HTTPError, Request, Response, Router, json, text
from tests.support import capture_logs, http_client, raw_connection, request_bytes, running

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def test_method_decorators():
    app = App()

    @app.get("/r")
    async def get_(request):
        return "get"

    @app.post("/r")
    async def post_(request):
        return "post"

    @app.put("/r")
    async def put_(request):
        return "put"

    @app.patch("/r")
    async def patch_(request):
        return "patch"

    @app.delete("/r")
    async def delete_(request):
        return "delete"

    @app.options("/r")
    async def options_(request):
        return "options"

    @app.head("/h")
    async def head_(request):
        return Response(b"", headers={"X-Head": "explicit"})

    @app.route("/multi", methods=["GET", "POST"])
    async def multi(request):
        return request.method

    async with running(app) as server, http_client(server) as client:
        for method in METHODS:
            r = await client.request(method, "/r")
            assert r.status_code == 200, method
            assert r.text == method.lower()
        r = await client.head("/h")
        assert r.status_code == 200 and r.headers["x-head"] == "explicit"
        assert (await client.get("/multi")).text == "GET"
        assert (await client.post("/multi")).text == "POST"
        r = await client.put("/multi")
        assert r.status_code == 405
        assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}
        # A GET route answers HEAD too; an explicit HEAD-only route does not answer GET.
        assert (await client.head("/multi")).status_code == 200
        assert (await client.get("/h")).status_code == 405


def test_decorators_return_the_function():
    app = App()

    async def handler(request):
        return "x"

    assert app.get("/a")(handler) is handler
    router = Router()
    assert router.post("/b")(handler) is handler


async def test_router_include_with_prefix():
    app = App()
    api = Router()

    @api.get("/items/{item_id:int}")
    async def item(request, item_id: int):
        return {"item": item_id}

    @api.post("/items")
    async def create(request):
        return json({"created": True}, status=201)

    @app.get("/")
    async def root(request):
        return "root"

    app.include(api, prefix="/api")

    async with running(app) as server, http_client(server) as client:
        assert (await client.get("/api/items/3")).json() == {"item": 3}
        r = await client.post("/api/items")
        assert r.status_code == 201 and r.json() == {"created": True}
        assert (await client.get("/items/3")).status_code == 404
        assert (await client.get("/")).text == "root"


async def test_router_include_without_prefix_and_nested():
    app = App()
    outer = Router()
    inner = Router()

    @inner.get("/leaf")
    async def leaf(request):
        return "leaf"

    @outer.get("/ping")
    async def ping(request):
        return "pong"

    app.include(outer)
    app.include(inner, prefix="/v1/deep")

    async with running(app) as server, http_client(server) as client:
        assert (await client.get("/ping")).text == "pong"
        assert (await client.get("/v1/deep/leaf")).text == "leaf"


async def test_path_params_converted_and_in_request():
    app = App()
    captured: dict = {}

    @app.get("/i/{n:int}")
    async def as_int(request, n):
        captured["int"] = (n, dict(request.path_params))
        return {"n": n, "type": type(n).__name__}

    @app.get("/f/{x:float}")
    async def as_float(request, x):
        return {"x": x, "type": type(x).__name__}

    @app.get("/u/{ident:uuid}")
    async def as_uuid(request, ident):
        assert isinstance(ident, uuid.UUID)
        return {"uuid": str(ident)}

    @app.get("/s/{name}")
    async def as_str(request, name):
        return {"name": name}

    @app.get("/files/{rest:path}")
    async def as_path(request, rest):
        return {"rest": rest}

    @app.get("/two/{a}/and/{b:int}")
    async def two(request, a, b):
        return {"a": a, "b": b, "params": dict(request.path_params)}

    @app.get("/swapped/{a}/{b:int}")
    async def swapped(request, b, a):  # declared in another order than the pattern: bound by name
        return {"a": a, "b": b}

    @app.get("/kwonly/{a}/{b:int}")
    async def kwonly(request, *, a, b):
        await asyncio.sleep(0)  # runs in a task, not inline
        return {"a": a, "b": b, "params": request.path_params}

    @app.get("/extra/{a}")
    async def extra(request, a, suffix="!"):
        return {"a": a + suffix}

    ident = uuid.uuid4()
    async with running(app) as server, http_client(server) as client:
        assert (await client.get("/i/42")).json() == {"n": 42, "type": "int"}
        assert captured["int"] == (42, {"n": 42})
        assert (await client.get("/i/abc")).status_code == 404
        assert (await client.get("/f/2.5")).json() == {"x": 2.5, "type": "float"}
        assert (await client.get(f"/u/{ident}")).json() == {"uuid": str(ident)}
        assert (await client.get("/u/not-a-uuid")).status_code == 404
        assert (await client.get("/s/alice")).json() == {"name": "alice"}
        assert (await client.get("/s/alice/extra")).status_code == 404
        assert (await client.get("/files/a/b/c.txt")).json() == {"rest": "a/b/c.txt"}
        assert (await client.get("/two/x/and/7")).json() == {"a": "x", "b": 7, "params": {"a": "x", "b": 7}}
        assert (await client.get("/swapped/x/7")).json() == {"a": "x", "b": 7}
        assert (await client.get("/kwonly/x/7")).json() == {"a": "x", "b": 7, "params": {"a": "x", "b": 7}}
        assert (await client.get("/extra/x")).json() == {"a": "x!"}


async def test_static_segment_wins_over_parameter():
    app = App()

    @app.get("/users/{name}")
    async def by_name(request, name):
        return f"user {name}"

    @app.get("/users/me")
    async def me(request):
        return "me"

    async with running(app) as server, http_client(server) as client:
        assert (await client.get("/users/me")).text == "me"
        assert (await client.get("/users/bob")).text == "user bob"


def test_indistinguishable_routes_raise_at_registration():
    app = App()

    @app.get("/things/{a}")
    async def one(request, a):
        return a

    with pytest.raises(Exception) as info:

        @app.get("/things/{b}")
        async def two(request, b):
            return b

    message = str(info.value)
    assert "/things/{a}" in message and "/things/{b}" in message


async def test_same_path_different_methods_is_fine():
    app = App()

    @app.get("/same")
    async def g(request):
        return "g"

    @app.post("/same")
    async def p(request):
        return "p"

    async with running(app) as server, http_client(server) as client:
        got, posted = await client.get("/same"), await client.post("/same")
        assert (got.status_code, got.text) == (200, "g")
        assert (posted.status_code, posted.text) == (200, "p")
        put = await client.put("/same")
        assert put.status_code == 405
        assert {m.strip() for m in put.headers["allow"].split(",")} >= {"GET", "POST"}


async def test_handler_result_conversion():
    app = App()

    @app.get("/str")
    async def r_str(request):
        return "héllo"

    @app.get("/bytes")
    async def r_bytes(request):
        return b"\x00\x01raw"

    @app.get("/dict")
    async def r_dict(request):
        return {"a": 1, "b": [True, None], "c": "ü"}

    @app.get("/list")
    async def r_list(request):
        return [1, "two", {"three": 3}]

    @app.get("/none")
    async def r_none(request):
        return None

    @app.get("/response")
    async def r_response(request):
        return Response(b"<x/>", status=202, headers={"X-Custom": "yes"}, content_type="application/xml")

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/str")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.content == "héllo".encode()
        assert r.headers["content-length"] == str(len("héllo".encode()))

        r = await client.get("/bytes")
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.content == b"\x00\x01raw"

        r = await client.get("/dict")
        assert r.headers["content-type"].startswith("application/json")
        assert r.content == '{"a":1,"b":[true,null],"c":"ü"}'.encode()

        r = await client.get("/list")
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == [1, "two", {"three": 3}]

        r = await client.get("/none")
        assert r.status_code == 204
        assert r.content == b""

        r = await client.get("/response")
        assert r.status_code == 202
        assert r.headers["x-custom"] == "yes"
        assert r.headers["content-type"] == "application/xml"
        assert r.content == b"<x/>"


async def test_http_error_with_detail_and_headers():
    app = App()

    @app.get("/teapot")
    async def teapot(request):
        raise HTTPError(418, detail="teapot")

    @app.get("/auth")
    async def auth(request):
        raise HTTPError(401, detail="login first", headers={"WWW-Authenticate": 'Bearer realm="api"'})

    @app.get("/plain")
    async def plain(request):
        raise HTTPError(404)

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/teapot")
        assert r.status_code == 418 and r.text == "teapot"
        r = await client.get("/auth")
        assert r.status_code == 401
        assert r.text == "login first"
        assert r.headers["www-authenticate"] == 'Bearer realm="api"'
        r = await client.get("/plain")
        assert r.status_code == 404


async def test_exception_handlers():
    app = App()
    seen: list = []

    class Conflict(Exception):
        pass

    @app.exception_handler(KeyError)
    async def on_key_error(request, exc):
        seen.append((request.path, type(exc)))
        return json({"missing": exc.args[0]}, status=409)

    @app.exception_handler(Conflict)
    async def on_conflict(request, exc):
        return Response(b"conflict!", status=409, headers={"X-Handled": "conflict"})

    @app.get("/key")
    async def key(request):
        raise KeyError("widget")

    @app.get("/conflict")
    async def conflict(request):
        raise Conflict()

    @app.get("/other")
    async def other(request):
        raise ValueError("not handled")

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/key")
        assert r.status_code == 409 and r.json() == {"missing": "widget"}
        assert seen == [("/key", KeyError)]
        r = await client.get("/conflict")
        assert r.status_code == 409 and r.headers["x-handled"] == "conflict"
        r = await client.get("/other")
        assert r.status_code == 500


async def test_exception_handler_matches_subclasses():
    app = App()

    @app.exception_handler(LookupError)
    async def on_lookup(request, exc):
        return text(f"lookup: {type(exc).__name__}")

    @app.get("/idx")
    async def idx(request):
        return [][1]

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/idx")
        assert r.status_code == 200 and r.text == "lookup: IndexError"


async def test_middleware_order_and_state():
    app = App()
    events: list[str] = []

    @app.middleware
    async def outer(request, call_next):
        events.append("outer-in")
        request.state["trace"] = ["outer"]
        response = await call_next(request)
        events.append("outer-out")
        return response

    @app.middleware
    async def inner(request, call_next):
        events.append("inner-in")
        request.state["trace"].append("inner")
        if request.path == "/blocked":
            return Response(b"blocked", status=403)
        response = await call_next(request)
        events.append("inner-out")
        return response

    @app.get("/")
    async def index(request):
        events.append("handler")
        return {"trace": request.state["trace"]}

    @app.get("/blocked")
    async def blocked(request):
        events.append("should-not-run")
        return "x"

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/")
        assert r.json() == {"trace": ["outer", "inner"]}
        assert events == ["outer-in", "inner-in", "handler", "inner-out", "outer-out"]
        events.clear()
        r = await client.get("/blocked")
        assert r.status_code == 403 and r.text == "blocked"
        assert events == ["outer-in", "inner-in", "outer-out"]


async def test_middleware_can_replace_response():
    app = App()

    @app.middleware
    async def stamp(request, call_next):
        response = await call_next(request)
        return Response(
            b"wrapped:" + str(response.status).encode(),
            status=response.status,
            headers={"X-Wrapped": "1"},
        )

    @app.get("/")
    async def index(request):
        return "ok"

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/")
        assert r.status_code == 200 and r.text == "wrapped:200" and r.headers["x-wrapped"] == "1"


async def test_startup_and_shutdown_hooks():
    app = App()
    calls: list[str] = []

    @app.on_startup
    async def start():
        await asyncio.sleep(0)
        calls.append("startup")

    @app.on_shutdown
    async def stop():
        calls.append("shutdown")

    @app.get("/")
    async def index(request):
        return {"calls": list(calls)}

    async with running(app) as server, http_client(server) as client:
        assert calls == ["startup"]
        assert (await client.get("/")).json() == {"calls": ["startup"]}
    assert calls == ["startup", "shutdown"]


async def test_request_object_is_a_request():
    app = App()

    @app.get("/")
    async def index(request):
        return {"is_request": isinstance(request, Request), "method": request.method}

    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/"))
        r = await conn.read_final_response()
        assert r.body == b'{"is_request":true,"method":"GET"}'


@pytest.mark.parametrize("middleware", [False, True])
async def test_a_bad_handler_result_is_a_500_that_middleware_still_sees(middleware):
    app = App()
    after: list[int] = []

    if middleware:
        @app.middleware
        async def stamp(request, call_next):
            response = await call_next(request)
            after.append(response.status)
            response.headers["X-MW"] = "1"
            return response

    @app.get("/bad")
    async def bad(request):
        await asyncio.sleep(0)
        return 123

    @app.get("/bad-inline")
    def bad_inline(request):
        return object()

    with capture_logs() as logs:
        async with running(app) as server, http_client(server) as client:
            for path in ("/bad", "/bad-inline"):
                r = await client.get(path)
                assert r.status_code == 500 and r.text == "Internal Server Error", path
                assert r.headers.get("x-mw") == ("1" if middleware else None), path
    assert after == ([500, 500] if middleware else [])
    logged = [r for r in logs.by_logger("aioserve.error") if r.exc_info]
    assert [type(r.exc_info[1]) for r in logged] == [TypeError, TypeError]
    assert "handler returned int" in str(logged[0].exc_info[1])


@pytest.mark.parametrize("middleware", [False, True])
async def test_the_500_handler_answers_unhandled_exceptions_which_are_still_logged(middleware):
    app = App()
    seen: list = []

    if middleware:
        @app.middleware
        async def passthrough(request, call_next):
            return await call_next(request)

    @app.exception_handler(500)
    async def on_500(request, exc):
        seen.append(type(exc))
        return json({"error": "custom", "kind": type(exc).__name__}, status=500)

    @app.exception_handler(KeyError)
    async def on_key_error(request, exc):
        return Response(b"key", 409)

    @app.get("/boom")
    async def boom(request):
        await asyncio.sleep(0)
        raise RuntimeError("x")

    @app.get("/inline-boom")
    def inline_boom(request):
        raise ValueError("y")

    @app.get("/key")
    async def key(request):
        raise KeyError("k")  # its own handler wins over the 500 one

    @app.get("/http-500")
    async def http_500(request):
        raise HTTPError(500, "as raised")

    @app.get("/teapot")
    async def teapot(request):
        raise HTTPError(418)  # other statuses are not the 500 handler's

    with capture_logs() as logs:
        async with running(app) as server, http_client(server) as client:
            r = await client.get("/boom")
            assert r.status_code == 500 and r.json() == {"error": "custom", "kind": "RuntimeError"}
            r = await client.get("/inline-boom")
            assert r.status_code == 500 and r.json() == {"error": "custom", "kind": "ValueError"}
            assert (await client.get("/key")).status_code == 409
            r = await client.get("/http-500")
            assert r.status_code == 500 and r.json()["kind"] == "HTTPError"
            assert (await client.get("/teapot")).status_code == 418
            assert (await client.get("/missing")).status_code == 404
    assert seen == [RuntimeError, ValueError, HTTPError]
    # An unhandled exception keeps its traceback in the log, even when the 500 handler answers it.
    logged = [type(r.exc_info[1]) for r in logs.by_logger("aioserve.error") if r.exc_info]
    assert logged == [RuntimeError, ValueError]


async def test_a_500_handler_that_fails_falls_back_to_the_generic_500():
    app = App()

    @app.exception_handler(500)
    async def on_500(request, exc):
        raise LookupError("the handler itself fails")

    @app.get("/boom")
    async def boom(request):
        raise RuntimeError("x")

    with capture_logs():
        async with running(app) as server, http_client(server) as client:
            r = await client.get("/boom")
            assert r.status_code == 500 and r.text == "Internal Server Error"
