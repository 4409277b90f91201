"""Request, Response, helpers and header/query data structures."""

from __future__ import annotations

import email.utils
from datetime import datetime, timezone

import pytest

from aioserve import App, HTTPError, Response, html, json, redirect, stream, text
from tests.support import http_client, raw_connection, request_bytes, running


def _decode(value):
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else value


# --------------------------------------------------------------------------
# Request
# --------------------------------------------------------------------------


async def test_request_line_path_and_query():
    app = App()
    seen: dict = {}

    @app.get("/files/{name}")
    async def files(request, name):
        seen.update(
            method=request.method,
            path=request.path,
            raw_path=_decode(request.raw_path),
            query_string=request.query_string,
            name=name,
        )
        return "ok"

    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/files/a%20b?x=1&y=%C3%A9"))
        assert (await conn.read_final_response()).status == 200
    assert seen["method"] == "GET"
    assert seen["path"] == "/files/a b"
    assert seen["raw_path"].split("?")[0] == "/files/a%20b"
    assert seen["query_string"] == b"x=1&y=%C3%A9"
    assert isinstance(seen["query_string"], bytes)
    assert seen["name"] == "a b"


async def test_decoded_path_with_space_matches_route():
    app = App()

    @app.get("/hello world")
    async def spaced(request):
        return {"path": request.path, "raw": _decode(request.raw_path)}

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/hello%20world")
        assert r.status_code == 200
        assert r.json()["path"] == "/hello world"
        assert r.json()["raw"].startswith("/hello%20world")


async def test_request_query_multidict():
    app = App()
    seen: dict = {}

    @app.get("/q")
    async def q(request):
        query = request.query
        seen.update(
            a_all=query.getall("a"),
            a_get=query.get("a"),
            b=query.get("b"),
            b_item=query["b"],
            empty=query.get("empty"),
            missing=query.get("missing"),
            missing_default=query.get("missing", "dflt"),
            contains_b="b" in query,
            contains_zz="zz" in query,
            keys=sorted(set(query.keys())),
            plus=query.get("plus"),
        )
        try:
            query["nope"]
        except KeyError:
            seen["keyerror"] = True
        return "ok"

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/q?a=1&a=2&b=x%20y&empty=&plus=1+2")
        assert r.status_code == 200
    assert seen["a_all"] == ["1", "2"]
    assert seen["a_get"] in ("1", "2")
    assert seen["b"] == "x y" == seen["b_item"]
    assert seen["empty"] == ""
    assert seen["missing"] is None
    assert seen["missing_default"] == "dflt"
    assert seen["contains_b"] is True and seen["contains_zz"] is False
    assert seen["keys"] == ["a", "b", "empty", "plus"]
    assert seen["plus"] == "1 2"
    assert seen.get("keyerror") is True


async def test_request_headers_case_insensitive_multi():
    app = App()
    seen: dict = {}

    @app.get("/h")
    async def h(request):
        headers = request.headers
        seen.update(
            lower=headers.get("x-custom"),
            upper=headers.get("X-CUSTOM"),
            item=headers["X-Custom"],
            multi=headers.getall("x-multi"),
            multi_mixed=headers.getall("X-Multi"),
            missing=headers.get("x-missing"),
            missing_default=headers.get("x-missing", "d"),
            contains="X-CUSTOM" in headers,
            items=[(k.lower(), v) for k, v in headers.items()],
        )
        return "ok"

    raw = (
        b"GET /h HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Custom: Value One\r\n"
        b"x-multi: 1\r\nX-MULTI: 2\r\nX-Spaces:   padded   \r\n\r\n"
    )
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(raw)
        assert (await conn.read_final_response()).status == 200
    assert seen["lower"] == seen["upper"] == seen["item"] == "Value One"
    assert seen["multi"] == ["1", "2"] == seen["multi_mixed"]
    assert seen["missing"] is None and seen["missing_default"] == "d"
    assert seen["contains"] is True
    assert ("x-custom", "Value One") in seen["items"]
    assert ("x-multi", "1") in seen["items"] and ("x-multi", "2") in seen["items"]
    assert ("x-spaces", "padded") in seen["items"]
    assert ("host", "127.0.0.1") in seen["items"]


async def test_request_cookies_client_version_keep_alive():
    app = App()
    seen: dict = {}

    @app.get("/c")
    async def c(request):
        seen.update(
            cookies=dict(request.cookies),
            client=tuple(request.client),
            http_version=request.http_version,
            keep_alive=request.keep_alive,
        )
        return "ok"

    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/c", headers=[("Cookie", "session=abc123; theme=dark")]))
        assert (await conn.read_final_response()).status == 200
        assert seen["cookies"] == {"session": "abc123", "theme": "dark"}
        host, port = seen["client"]
        assert host == "127.0.0.1"
        assert port == conn.local_port
        assert seen["http_version"] == "1.1"
        assert seen["keep_alive"] is True

        await conn.send(request_bytes("GET", "/c", headers=[("Connection", "close")]))
        assert (await conn.read_final_response()).status == 200
        assert seen["keep_alive"] is False
        assert seen["cookies"] == {}


