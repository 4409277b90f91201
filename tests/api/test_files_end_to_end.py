"""Issue 14's list, end to end on both loops, where the other test files check a point only in
parts: curl's multi-range download, ``gzip;q=0`` honoured by the server (dynamic answers and
precompressed files, httpx and curl), a 304 that keeps ETag, Cache-Control and Vary together, and
CORS headers on the errors ``app.static`` raises."""
from __future__ import annotations

import asyncio
import gzip
import shutil
import subprocess

import orjson
import pytest

from aioserve import App
from tests.support import base_url, http_client, running

BODY = bytes(range(256)) * 400  # 102,400 bytes: large enough for sendfile on asyncio's loop
PAYLOAD = [{"id": i, "name": f"user{i}"} for i in range(300)]
ORIGIN = "https://a.example"
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@pytest.fixture
def site(tmp_path):
    (tmp_path / "data.bin").write_bytes(BODY)
    (tmp_path / "app.js").write_text("console.log(1);\n" * 100)
    (tmp_path / "app.js.gz").write_bytes(gzip.compress(b"console.log(1);\n" * 100))
    return tmp_path


def make_app(root) -> App:
    app = App(compress=True)
    app.static("/s", str(root), cache_control="public, max-age=60")
    app.add_cors(allow_origins=[ORIGIN])

    @app.get("/data")
    async def data(request):
        return PAYLOAD

    return app


async def curl(*args: str) -> bytes:
    proc = await asyncio.create_subprocess_exec("curl", "-s", "--noproxy", "*", *args, stdout=subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, args
    return out


@needs_curl
async def test_curl_multi_range_is_a_correct_multipart_byteranges(site):
    async with running(make_app(site)) as server:
        out = await curl("-D", "-", "-r", "0-9,1000-1999,-10", base_url(server) + "/s/data.bin")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206")
    fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    fields = {k.lower(): v for k, v in fields.items()}
    boundary = fields[b"content-type"].split(b"boundary=")[1]
    assert fields[b"content-type"].startswith(b"multipart/byteranges; boundary=")
    assert int(fields[b"content-length"]) == len(body)
    parts = body.split(b"--" + boundary)
    assert parts[0] == b"" and parts[-1] == b"--\r\n"
    found = []
    for part in parts[1:-1]:
        part_head, _, content = part.partition(b"\r\n\r\n")
        assert content.endswith(b"\r\n")
        content_range = next(line for line in part_head.split(b"\r\n") if line.lower().startswith(b"content-range:"))
        first, last = map(int, content_range.split(b" ")[-1].split(b"/")[0].split(b"-"))
        assert content[:-2] == BODY[first:last + 1]
        found.append((first, last))
    assert found == [(0, 9), (1000, 1999), (len(BODY) - 10, len(BODY) - 1)]


async def test_gzip_q0_is_honoured_for_dynamic_answers_and_files(site):
    async with running(make_app(site)) as server, http_client(server) as client:
        r = await client.get("/data", headers={"accept-encoding": "gzip;q=0"})
        assert "content-encoding" not in r.headers and r.json() == PAYLOAD
        assert "Accept-Encoding" in r.headers["vary"]  # (and Origin: the app has CORS)
        r = await client.get("/data", headers={"accept-encoding": "gzip;q=0, *"})  # * = the others
        assert r.headers["content-encoding"] in ("br", "zstd") and r.json() == PAYLOAD
        r = await client.get("/data", headers={"accept-encoding": "gzip;q=1.0"})
        assert r.headers["content-encoding"] == "gzip" and r.json() == PAYLOAD
        r = await client.get("/s/app.js", headers={"accept-encoding": "gzip;q=0"})
        assert "content-encoding" not in r.headers and r.text == "console.log(1);\n" * 100
        r = await client.get("/s/app.js", headers={"accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip" and r.text == "console.log(1);\n" * 100


@needs_curl
async def test_curl_with_gzip_q0_gets_identity(site):
    async with running(make_app(site)) as server:
        out = await curl("-D", "-", "-H", "Accept-Encoding: gzip;q=0, identity", base_url(server) + "/data")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"content-encoding" not in head.lower() and orjson.loads(body) == PAYLOAD


async def test_304_keeps_etag_cache_control_and_vary(site):
    async with running(make_app(site)) as server, http_client(server) as client:
        first = await client.get("/s/app.js", headers={"accept-encoding": "gzip"})
        assert first.headers["content-encoding"] == "gzip"
        r = await client.get("/s/app.js", headers={"accept-encoding": "gzip", "if-none-match": first.headers["etag"]})
        assert r.status_code == 304 and r.content == b""
        assert r.headers["etag"] == first.headers["etag"]
        assert r.headers["cache-control"] == "public, max-age=60"
        assert "Accept-Encoding" in r.headers["vary"]
        assert "content-length" not in r.headers or r.headers["content-length"] == "0"


async def test_cors_headers_on_static_errors(site):
    async with running(make_app(site)) as server, http_client(server) as client:
        for path, status in (("/s/missing.txt", 404), ("/s/%2e%2e/etc/passwd", 404)):
            r = await client.get(path, headers={"origin": ORIGIN})
            assert r.status_code == status
            assert r.headers["access-control-allow-origin"] == ORIGIN and "Origin" in r.headers["vary"]
            r = await client.get(path, headers={"origin": "https://evil.example"})
            assert r.status_code == status and "access-control-allow-origin" not in r.headers
        r = await client.get("/s/data.bin", headers={"origin": ORIGIN, "range": "bytes=999999-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(BODY)}"
        assert r.headers["access-control-allow-origin"] == ORIGIN
