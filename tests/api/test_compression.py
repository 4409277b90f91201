"""Compression (compression.py, codings.py): negotiation, the finisher on Response objects decoded by
independent decoders (Python's gzip, brotli, zstd), and end to end once ``app.finish`` is wired."""
from __future__ import annotations

import asyncio
import gzip
import shutil
import subprocess
import time
from types import SimpleNamespace

import orjson
import pytest

from aioserve import App, FileResponse, Response, StreamResponse, json, stream, text
from aioserve.codings import negotiate, parse_accept_encoding, vary_add
from aioserve.compression import CompressionSettings, Compressor, available_codings
from tests.support import base_url, http_client, running

brotli = pytest.importorskip("brotli")
zstd = pytest.importorskip("backports.zstd") if __import__("sys").version_info < (3, 14) else pytest.importorskip("compression.zstd")

PAYLOAD = orjson.dumps([{"id": i, "name": f"user{i}", "tags": ["a", "b"]} for i in range(200)])


def decode(coding: str | None, data: bytes) -> bytes:
    if coding is None:
        return data
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return brotli.decompress(data)
    if coding == "zstd":
        return zstd.decompress(data)
    raise AssertionError(coding)


def req(accept_encoding: str | None = "gzip, deflate, br, zstd", method: str = "GET", route=None):
    headers = {} if accept_encoding is None else {"accept-encoding": accept_encoding}
    return SimpleNamespace(method=method, headers=headers, route=route)


# -- negotiation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("header, expected", [
    ("gzip, deflate, br, zstd", "br"),
    ("gzip, zstd", "zstd"),
    ("gzip", "gzip"), ("x-gzip", "gzip"), ("GZIP", "gzip"),
    ("gzip;q=0, br;q=0", None),
    ("br;q=0.5, gzip", "gzip"),
    ("br;q=0.5, gzip;q=0.5", "br"),  # equal q: the server's order
    ("*", "br"), ("*;q=0", None), ("*, br;q=0", "zstd"), ("gzip;q=0, *", "br"),
    ("identity", None), ("identity;q=1, gzip;q=0.5", None), ("identity;q=0, gzip", "gzip"),
    ("deflate", None), ("", None), (None, None),
    ("gzip;q=2", None), ("gzip;q=abc", None), ("gzip;q=nan", None), (",,, ;q=1, gzip ;q=0.1", "gzip"),
])
def test_negotiate(header, expected):
    assert negotiate(header, ("br", "zstd", "gzip")) == expected


def test_parse_accept_encoding_and_vary():
    assert parse_accept_encoding("gzip;q=0.5, br") == {"gzip": 0.5, "br": 1.0}
    assert vary_add(None, "Accept-Encoding") == "Accept-Encoding"
    assert vary_add("Origin", "Accept-Encoding") == "Origin, Accept-Encoding"
    assert vary_add("origin, accept-encoding", "Accept-Encoding") == "origin, accept-encoding"
    assert vary_add("*", "Accept-Encoding") == "*"


def test_available_codings_include_the_extra():
    assert available_codings() == ("br", "zstd", "gzip")


# -- the finisher on Response objects -------------------------------------------------------------------
@pytest.mark.parametrize("accept, coding", [("br", "br"), ("zstd", "zstd"), ("gzip", "gzip"), ("identity", None)])
def test_compresses_json_for_each_coding(accept, coding):
    c = Compressor()
    out = c.finish(req(accept), json(orjson.loads(PAYLOAD)))
    assert out.headers.get("content-encoding") == coding
    assert out.headers["vary"] == "Accept-Encoding"
    assert decode(coding, out.body) == PAYLOAD
    if coding:
        assert len(out.body) < len(PAYLOAD) / 3


def test_levels_take_effect():
    body = json(orjson.loads(PAYLOAD) * 20)
    fast = Compressor(CompressionSettings(gzip_level=1, brotli_quality=0, zstd_level=1))
    best = Compressor(CompressionSettings(gzip_level=9, brotli_quality=11, zstd_level=19))
    for coding in ("gzip", "br", "zstd"):
        a = fast.compress(body.body, coding)
        b = best.compress(body.body, coding)
        assert decode(coding, a) == decode(coding, b) == body.body
        assert len(b) < len(a), coding


