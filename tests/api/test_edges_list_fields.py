"""List-valued fields split over several lines (RFC 9110 5.3): every line counts.

A recipient may combine repeated field lines into one comma-separated list, and must not read only
the first. Checked on both sides: the answer's ``Vary`` and ``Cache-Control`` lines (compression) and
the request's ``Accept-Encoding``, ``If-None-Match``, ``If-Match`` (compression, static files) and
``Access-Control-Request-Headers`` (CORS), each sent over raw sockets as two lines.
"""
from __future__ import annotations

import gzip
from types import SimpleNamespace

import pytest

from aioserve import App, Response
from aioserve.compression import Compressor
from aioserve.datastructures import Headers, MutableHeaders, list_field
from aioserve.ranges import evaluate_conditions
from tests.support import raw_connection, request_bytes, running

brotli = pytest.importorskip("brotli")

PAGE = "hello " * 200  # over the 500-byte minimum


def tokens(values: list[str]) -> list[str]:
    return [t.strip() for value in values for t in value.split(",") if t.strip()]


def request_with(*lines: tuple[str, str], method: str = "GET"):
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in lines]
    return SimpleNamespace(method=method, headers=Headers(raw), route=None)


# -- the helper ----------------------------------------------------------------------------------------
def test_list_field_joins_every_line():
    h = Headers([(b"a", b"1"), (b"b", b"x"), (b"a", b"2, 3")])
    assert list_field(h, "A") == "1, 2, 3" and list_field(h, "b") == "x" and list_field(h, "c") is None
    m = MutableHeaders([("Vary", "Cookie"), ("vary", "Accept-Language")])
    assert list_field(m, "vary") == "Cookie, Accept-Language"
    assert list_field({"vary": "Origin"}, "vary") == "Origin"  # a plain mapping: its one value


# -- the answer's lines (the compression finisher) ---------------------------------------------------------
@pytest.mark.parametrize("accept", ["gzip", "identity"])
def test_every_vary_line_survives_compression(accept):
    out = Compressor().finish(request_with(("Accept-Encoding", accept)),
                              Response(PAGE, headers=[("Vary", "Cookie"), ("Vary", "Accept-Language")],
                                       content_type="text/html"))
    assert tokens(out.headers.getall("vary")) == ["Cookie", "Accept-Language", "Accept-Encoding"]
    assert ("content-encoding" in out.headers) == (accept == "gzip")


def test_vary_lines_that_already_name_accept_encoding_are_left_alone():
    out = Compressor().finish(request_with(("Accept-Encoding", "gzip")),
                              Response(PAGE, headers=[("Vary", "Cookie"), ("Vary", "accept-encoding")],
                                       content_type="text/html"))
    assert out.headers.getall("vary") == ["Cookie", "accept-encoding"]
    star = Compressor().finish(request_with(("Accept-Encoding", "gzip")),
                               Response(PAGE, headers=[("Vary", "Cookie"), ("Vary", "*")], content_type="text/html"))
    assert star.headers.getall("vary") == ["Cookie", "*"]


def test_no_transform_on_a_second_cache_control_line_is_honoured():
    out = Compressor().finish(request_with(("Accept-Encoding", "gzip")),
                              Response(PAGE, headers=[("Cache-Control", "max-age=60"),
                                                      ("Cache-Control", "no-transform")], content_type="text/plain"))
    assert "content-encoding" not in out.headers and out.body == PAGE.encode()


def test_accept_encoding_over_two_lines_is_one_list():
    out = Compressor().finish(request_with(("Accept-Encoding", "identity;q=0.1"), ("Accept-Encoding", "gzip")),
                              Response(PAGE, content_type="text/plain"))
    assert out.headers["content-encoding"] == "gzip" and gzip.decompress(out.body) == PAGE.encode()
    refused = Compressor().finish(request_with(("Accept-Encoding", "br"), ("Accept-Encoding", "*;q=0")),
                                  Response(PAGE, content_type="text/plain"))
    assert refused.headers["content-encoding"] == "br"