async def test_request_state_is_per_request_dict():
    app = App()

    @app.get("/s")
    async def s(request):
        before = dict(request.state)
        request.state["x"] = 1
        return {"before": before}

    async with running(app) as server, http_client(server) as client:
        assert (await client.get("/s")).json() == {"before": {}}
        assert (await client.get("/s")).json() == {"before": {}}


async def test_request_body_and_json():
    app = App()

    @app.post("/json")
    async def j(request):
        data = await request.json()
        again = await request.json()  # cached / repeatable
        body = await request.body()
        return {"data": data, "same": data == again, "len": len(body)}

    async with running(app) as server, http_client(server) as client:
        r = await client.post("/json", content=b'{"k": [1, 2, "\\u00e9"]}', headers={"content-type": "application/json"})
        assert r.status_code == 200
        assert r.json() == {"data": {"k": [1, 2, "é"]}, "same": True, "len": 23}
        for bad in (b"{not json", b"", b"\xff\xfe"):
            r = await client.post("/json", content=bad)
            assert r.status_code == 400, bad


async def test_request_body_empty_get():
    app = App()

    @app.get("/b")
    async def b(request):
        return {"len": len(await request.body())}

    async with running(app) as server, http_client(server) as client:
        assert (await client.get("/b")).json() == {"len": 0}


# --------------------------------------------------------------------------
# Response: construction and helpers (checked on the wire)
# --------------------------------------------------------------------------


async def test_response_helpers_on_the_wire():
    app = App()

    @app.get("/text")
    async def t(request):
        return text("plain ü")

    @app.get("/html")
    async def h(request):
        return html("<h1>hi</h1>")

    @app.get("/json")
    async def j(request):
        return json({"ok": True}, status=201)

    @app.get("/json-list")
    async def jl(request):
        return json([1, 2])

    @app.get("/redirect")
    async def r(request):
        return redirect("/target")

    @app.get("/redirect-301")
    async def r301(request):
        return redirect("https://example.invalid/elsewhere", status=301)

    @app.get("/stream")
    async def s(request):
        async def gen():
            yield "a,b\n"
            yield b"1,2\n"

        return stream(gen(), content_type="text/csv", headers={"X-Rows": "2"})

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/text")
        assert r.headers["content-type"] == "text/plain; charset=utf-8" and r.text == "plain ü"
        r = await client.get("/html")
        assert r.headers["content-type"] == "text/html; charset=utf-8" and r.text == "<h1>hi</h1>"
        r = await client.get("/json")
        assert r.status_code == 201
        assert r.headers["content-type"].startswith("application/json")
        assert r.content == b'{"ok":true}'
        assert (await client.get("/json-list")).json() == [1, 2]
        r = await client.get("/redirect")
        assert r.status_code == 307 and r.headers["location"] == "/target"
        r = await client.get("/redirect-301")
        assert r.status_code == 301 and r.headers["location"] == "https://example.invalid/elsewhere"
        r = await client.get("/stream")
        assert r.headers["content-type"].startswith("text/csv")
        assert r.headers["x-rows"] == "2"
        assert r.text == "a,b\n1,2\n"


async def test_set_cookie_and_delete_cookie():
    app = App()

    @app.get("/login")
    async def login(request):
        response = text("welcome")
        response.set_cookie(
            "session", "abc123", max_age=3600, path="/", httponly=True, secure=True, samesite="lax"
        )
        response.set_cookie("theme", "dark")
        return response

    @app.get("/logout")
    async def logout(request):
        response = text("bye")
        response.delete_cookie("session")
        return response

    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/login"))
        r = await conn.read_final_response()
        cookies = r.getall("set-cookie")
        assert len(cookies) == 2, f"Set-Cookie headers must not be folded: {cookies}"
        session = next(c for c in cookies if c.startswith("session="))
        parts = [p.strip() for p in session.split(";")]
        assert parts[0] == "session=abc123"
        attrs = {p.split("=", 1)[0].lower(): (p.split("=", 1)[1] if "=" in p else True) for p in parts[1:]}
        assert attrs.get("max-age") == "3600"
        assert attrs.get("path") == "/"
        assert attrs.get("httponly") is True
        assert attrs.get("secure") is True
        assert str(attrs.get("samesite")).lower() == "lax"
        theme = next(c for c in cookies if c.startswith("theme="))
        assert theme.split(";")[0] == "theme=dark"

        await conn.send(request_bytes("GET", "/logout"))
        r = await conn.read_final_response()
        (deleted,) = r.getall("set-cookie")
        parts = [p.strip() for p in deleted.split(";")]
        assert parts[0] in ("session=", 'session=""')
        attrs = {p.split("=", 1)[0].lower(): (p.split("=", 1)[1] if "=" in p else True) for p in parts[1:]}
        expired = attrs.get("max-age") == "0"
        if "expires" in attrs:
            when = email.utils.parsedate_to_datetime(attrs["expires"])
            expired = expired or when < datetime.now(timezone.utc)
        assert expired, deleted


