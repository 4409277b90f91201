"""Static files end to end: real loopback sockets, httpx, curl and a strict raw client.

Bodies travel through the connection's streaming path with Content-Length framing (a file's length
is known), read in bounded pieces off the event loop.
"""
from __future__ import annotations

import asyncio
import email.parser
import email.policy
import gzip
import os
import shutil
import subprocess
import time

import pytest

from aioserve import App, FileResponse
from tests.support import base_url, http_client, raw_connection, request_bytes, running

brotli = pytest.importorskip("brotli")

BODY = bytes(range(256)) * 40  # 10,240 bytes, every byte value


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "public"
    (root / "docs").mkdir(parents=True)
    (root / "data.bin").write_bytes(BODY)
    (root / "hello.txt").write_text("hello, world\n")
    (root / "app.js").write_text("console.log(1);\n" * 100)
    (root / "app.js.br").write_bytes(brotli.compress(b"console.log(1);\n" * 100))
    (root / "app.js.gz").write_bytes(gzip.compress(b"console.log(1);\n" * 100))
    (root / "docs" / "index.html").write_text("<h1>docs</h1>")
    (root / "empty.txt").write_bytes(b"")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    os.symlink(tmp_path / "secret.txt", root / "outside-link.txt")
    os.symlink(root / "hello.txt", root / "inside-link.txt")
    return root


def make_app(root, **options) -> App:
    app = App()
    app.static("/static", str(root), **options)
    return app


async def test_get_and_head_serve_the_file_with_validators(site):
    async with running(make_app(site)) as server, http_client(server) as client:
        r = await client.get("/static/data.bin")
        assert r.status_code == 200 and r.content == BODY
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["accept-ranges"] == "bytes"
        assert r.headers["etag"].startswith('"') and r.headers["last-modified"].endswith("GMT")
        t = await client.get("/static/hello.txt")
        assert t.headers["content-type"] == "text/plain; charset=utf-8" and t.text == "hello, world\n"
        h = await client.head("/static/data.bin")
        assert h.status_code == 200 and h.content == b"" and h.headers["etag"] == r.headers["etag"]
        e = await client.get("/static/empty.txt")
        assert e.status_code == 200 and e.content == b""


async def test_file_has_an_exact_content_length(site):
    async with running(make_app(site)) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/static/data.bin"))
        resp = await conn.read_final_response()
        assert not resp.chunked and resp.header("content-length") == str(len(BODY))


async def test_validators_304_and_precedence(site):
    app = make_app(site, cache_control="public, max-age=60")
    async with running(app) as server, http_client(server) as client:
        first = await client.get("/static/hello.txt")
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        assert first.headers["cache-control"] == "public, max-age=60"
        for inm in (etag, f'"nope", {etag}', "*", "W/" + etag):
            r = await client.get("/static/hello.txt", headers={"if-none-match": inm})
            assert r.status_code == 304, inm
            assert r.content == b"" and r.headers["etag"] == etag
            assert r.headers["cache-control"] == "public, max-age=60"
        r = await client.get("/static/hello.txt", headers={"if-modified-since": modified})
        assert r.status_code == 304
        # If-None-Match takes precedence: a mismatch there means 200 even though IMS would say 304
        r = await client.get("/static/hello.txt", headers={"if-none-match": '"other"', "if-modified-since": modified})
        assert r.status_code == 200 and r.text == "hello, world\n"
        r = await client.get("/static/hello.txt", headers={"if-modified-since": "Thu, 01 Jan 1970 00:00:00 GMT"})
        assert r.status_code == 200
        r = await client.get("/static/hello.txt", headers={"if-modified-since": "not a date"})
        assert r.status_code == 200
        r = await client.get("/static/hello.txt", headers={"if-match": '"other"'})
        assert r.status_code == 412
        r = await client.get("/static/hello.txt", headers={"if-match": etag})
        assert r.status_code == 200


async def test_304_keeps_vary(site):
    async with running(make_app(site)) as server, http_client(server) as client:
        first = await client.get("/static/app.js", headers={"accept-encoding": "br"})
        r = await client.get("/static/app.js", headers={"accept-encoding": "br", "if-none-match": first.headers["etag"]})
        assert r.status_code == 304 and r.headers["vary"] == "Accept-Encoding"
        assert r.headers["etag"] == first.headers["etag"]