def test_minimum_size_and_types():
    c = Compressor(CompressionSettings(minimum_size=1000))
    small = c.finish(req(), text("x" * 999))
    assert "content-encoding" not in small.headers and small.headers["vary"] == "Accept-Encoding"
    assert c.finish(req(), text("x" * 1000)).headers["content-encoding"] == "br"
    for ctype in ("image/png", "application/octet-stream", "application/zip", "video/mp4"):
        out = c.finish(req(), Response(b"\0" * 5000, content_type=ctype))
        assert "content-encoding" not in out.headers and "vary" not in out.headers, ctype
    for ctype in ("text/html; charset=utf-8", "application/javascript", "application/xml", "image/svg+xml",
                  "application/wasm", "application/vnd.api+json", "application/atom+xml", "text/css"):
        assert c.finish(req(), Response(b"a" * 5000, content_type=ctype)).headers["content-encoding"] == "br", ctype
    custom = Compressor(CompressionSettings(types=frozenset({"application/x-custom"})))
    assert custom.finish(req(), Response(b"a" * 5000, content_type="application/x-custom")).headers["content-encoding"]
    assert "content-encoding" not in custom.finish(req(), json(list(range(2000)))).headers


def test_never_compressed():
    c = Compressor(CompressionSettings(minimum_size=0))
    already = Response(b"a" * 5000, headers={"Content-Encoding": "br"}, content_type="text/plain")
    assert c.finish(req(), already).body == b"a" * 5000
    for status in (204, 206, 304, 101):
        out = c.finish(req(), Response(b"a" * 5000, status, content_type="text/plain"))
        assert "content-encoding" not in out.headers, status
    no_transform = Response(b"a" * 5000, headers={"Cache-Control": "no-transform"}, content_type="text/plain")
    assert "content-encoding" not in c.finish(req(), no_transform).headers
    off = SimpleNamespace(compress=False)
    assert "content-encoding" not in c.finish(req(route=off), text("a" * 5000)).headers
    assert "content-encoding" not in c.finish(req(None), text("a" * 5000)).headers