async def test_httpx_sees_cookies():
    app = App()

    @app.get("/set")
    async def set_(request):
        response = Response(b"ok")
        response.set_cookie("token", "t1")
        return response

    @app.get("/read")
    async def read(request):
        return {"token": request.cookies.get("token")}

    async with running(app) as server, http_client(server) as client:
        await client.get("/set")
        assert (await client.get("/read")).json() == {"token": "t1"}


async def test_response_defaults():
    app = App()

    @app.get("/empty")
    async def empty(request):
        return Response()

    @app.get("/status")
    async def status(request):
        return Response(b"made", status=201, headers={"Location": "/things/1"})

    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/empty") + request_bytes("GET", "/status"))
        empty, made = await conn.read_responses(2)
        assert empty.status == 200 and empty.body == b"" and empty.header("content-length") == "0"
        assert made.status == 201 and made.header("location") == "/things/1" and made.body == b"made"
        assert made.reason == "Created"


async def test_headers_added_after_construction_reach_the_wire_once():
    """A response made without headers builds them on first access; whatever is then set is sent,
    and the content type appears exactly once."""
    app = App()

    @app.get("/added")
    async def added(request):
        response = Response(b"a,b", content_type="text/csv")
        assert response.headers["content-type"] == "text/csv"
        response.headers["X-Rows"] = "1"
        return response

    @app.get("/replaced")
    async def replaced(request):
        response = json({"ok": True})
        response.headers = {"X-Only": "this"}  # replaces every header, the content type included
        return response

    @app.get("/typed")
    async def typed(request):
        response = Response(b"<p>", content_type="text/html")
        response.headers["Content-Type"] = "text/html; charset=latin-1"
        return response

    @app.middleware
    async def tag(request, call_next):
        response = await call_next(request)
        if request.path == "/tagged":
            response.headers["X-Tag"] = "mw"
        return response

    @app.get("/tagged")
    async def tagged(request):
        return text("t")

    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(b"".join(request_bytes("GET", p) for p in ("/added", "/replaced", "/typed", "/tagged")))
        added_r, replaced_r, typed_r, tagged_r = await conn.read_responses(4)
    assert added_r.header("x-rows") == "1" and added_r.body == b"a,b"
    assert [v for n, v in added_r.headers if n.lower() == "content-type"] == ["text/csv"]
    assert replaced_r.header("x-only") == "this" and not replaced_r.has("content-type")
    assert [v for n, v in typed_r.headers if n.lower() == "content-type"] == ["text/html; charset=latin-1"]
    assert tagged_r.header("x-tag") == "mw" and tagged_r.header("content-type").startswith("text/plain")


@pytest.mark.parametrize("content_type", ["text/plain\r\nInjected: yes", "a\nb", "a\x00b"])
def test_content_type_with_control_characters_is_refused(content_type):
    with pytest.raises(ValueError):
        Response(b"x", content_type=content_type)
    with pytest.raises(ValueError):
        Response(b"x", headers={"X-A": "1"}, content_type=content_type)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Bad": "value\r\nInjected: yes"},
        {"X-Bad": "value\nInjected: yes"},
        {"X-Bad": "value\rInjected: yes"},
        {"X-Bad\r\nInjected": "yes"},
        {"Bad Name": "x"},
    ],
    ids=["crlf-value", "lf-value", "cr-value", "crlf-name", "space-name"],
)
def test_response_header_injection_rejected(headers):
    with pytest.raises(ValueError):
        Response(b"x", headers=headers)


def test_helpers_reject_crlf():
    # redirect() percent-encodes its URL, so CR/LF can never reach the Location header.
    location = redirect("/ok\r\nSet-Cookie: evil=1").headers["location"]
    assert "\r" not in location and "\n" not in location and location.startswith("/ok%0D%0A")
    with pytest.raises(ValueError):
        stream(iter_nothing(), headers={"X": "a\r\nb: c"})
    # Cookie values are percent-encoded; a cookie name or attribute with CR/LF is refused.
    response = text("x")
    response.set_cookie("name", "value\r\nX-Evil: 1")
    assert "\r" not in response.headers["set-cookie"] and "\n" not in response.headers["set-cookie"]
    with pytest.raises(ValueError):
        text("x").set_cookie("name\r\nX-Evil: 1", "v")
    with pytest.raises(ValueError):
        text("x").set_cookie("name", "v", path="/\r\nX-Evil: 1")


