"""HEAD answers: the GET's head, none of the GET's work (RFC 9110 9.3.2).

- compression: a HEAD of an answer the GET would compress off the loop and stream (``offload_size``
  or more) is never compressed, on the loop or off it, and its head says what the GET's does (chunked,
  no Content-Length); below ``offload_size`` both carry the same compressed length.
- files: a HEAD ignores Range (RFC 9110 14.2: range handling is defined for GET only): 200 and the
  whole length, never 206 or 416; the validators still apply to it (304, 412).
"""
from __future__ import annotations

import gzip
import threading
from types import SimpleNamespace

import orjson
import pytest

from aioserve import App, FileResponse, Response, StreamResponse
from aioserve.compression import CompressionSettings, Compressor
from tests.support import raw_connection, request_bytes, running

BIG = orjson.dumps([{"id": i, "name": f"user{i}", "tags": ["a", "b"]} for i in range(30_000)])  # ~1 MB
SMALL = orjson.dumps([{"id": i, "name": f"user{i}"} for i in range(100)])  # ~2.5 KB
OFFLOAD = 256 * 1024
assert len(BIG) > OFFLOAD > len(SMALL) > 500


def req(method: str, accept: str = "gzip"):
    return SimpleNamespace(method=method, headers={"accept-encoding": accept}, route=None)


class CountingCompressor(Compressor):
    """Records the thread of every one-shot compression."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []

    def compress(self, data: bytes, coding: str) -> bytes:
        self.calls.append(threading.get_ident())
        return super().compress(data, coding)


# -- the finisher -----------------------------------------------------------------------------------------
def test_head_of_a_large_answer_is_not_compressed_and_has_the_gets_head():
    c = CountingCompressor(CompressionSettings(offload_size=OFFLOAD))
    get = c.finish(req("GET"), Response(BIG, headers={"ETag": '"v1"'}, content_type="application/json"))
    head = c.finish(req("HEAD"), Response(BIG, headers={"ETag": '"v1"'}, content_type="application/json"))
    assert c.calls == []  # neither compressed in the finisher (the GET's is done by its stream)
    for out in (get, head):
        assert isinstance(out, StreamResponse) and out.content_length is None  # chunked, no length
    assert head.headers.items() == get.headers.items()
    assert head.headers["content-encoding"] == "gzip" and head.headers["etag"] == 'W/"v1"'


async def test_head_of_a_large_answer_never_produces_a_body():
    c = CountingCompressor(CompressionSettings(offload_size=OFFLOAD))
    head = c.finish(req("HEAD"), Response(BIG, content_type="application/json"))
    assert [chunk async for chunk in head.iterator] == [] and c.calls == []


def test_head_below_offload_size_has_the_gets_length():
    c = Compressor(CompressionSettings(offload_size=OFFLOAD))
    get = c.finish(req("GET", "br"), Response(SMALL, content_type="application/json"))
    head = c.finish(req("HEAD", "br"), Response(SMALL, content_type="application/json"))
    assert not isinstance(head, StreamResponse) and len(head.body) == len(get.body) < len(SMALL)
    assert head.headers.items() == get.headers.items()


# -- end to end --------------------------------------------------------------------------------------------
def head_app(compressor: Compressor) -> App:
    app = App()  # compression through ``compressor``, which records where it compresses
    app.finishers.append(compressor.finish)

    @app.get("/big")
    async def big(request):
        return Response(BIG, content_type="application/json")

    @app.get("/small")
    async def small(request):
        return Response(SMALL, content_type="application/json")

    return app


def comparable(response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers if k != "date"]


async def test_head_and_get_heads_match_and_head_compresses_nothing():
    c = CountingCompressor(CompressionSettings(offload_size=OFFLOAD))
    loop_thread = threading.get_ident()
    async with running(head_app(c)) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("HEAD", "/big", {"Accept-Encoding": "gzip"}))
        head = await conn.read_final_response("HEAD")
        assert c.calls == []  # the HEAD compressed nothing, anywhere
        await conn.send(request_bytes("GET", "/big", {"Accept-Encoding": "gzip"}))
        get = await conn.read_final_response("GET")
        assert len(c.calls) == 1 and c.calls[0] != loop_thread  # the GET's, in a worker thread
        assert get.chunked and gzip.decompress(get.body) == BIG
        assert head.header("transfer-encoding") == "chunked" and head.header("content-length") is None
        assert comparable(head) == comparable(get)

        await conn.send(request_bytes("HEAD", "/small", {"Accept-Encoding": "gzip"}))
        small_head = await conn.read_final_response("HEAD")
        await conn.send(request_bytes("GET", "/small", {"Accept-Encoding": "gzip"}))
        small_get = await conn.read_final_response("GET")
        assert gzip.decompress(small_get.body) == SMALL
        assert small_head.header("content-length") == str(len(small_get.body))
        assert comparable(small_head) == comparable(small_get)


# -- files: Range is for GET only ------------------------------------------------------------------------------
FILE = bytes(range(100))


def file_app(root) -> App:
    app = App()
    app.static("/s", str(root))

    @app.get("/handler")
    async def handler(request):
        return FileResponse(root / "small.bin").respond_to(request)

    return app


@pytest.fixture
def root(tmp_path):
    (tmp_path / "small.bin").write_bytes(FILE)
    return tmp_path


@pytest.mark.parametrize("path", ["/s/small.bin", "/handler"])
async def test_head_ignores_range_but_not_the_validators(root, path):
    async with running(file_app(root)) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", path, {"Range": "bytes=0-1"}))
        partial = await conn.read_final_response("GET")
        assert partial.status == 206 and partial.body == FILE[:2]  # a GET's Range is honoured
        etag = partial.header("etag")
        for spec in ("bytes=0-1", "bytes=-5", "bytes=500-", "bytes=0-1,5-9"):
            for if_range in (None, etag):
                headers = {"Range": spec} if if_range is None else {"Range": spec, "If-Range": if_range}
                await conn.send(request_bytes("HEAD", path, headers))
                head = await conn.read_final_response("HEAD")
                assert head.status == 200, (spec, head.status)
                assert head.header("content-length") == str(len(FILE)) and head.header("content-range") is None
                assert head.header("content-type") == "application/octet-stream"
        await conn.send(request_bytes("HEAD", path, {"Range": "bytes=0-1", "If-None-Match": etag}))
        assert (await conn.read_final_response("HEAD")).status == 304
        await conn.send(request_bytes("HEAD", path, {"Range": "bytes=0-1", "If-Match": '"other"'}))
        assert (await conn.read_final_response("HEAD")).status == 412
        await conn.send(request_bytes("GET", path))
        whole = await conn.read_final_response("GET")
        assert whole.status == 200 and whole.body == FILE  # the connection is still in step