def test_file_responses_are_left_alone(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("a" * 5000)
    response = FileResponse(path)
    try:
        out = Compressor().finish(req(), response)
        assert out is response and "content-encoding" not in out.headers
    finally:
        response.close()


def test_etag_is_weakened():
    c = Compressor()
    out = c.finish(req(), Response(b"a" * 5000, headers={"ETag": '"v1"'}, content_type="text/plain"))
    assert out.headers["etag"] == 'W/"v1"'
    out = c.finish(req(), Response(b"a" * 5000, headers={"ETag": 'W/"v1"'}, content_type="text/plain"))
    assert out.headers["etag"] == 'W/"v1"'


def test_head_gets_the_headers_get_would():
    c = Compressor()
    get = c.finish(req(), text("a" * 5000))
    head = c.finish(req(method="HEAD"), text("a" * 5000))
    assert head.headers["content-encoding"] == get.headers["content-encoding"] == "br"
    assert len(head.body) == len(get.body)  # the length the GET sends; the connection sends no body


def test_vary_is_merged():
    out = Compressor().finish(req(), Response(b"a" * 5000, headers={"Vary": "Origin"}, content_type="text/plain"))
    assert out.headers["vary"] == "Origin, Accept-Encoding"


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
async def test_streams_compress_incrementally_with_a_flush_per_chunk(coding):
    closed = asyncio.Event()

    async def events():
        try:
            for i in range(5):
                yield f"data: event {i}\n\n"
        finally:
            closed.set()

    out = Compressor().finish(req(coding), stream(events(), content_type="text/event-stream"))
    assert isinstance(out, StreamResponse) and out.headers["content-encoding"] == coding
    # Each chunk, as it comes, decodes to exactly the events sent so far: nothing is held back.
    if coding == "gzip":
        import zlib

        decoder = zlib.decompressobj(31)
        feed = decoder.decompress
    elif coding == "br":
        decoder = brotli.Decompressor()
        feed = decoder.process
    else:
        decoder = zstd.ZstdDecompressor()
        feed = decoder.decompress
    seen = b""
    chunks = []
    async for chunk in out.iterator:
        chunks.append(chunk)
        seen += feed(chunk)
        if len(chunks) <= 5:
            assert seen == b"".join(b"data: event %d\n\n" % i for i in range(len(chunks)))
    assert len(chunks) == 6 and closed.is_set()
    assert decode(coding, b"".join(chunks)) == b"".join(b"data: event %d\n\n" % i for i in range(5))


async def test_closing_an_unstarted_compressed_stream_closes_the_source():
    closed = asyncio.Event()

    async def body():
        try:
            yield "x"
        finally:
            closed.set()

    source = body()
    await source.__anext__()  # started, so that its finally runs on aclose
    out = Compressor().finish(req("gzip"), stream(source, content_type="text/plain"))
    await out.iterator.aclose()
    assert closed.is_set()


async def test_large_bodies_are_compressed_off_the_loop():
    big = orjson.dumps([{"id": i, "name": f"user{i}"} for i in range(60_000)])  # ~1.6 MB
    c = Compressor(CompressionSettings(offload_size=256 * 1024))
    t = time.perf_counter()
    out = c.finish(req("gzip"), Response(big, content_type="application/json"))
    assert time.perf_counter() - t < 0.005  # the finisher returned without compressing
    assert isinstance(out, StreamResponse) and out.headers["content-encoding"] == "gzip"
    chunks = [chunk async for chunk in out.iterator]
    assert gzip.decompress(b"".join(chunks)) == big
    inline = Compressor(CompressionSettings(offload_size=None)).finish(req("gzip"), Response(big, content_type="application/json"))
    assert not isinstance(inline, StreamResponse) and gzip.decompress(inline.body) == big


def test_settings_are_checked():
    for bad in ({"minimum_size": -1}, {"gzip_level": 10}, {"brotli_quality": 12}, {"zstd_level": 23},
                {"codings": ("deflate",)}):
        with pytest.raises(ValueError):
            CompressionSettings(**bad)
    only_gzip = Compressor(CompressionSettings(codings=("gzip",)))
    assert only_gzip.finish(req("br, gzip;q=0.1"), text("a" * 5000)).headers["content-encoding"] == "gzip"


# -- the seam in App ---------------------------------------------------------------------------------
async def test_app_compose_finishers():
    assert App().finish is None or App().finishers == []
    app = App(compress=True)
    app.finishers.append(lambda request, response: (response.headers.__setitem__("X-Seen", "1"), response)[1])
    app.compile()
    out = app.finish(req("gzip"), text("a" * 5000))
    assert out.headers["content-encoding"] == "gzip" and out.headers["x-seen"] == "1"
    plain = App()
    plain.compile()
    assert plain.finish is None
    tuned = App(compress=CompressionSettings(minimum_size=10_000))
    tuned.compile()
    assert "content-encoding" not in tuned.finish(req(), text("a" * 5000)).headers


def test_route_compress_keyword():
    app = App(compress=True)

    @app.get("/raw", compress=False)
    async def raw(request):
        return "x"

    @app.get("/cooked")
    async def cooked(request):
        return "x"

    routes = {r.pattern: r for r in app.routes}
    assert routes["/raw"].compress is False and routes["/cooked"].compress is True


# -- end to end: needs app.finish in the connection ----------------------------------------------------------
def compress_app() -> App:
    app = App(compress=True)

    @app.get("/data")
    async def data(request):
        return orjson.loads(PAYLOAD)

    @app.get("/plain", compress=False)
    async def plain(request):
        return orjson.loads(PAYLOAD)

    return app


async def test_end_to_end_httpx_decodes_each_coding():
    async with running(compress_app()) as server, http_client(server) as client:
        for coding in ("gzip", "br", "zstd"):
            r = await client.get("/data", headers={"accept-encoding": coding})
            assert r.headers["content-encoding"] == coding and r.json() == orjson.loads(PAYLOAD)
        r = await client.get("/plain", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in r.headers


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_end_to_end_curl_compressed():
    async with running(compress_app()) as server:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-s", "--noproxy", "*", "--compressed", "-D", "-", base_url(server) + "/data",
            stdout=subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        head, _, body = out.partition(b"\r\n\r\n")
        assert b"content-encoding:" in head.lower() and orjson.loads(body) == orjson.loads(PAYLOAD)