async def iter_nothing():
    if False:  # pragma: no cover
        yield b""


def test_http_error_attributes():
    exc = HTTPError(404, detail="gone", headers={"X-A": "1"})
    assert isinstance(exc, Exception)
    assert exc.status == 404
    assert exc.detail == "gone"


async def test_header_injection_at_runtime_does_not_reach_the_wire():
    """If a handler manages to produce a bad header, the client must not see an
    injected header line: a 500 is the acceptable answer."""
    app = App()

    @app.get("/inject")
    async def inject(request):
        return Response(b"x", headers={"X-Bad": request.query.get("v", "")})

    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/inject?v=a%0D%0AInjected:%20yes"))
        r = await conn.read_final_response()
        assert r.status == 500
        assert not r.has("injected")


# --------------------------------------------------------------------------
# Fixes: bytes detail, the Server header, cookie checks
# --------------------------------------------------------------------------


async def test_http_error_with_a_bytes_detail_sends_those_bytes():
    app = App()

    @app.get("/raw")
    async def raw(request):
        raise HTTPError(400, detail=b"raw \xff")

    @app.get("/typed")
    async def typed(request):
        raise HTTPError(422, detail=bytearray(b"<e/>"), headers={"Content-Type": "application/xml"})

    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/raw") + request_bytes("GET", "/typed"))
        raw_r, typed_r = await conn.read_responses(2)
    assert raw_r.status == 400 and raw_r.body == b"raw \xff"
    assert raw_r.header("content-type") == "application/octet-stream"
    assert typed_r.status == 422 and typed_r.body == b"<e/>" and typed_r.header("content-type") == "application/xml"


@pytest.mark.parametrize("server_header", ["aioserve", "custom/1", None])
async def test_the_server_header_is_the_servers_alone(server_header):
    app = App()

    @app.get("/given")
    async def given(request):
        return Response(b"x", headers={"Server": "mine"})

    @app.get("/added")
    async def added(request):
        response = text("x")
        response.headers["server"] = "mine"
        return response

    @app.get("/streamed")
    async def streamed(request):
        async def gen():
            yield b"x"
        return stream(gen(), headers={"Server": "mine"})

    async with running(app, server_header=server_header) as server, raw_connection(server) as conn:
        await conn.send(b"".join(request_bytes("GET", p) for p in ("/given", "/added", "/streamed")))
        responses = await conn.read_responses(3)
    for r in responses:
        assert r.status == 200
        assert r.getall("server") == ([server_header] if server_header else [])


@pytest.mark.parametrize("key", ["a=b; Domain=evil.example", "a b", "a;b", "", "a\x00", "a\r\nX: y", "é", "(a)"])
def test_set_cookie_refuses_a_name_that_is_not_a_token(key):
    with pytest.raises(ValueError, match="cookie"):
        Response("x").set_cookie(key, "1")


@pytest.mark.parametrize("options", [
    {"path": "/; Domain=evil.example"}, {"path": "/\x01"}, {"path": "/\x7f"},
    {"domain": "example.com; Secure"}, {"domain": "a=b"}, {"domain": "ex ample.com"}, {"domain": "x\x00"},
    {"domain": ""}, {"expires": "Wed, 01 Jan 2030 00:00:00 GMT; Domain=evil.example"}, {"expires": "x\r\ny"},
])
def test_set_cookie_refuses_attributes_that_would_add_attributes(options):
    response = Response("x")
    with pytest.raises(ValueError, match="cookie"):
        response.set_cookie("ok", "1", **options)
    assert "set-cookie" not in response.headers


def test_set_cookie_renders_a_datetime_expires_as_an_http_date():
    from datetime import timedelta

    def expires_of(when):
        response = Response("x")
        response.set_cookie("c", "1", expires=when)
        (cookie,) = response.headers.getall("set-cookie")
        return next(p.strip()[8:] for p in cookie.split(";") if p.strip().lower().startswith("expires="))

    fixdate = "Tue, 01 Jan 2030 00:00:00 GMT"  # RFC 9110 5.6.7 IMF-fixdate
    assert expires_of(datetime(2030, 1, 1, tzinfo=timezone.utc)) == fixdate
    assert expires_of(datetime(2030, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))) == fixdate
    assert expires_of(datetime(2030, 1, 1)) == fixdate  # naive: taken as UTC
    assert expires_of("Tue, 01 Jan 2030 00:00:00 GMT") == fixdate
    assert email.utils.parsedate_to_datetime(expires_of(3600)) > datetime.now(timezone.utc)
    response = Response("x")
    response.set_cookie("c", "v", path="/a=b", domain=".example.com")  # '=' is fine in a path
    assert "Path=/a=b" in response.headers["set-cookie"] and "Domain=.example.com" in response.headers["set-cookie"]