@pytest.mark.parametrize("spec, start, end", [
    ("bytes=0-0", 0, 0), ("bytes=0-99", 0, 99), ("bytes=-100", len(BODY) - 100, len(BODY) - 1),
    ("bytes=10000-", 10000, len(BODY) - 1), ("bytes=5-999999", 5, len(BODY) - 1),
    ("bytes=-999999", 0, len(BODY) - 1), ("BYTES = 3-4", 3, 4),
])
async def test_single_ranges(site, spec, start, end):
    async with running(make_app(site)) as server, http_client(server) as client:
        r = await client.get("/static/data.bin", headers={"range": spec})
        assert r.status_code == 206, r.text
        assert r.headers["content-range"] == f"bytes {start}-{end}/{len(BODY)}"
        assert r.content == BODY[start:end + 1]


async def test_unsatisfiable_and_ignored_ranges(site):
    async with running(make_app(site)) as server, http_client(server) as client:
        r = await client.get("/static/data.bin", headers={"range": f"bytes={len(BODY)}-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(BODY)}"
        r = await client.get("/static/data.bin", headers={"range": "bytes=-0"})
        assert r.status_code == 416
        r = await client.get("/static/empty.txt", headers={"range": "bytes=0-"})
        assert r.status_code == 416 and r.headers["content-range"] == "bytes */0"
        for ignored in ("bytes=5-1", "items=0-1", "bytes=a-b", "bytes=0-1," + ",".join(["2-3"] * 20)):
            r = await client.get("/static/data.bin", headers={"range": ignored})
            assert r.status_code == 200 and r.content == BODY, ignored


async def test_if_range(site):
    old = os.stat(site / "data.bin").st_mtime_ns - 10 * 10**9  # a date validator is strong once 1 s old
    os.utime(site / "data.bin", ns=(old, old))
    async with running(make_app(site)) as server, http_client(server) as client:
        first = await client.get("/static/data.bin")
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        for validator in (etag, modified):
            r = await client.get("/static/data.bin", headers={"range": "bytes=0-9", "if-range": validator})
            assert r.status_code == 206 and r.content == BODY[:10]
        for stale in ('"stale"', "W/" + etag, "Thu, 01 Jan 1970 00:00:00 GMT"):
            r = await client.get("/static/data.bin", headers={"range": "bytes=0-9", "if-range": stale})
            assert r.status_code == 200 and r.content == BODY


async def test_if_range_with_the_date_of_a_file_changed_within_its_second_sends_the_whole_file(site):
    """The file changes twice within one second: its Last-Modified stays the same, so that date is a
    weak validator (RFC 9110 8.8.2.2) and If-Range with it is false (13.1.5): 200 and the whole new
    file, never a 206 of the new bytes to splice onto the old ones. The mtimes are set a few seconds
    ahead, so the second is not over however slowly the test runs."""
    path = site / "data.bin"
    second = (int(time.time()) + 5) * 10**9
    os.utime(path, ns=(second + 200_000_000, second + 200_000_000))
    async with running(make_app(site)) as server, http_client(server) as client:
        first = await client.get("/static/data.bin")
        modified = first.headers["last-modified"]
        new = bytes(reversed(BODY))  # same size, other bytes
        path.write_bytes(new)
        os.utime(path, ns=(second + 600_000_000, second + 600_000_000))  # the same second
        r = await client.get("/static/data.bin", headers={"range": "bytes=0-9", "if-range": modified})
        assert r.headers["last-modified"] == modified  # the date cannot tell the two apart
        assert r.status_code == 200 and r.content == new
        r = await client.get("/static/data.bin", headers={"range": "bytes=0-9", "if-range": r.headers["etag"]})
        assert r.status_code == 206 and r.content == new[:10]  # the ETag can


def parse_byteranges(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """Decode multipart/byteranges with the standard library's MIME parser (independent of ours)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    assert message.is_multipart()
    return [(part["content-range"], part.get_payload(decode=True)) for part in message.iter_parts()]


async def test_multiple_ranges_are_a_correct_multipart_with_overlap_merged(site):
    async with running(make_app(site)) as server, http_client(server) as client:
        r = await client.get("/static/data.bin", headers={"range": "bytes=100-199,0-9,150-250,-10"})
        assert r.status_code == 206
        ctype = r.headers["content-type"]
        assert ctype.startswith("multipart/byteranges; boundary=")
        parts = parse_byteranges(ctype, r.content)
        size = len(BODY)
        assert parts == [
            (f"bytes 0-9/{size}", BODY[0:10]),
            (f"bytes 100-250/{size}", BODY[100:251]),
            (f"bytes {size - 10}-{size - 1}/{size}", BODY[-10:]),
        ]
        # adjacent ranges coalesce into one: a plain 206
        r = await client.get("/static/data.bin", headers={"range": "bytes=0-9,10-19"})
        assert r.status_code == 206 and r.headers["content-range"] == f"bytes 0-19/{size}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_ranges(site):
    async with running(make_app(site)) as server:
        url = base_url(server) + "/static/data.bin"
        for spec, expected in (("0-0", BODY[:1]), ("-5", BODY[-5:]), ("10240-", b""), ("100-", BODY[100:])):
            proc = await asyncio.create_subprocess_exec(
                "curl", "-s", "--noproxy", "*", "-r", spec, "-w", "\n%{http_code}", url,
                stdout=subprocess.PIPE)
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
            body, _, code = out.rpartition(b"\n")
            if expected:
                assert code == b"206" and body == expected, spec
            else:
                assert code == b"416", spec


async def test_precompressed_siblings(site):
    plain = b"console.log(1);\n" * 100
    async with running(make_app(site)) as server, http_client(server) as client:
        r = await client.get("/static/app.js", headers={"accept-encoding": "gzip, br"})
        assert r.headers["content-encoding"] == "br" and r.headers["vary"] == "Accept-Encoding"
        assert r.headers["content-type"] == "text/javascript; charset=utf-8"
        assert r.content == plain  # httpx decoded it with brotli
        r = await client.get("/static/app.js", headers={"accept-encoding": "br;q=0.5, gzip"})
        assert r.headers["content-encoding"] == "gzip" and r.content == plain
        r = await client.get("/static/app.js", headers={"accept-encoding": "gzip;q=0, br;q=0"})
        assert "content-encoding" not in r.headers and r.content == plain
        assert r.headers["vary"] == "Accept-Encoding"
        r = await client.get("/static/app.js", headers={"accept-encoding": "zstd"})  # no .zst beside it
        assert "content-encoding" not in r.headers and r.content == plain
        r = await client.get("/static/app.js", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in r.headers
        # each representation has its own validator
        gz = await client.get("/static/app.js", headers={"accept-encoding": "gzip"})
        assert gz.headers["etag"] != r.headers["etag"]
    async with running(make_app(site)) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/static/app.js", {"Accept-Encoding": "gzip"}))
        resp = await conn.read_final_response()
        assert gzip.decompress(resp.body) == plain  # Python's own gzip decoder on the raw bytes


async def test_html_index_and_redirect(site):
    async with running(make_app(site, html=True)) as server, http_client(server) as client:
        r = await client.get("/static/docs/")
        assert r.status_code == 200 and r.text == "<h1>docs</h1>"
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        r = await client.get("/static/docs?x=1")
        assert r.status_code == 307 and r.headers["location"] == "/static/docs/?x=1"
        r = await client.get("/static")
        assert r.status_code == 307 and r.headers["location"] == "/static/"
        r = await client.get("/static/")  # the root has no index.html: no listing either
        assert r.status_code == 404
    async with running(make_app(site)) as server, http_client(server) as client:
        for path in ("/static/docs/", "/static/docs", "/static/", "/static", "/static/docs/index.html/"):
            r = await client.get(path)
            assert r.status_code == 404, path
        r = await client.get("/static/docs/index.html")  # by its name it is just a file
        assert r.status_code == 200


async def test_symlinks(site):
    async with running(make_app(site)) as server, http_client(server) as client:
        for path in ("/static/outside-link.txt", "/static/inside-link.txt"):
            r = await client.get(path)
            assert r.status_code == 404 and b"SECRET" not in r.content
    async with running(make_app(site, follow_symlinks=True)) as server, http_client(server) as client:
        r = await client.get("/static/inside-link.txt")
        assert r.status_code == 200 and r.text == "hello, world\n"
        r = await client.get("/static/outside-link.txt")
        assert r.status_code == 404 and b"SECRET" not in r.content


async def test_symlinked_directory_is_not_followed(site, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.txt").write_text("SECRET elsewhere")
    os.symlink(outside, site / "linkdir")
    async with running(make_app(site)) as server, http_client(server) as client:
        r = await client.get("/static/linkdir/x.txt")
        assert r.status_code == 404 and b"SECRET" not in r.content


# At least 30 hostile request targets, sent byte for byte by a raw client (httpx would normalise them).
TRAVERSAL = [
    "/static/../secret.txt", "/static/..%2fsecret.txt", "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt", "/static/%2e%2e%2fsecret.txt", "/static/..%5csecret.txt",
    "/static/%2e%2e%5csecret.txt", "/static/..\\secret.txt", "/static/docs/../../secret.txt",
    "/static/docs/%2e%2e/%2e%2e/secret.txt", "/static/./../secret.txt", "/static/%2e/%2e%2e/secret.txt",
    "/static/.%2e/secret.txt", "/static/%2e./secret.txt", "/static//etc/passwd", "/static/%2fetc%2fpasswd",
    "/static/%2Fetc%2Fpasswd", "/static/\\etc\\passwd", "/static/%5cetc%5cpasswd", "/static/hello.txt%00.png",
    "/static/hello.txt%00", "/static/%00", "/static/..%00/secret.txt", "/static/%252e%252e/secret.txt",
    "/static/..%252fsecret.txt", "/static/%c0%ae%c0%ae/secret.txt", "/static/%c0%af", "/static/%ff",
    "/static/....//secret.txt", "/static/...", "/static/..", "/static/.", "/static/docs/..",
    "/static/%2e%2e", "/static/docs%2f..%2f..%2fsecret.txt", "/static/hello.txt/", "/static/hello.txt/..",
    "/static/C:%5cWindows%5cwin.ini", "/static/%0d%0aSet-Cookie:x", "/static/%7f",
]


async def test_traversal_corpus_never_leaves_the_directory(site):
    assert len(TRAVERSAL) >= 30
    for options in ({}, {"html": True, "follow_symlinks": True}):
        async with running(make_app(site, **options)) as server:
            for target in TRAVERSAL:
                async with raw_connection(server) as conn:
                    await conn.send(request_bytes("GET", target))
                    resp = await conn.read_final_response()
                    assert resp.status in (400, 404), (target, resp.status)
                    assert b"SECRET" not in resp.body and b"root:" not in resp.body, target


async def test_file_response_from_a_handler(site):
    app = App()

    @app.get("/download")
    async def download(request):
        return FileResponse(site / "hello.txt", filename="report 2024 é.txt",
                            headers={"Cache-Control": "no-store"})

    @app.get("/missing")
    async def missing(request):
        return FileResponse(site / "nope.txt")

    @app.get("/ranged")
    async def ranged(request):
        return FileResponse(site / "data.bin").respond_to(request)

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/download")
        assert r.status_code == 200 and r.text == "hello, world\n"
        assert r.headers["content-disposition"] == (
            "attachment; filename=\"report 2024 _.txt\"; filename*=UTF-8''report%202024%20%C3%A9.txt")
        assert r.headers["cache-control"] == "no-store"
        assert (await client.get("/missing")).status_code == 404
        r = await client.get("/ranged", headers={"range": "bytes=1-2"})
        assert r.status_code == 206 and r.content == BODY[1:3]


async def test_disconnect_stops_the_transfer_and_closes_the_file(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(64 * 2**20)  # sparse: 64 MiB that cost no disk
    sent: list[FileResponse] = []
    app = App()

    @app.get("/big")
    async def download(request):
        response = FileResponse(big)
        sent.append(response)
        return response

    async with running(app) as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/big"))
            assert (await conn.read_some()).startswith(b"HTTP/1.1 200")
        # The client is gone after reading a little; the server must notice, stop and close the fd.
        from tests.support import wait_until

        await wait_until(lambda: sent and sent[0].fd is None, timeout=5)


def test_static_directory_must_exist(tmp_path):
    with pytest.raises(ValueError):
        App().static("/x", str(tmp_path / "missing"))


def test_an_unsent_file_response_releases_its_descriptor(site):
    response = FileResponse(site / "hello.txt")
    fd = response.fd
    assert fd is not None and os.fstat(fd)
    del response
    with pytest.raises(OSError):
        os.fstat(fd)  # closed (and not yet reused: nothing opened a file in between)
