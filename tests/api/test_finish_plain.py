"""A plain answer (a handler's str, bytes, dict or list) under compression and CORS takes a short way:
``App.finish_plain`` asks each finisher for the lines it would add, ready-made, and no Response or
headers object is made. What reaches the client must be byte for byte what the finishers give when
they see a Response: the same app with one more finisher of the user's (which has no plain form, so
every answer goes the full way) is the reference, for every kind of answer and request."""

from __future__ import annotations

import pytest

from aioserve import App, Response
from tests.support import running
from tests.support.wire import raw_connection

A = "https://a.example"


def build(kind: str, reference: bool) -> App:
    app = App(compress=kind.startswith("compress"))
    if "cors" in kind:
        options = {"allow_origins": ["*"]} if kind.endswith("any") else {"allow_origins": [A]}
        if kind.endswith("credentials"):
            options.update(allow_credentials=True, expose_headers=["X-Total", "X-Page"])
        app.add_cors(**options)

    @app.get("/text")
    async def text(request):
        return "Hello, World!"

    @app.get("/big-text")
    async def big_text(request):
        return "compress me " * 200

    @app.get("/json")
    def json_(request):  # a plain def, answered inline too
        return {"message": "Hello, World!"}

    @app.get("/big-list")
    async def big_list(request):
        return [{"id": i, "name": "item"} for i in range(100)]

    @app.get("/bytes")
    async def octets(request):
        return b"\x00\x01" * 8

    @app.get("/big-bytes")
    async def big_octets(request):
        return b"\x00\x01" * 2000  # not a compressible type

    @app.get("/off", compress=False)
    async def off(request):
        return "not compressed " * 100

    @app.get("/none")
    async def nothing(request):
        return None

    @app.get("/response")
    async def response(request):
        return Response("r", headers={"Vary": "Cookie"})

    if reference:  # a finisher of the user's: no plain form, so the full way for every answer
        app.finishers.append(lambda request, response: response)
    return app


KINDS = ["compress", "cors", "cors-any", "cors-credentials", "compress+cors", "compress+cors-any",
         "compress+cors-credentials"]
PATHS = ["/text", "/big-text", "/json", "/big-list", "/bytes", "/big-bytes", "/off", "/none", "/response"]
REQUESTS = [
    {},
    {"Accept-Encoding": "gzip"},
    {"Origin": A},
    {"Origin": "https://evil.example"},
    {"Origin": A, "Accept-Encoding": "br, gzip"},
]


@pytest.mark.parametrize("kind", KINDS)
async def test_plain_answers_match_the_full_way(kind):
    fast, full = build(kind, reference=False), build(kind, reference=True)
    async with running(fast) as fast_server, running(full) as full_server:
        assert fast.finish_plain is not None and full.finish_plain is None  # the two ways really differ
        async with raw_connection(fast_server) as a, raw_connection(full_server) as b:
            for path in PATHS:
                for headers in REQUESTS:
                    for method in ("GET", "HEAD"):
                        got = await a.request(method, path, headers=headers)
                        want = await b.request(method, path, headers=headers)
                        assert got.comparable() == want.comparable(), (method, path, headers)


async def test_the_short_way_is_taken_and_says_what_the_finishers_say():
    """The lines themselves, for the usual answers (a guard that the comparison above compares the short
    way: a small answer under compression carries Vary, an allowed origin gets its CORS lines)."""
    app = build("compress+cors-credentials", reference=False)
    async with running(app) as server, raw_connection(server) as conn:
        r = await conn.request("GET", "/json", headers={"Origin": A, "Accept-Encoding": "gzip"})
        assert r.status == 200 and r.body == b'{"message":"Hello, World!"}'
        assert r.getall("vary") == ["Accept-Encoding", "Origin"]
        assert r.header("access-control-allow-origin") == A
        assert r.header("access-control-allow-credentials") == "true"
        assert r.header("access-control-expose-headers") == "X-Page, X-Total"
        assert r.header("content-encoding") is None and r.header("content-type") == "application/json"
        big = await conn.request("GET", "/big-text", headers={"Accept-Encoding": "gzip"})
        assert big.header("content-encoding") == "gzip" and big.getall("vary") == ["Accept-Encoding", "Origin"]


async def test_a_finisher_of_the_users_still_sees_every_plain_answer():
    app = build("compress+cors", reference=False)
    seen = []

    def stamp(request, response):
        seen.append(type(response).__name__)
        response.headers["X-Stamp"] = "1"
        return response

    app.finishers.append(stamp)
    async with running(app) as server, raw_connection(server) as conn:
        for path, vary in (("/text", ["Accept-Encoding", "Origin"]), ("/json", ["Accept-Encoding", "Origin"]),
                           ("/bytes", ["Origin"])):  # octets are not compressible: no Vary for them
            r = await conn.request("GET", path, headers={"Origin": A})
            assert r.header("x-stamp") == "1" and r.getall("vary") == vary
    assert len(seen) == 3