# -- the request's lines (conditionals) --------------------------------------------------------------------
def test_conditionals_read_every_line():
    etag = '"abc"'
    inm = Headers([(b"if-none-match", b'"old"'), (b"if-none-match", etag.encode())])
    assert evaluate_conditions(inm, etag, 1_000_000_000) == 304
    im = Headers([(b"if-match", b'"old"'), (b"if-match", etag.encode())])
    assert evaluate_conditions(im, etag, 1_000_000_000) == 200


# -- end to end, raw sockets --------------------------------------------------------------------------------
def list_app(site) -> App:
    app = App(compress=True)

    @app.get("/page")
    async def page(request):
        return Response(PAGE, headers=[("Vary", "Cookie"), ("Vary", "Accept-Language")], content_type="text/html")

    @app.get("/nt")
    async def nt(request):
        return Response(PAGE, headers=[("Cache-Control", "max-age=60"), ("Cache-Control", "no-transform")],
                        content_type="text/plain")

    app.static("/static", str(site))
    app.add_cors(allow_origins=["https://a.example"], allow_methods=["PUT"], allow_headers=["x-one", "x-two"])
    return app


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "public"
    root.mkdir()
    (root / "app.js").write_text("console.log(1);\n" * 100)
    (root / "app.js.gz").write_bytes(gzip.compress(b"console.log(1);\n" * 100))
    return root


async def exchange(conn, method: str, target: str, lines: list[tuple[str, str]]):
    await conn.send(request_bytes(method, target, lines))
    return await conn.read_final_response(method)


async def test_end_to_end_every_line_counts(site):
    async with running(list_app(site)) as server, raw_connection(server) as conn:
        page = await exchange(conn, "GET", "/page", [("Accept-Encoding", "identity;q=0.1"), ("Accept-Encoding", "gzip")])
        assert page.header("content-encoding") == "gzip" and gzip.decompress(page.body) == PAGE.encode()
        assert {"Cookie", "Accept-Language", "Accept-Encoding"} <= set(tokens(page.getall("vary")))
        nt = await exchange(conn, "GET", "/nt", [("Accept-Encoding", "gzip")])
        assert nt.header("content-encoding") is None and nt.body == PAGE.encode()

        js = await exchange(conn, "GET", "/static/app.js", [("Accept-Encoding", "identity;q=0.1"),
                                                             ("Accept-Encoding", "gzip")])
        assert js.header("content-encoding") == "gzip" and gzip.decompress(js.body) == b"console.log(1);\n" * 100
        etag = js.header("etag")
        again = await exchange(conn, "GET", "/static/app.js", [("Accept-Encoding", "gzip"),
                                                                ("If-None-Match", '"old"'), ("If-None-Match", etag)])
        assert again.status == 304 and again.header("etag") == etag
        guarded = await exchange(conn, "GET", "/static/app.js", [("Accept-Encoding", "gzip"),
                                                                  ("If-Match", '"old"'), ("If-Match", etag)])
        assert guarded.status == 200

        pre = await exchange(conn, "OPTIONS", "/page", [("Origin", "https://a.example"),
                                                        ("Access-Control-Request-Method", "PUT"),
                                                        ("Access-Control-Request-Headers", "x-one"),
                                                        ("Access-Control-Request-Headers", "x-two")])
        assert pre.status == 204
        assert tokens(pre.getall("access-control-allow-headers")) == ["x-one", "x-two"]
        refused = await exchange(conn, "OPTIONS", "/page", [("Origin", "https://a.example"),
                                                            ("Access-Control-Request-Method", "PUT"),
                                                            ("Access-Control-Request-Headers", "x-one"),
                                                            ("Access-Control-Request-Headers", "x-evil")])
        assert refused.status == 403
