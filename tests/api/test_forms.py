"""Forms and uploads (aioserve/forms.py): request.form() and request.multipart() over real sockets,
with httpx, curl and raw bytes; limits (413), malformed bodies (400, never 500), wrong types (415)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import pytest

from tests.support import wait_until, forms_app
from aioserve import App
from aioserve.cli import build_parser, settings_from_args
from aioserve.config import Config
from aioserve.forms import DEFAULT_LIMITS, FormData, FormLimits, MultipartReader, UploadFile
from aioserve.errors import HTTPError
from tests.support import base_url, http_client, raw_connection, request_bytes, running

MiB = 1024 * 1024
BOUNDARY = "bNd4ry"
MP_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, value: bytes, filename: str | None = None, extra: str = "") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n{extra}\r\n".encode() + value + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture
async def client():
    forms_app.uploads.clear()
    async with running(forms_app.app) as server, http_client(server) as c:
        yield c


# --------------------------------------------------------------------------
# form(): urlencoded
# --------------------------------------------------------------------------


async def test_urlencoded_form_is_multi_valued_and_keeps_blank_values(client):
    r = await client.post("/form", content=b"a=1&b=&a=2&c=x+y%21&empty", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    data = r.json()
    assert data["fields"] == [["a", "1"], ["b", ""], ["a", "2"], ["c", "x y!"], ["empty", ""]]
    assert data["keys"] == ["a", "b", "c", "empty"] and data["files"] == []


async def test_urlencoded_form_with_httpx_data(client):
    r = await client.post("/form", data={"name": "Zoë", "tags": ["a", "b"]})
    assert r.status_code == 200
    assert r.json()["fields"] == [["name", "Zoë"], ["tags", "a"], ["tags", "b"]]


async def test_urlencoded_charset_field_selects_the_charset(client):
    latin = "caf%E9"  # é in latin-1, invalid as UTF-8
    r = await client.post("/form", content=f"_charset_=iso-8859-1&w={latin}".encode(),
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and ["w", "café"] in r.json()["fields"]
    r = await client.post("/form", content=f"w={latin}".encode(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400  # UTF-8 by default: not valid
    r = await client.post("/form", content=b"_charset_=no-such-charset&w=1", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400


async def test_urlencoded_limits(client):
    ct = {"content-type": "application/x-www-form-urlencoded"}
    ok = "&".join(f"f{i}=1" for i in range(5)).encode()
    assert (await client.post("/form/tight?parts=5", content=ok, headers=ct)).status_code == 200
    assert (await client.post("/form/tight?parts=5", content=ok + b"&f5=1", headers=ct)).status_code == 413
    assert (await client.post("/form/tight?field=10", content=b"a=" + b"x" * 10, headers=ct)).status_code == 200
    assert (await client.post("/form/tight?field=10", content=b"a=" + b"x" * 11, headers=ct)).status_code == 413


async def test_urlencoded_limit_counts_fields_not_separators(client):
    """Empty pairs (a trailing ``&``, ``&&``) are no fields: parsing skips them, and so does the limit."""
    ct = {"content-type": "application/x-www-form-urlencoded"}
    for content, fields in [(b"a=1&b=2&c=3&", [["a", "1"], ["b", "2"], ["c", "3"]]),
                            (b"a=1&&&b=2", [["a", "1"], ["b", "2"]]),
                            (b"&" * 100_000 + b"a=1" + b"&" * 100_000, [["a", "1"]]),
                            (b"&a=1&b&c=", [["a", "1"], ["b", ""], ["c", ""]])]:
        r = await client.post("/form/tight?parts=3", content=content, headers=ct)
        assert r.status_code == 200 and r.json()["fields"] == fields, content[:40]
    for content in (b"a=1&b=2&c=3&d=4", b"a&b&c&d", b"&&a=1&&b=2&&c=3&&=&&"):
        r = await client.post("/form/tight?parts=3", content=content, headers=ct)
        assert r.status_code == 413 and "more than 3 fields" in r.text, content


def test_urlencoded_flood_of_empty_pairs_is_parsed_in_bounded_memory():
    """Empty pairs pass the limit; they must not cost a list entry each (20 MB of "&": 20M entries)."""
    import tracemalloc

    from aioserve.forms import _parse_urlencoded

    flood = b"&" * 20_000_000 + b"a=1&" + b"&" * 1000
    tracemalloc.start()
    try:
        form = _parse_urlencoded(flood, DEFAULT_LIMITS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert form.multi_items() == [("a", "1")]
    assert peak < 1 * MiB, f"{peak / MiB:.1f} MiB to parse a flood of empty pairs"


async def test_urlencoded_field_names_are_bounded_by_the_field_size(client):
    ct = {"content-type": "application/x-www-form-urlencoded"}
    assert (await client.post("/form/tight?field=10", content=b"n" * 10 + b"=v", headers=ct)).status_code == 200
    for content in (b"n" * 11 + b"=v", b"n" * 11, b"%41" * 11 + b"=v", b"a=1&" + b"n" * 1_000_000 + b"=v"):
        r = await client.post("/form/tight?field=10", content=content, headers=ct)
        assert r.status_code == 413, content[:40]


async def test_urlencoded_flood_of_fields_is_refused_quickly(client):
    flood = b"&".join(b"a=%d" % i for i in range(100_000))
    t0 = time.perf_counter()
    r = await client.post("/form", content=flood, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    assert time.perf_counter() - t0 < 2.0


# --------------------------------------------------------------------------
# form(): multipart
# --------------------------------------------------------------------------


async def test_multipart_form_fields_and_files_with_httpx(client):
    files = [("doc", ("a.txt", b"hello", "text/plain")), ("doc", ("b.bin", b"\x00\x01", "application/octet-stream"))]
    r = await client.post("/form", data={"name": "x", "blank": ""}, files=files)
    assert r.status_code == 200, r.text
    data = r.json()
    assert ["name", "x"] in data["fields"] and ["blank", ""] in data["fields"]
    assert [(f["field"], f["filename"], f["content_type"], f["size"]) for f in data["files"]] == [
        ("doc", "a.txt", "text/plain", 5), ("doc", "b.bin", "application/octet-stream", 2)]
    assert "doc" not in data["keys"]  # files are only in form.files
    assert any(name == "Content-Disposition" for name, _ in data["files"][0]["headers"])


async def test_upload_file_read_and_save_small_and_spooled(client, tmp_path):
    small = b"small file\n" * 10
    big = bytes(range(256)) * (5 * MiB // 256)  # 5 MiB: spools to disk past 1 MiB
    for payload in (small, big):
        r = await client.post("/echo-file", files={"file": ("f.bin", payload)})
        assert r.status_code == 200 and r.content == payload
    r = await client.post("/form", files={"file": ("f.bin", big)})
    (info,) = r.json()["files"]
    assert info["size"] == len(big) and info["in_memory"] is False
    r = await client.post("/form", files={"file": ("s.txt", small)})
    assert r.json()["files"][0]["in_memory"] is True

    app = App()

    @app.post("/save", max_body_size=None)
    async def save(request):  # save, seek and read while the request lasts (its files go with it)
        upload = (await request.form()).files["file"]
        await upload.save(tmp_path / upload.filename)
        await upload.seek(upload.size - 3)
        return {"tail": (await upload.read()).hex(), "in_memory": upload.in_memory}

    async with running(app) as server, http_client(server) as c:
        for name, payload in (("big.bin", big), ("small.txt", small)):
            r = await c.post("/save", files={"file": (name, payload)})
            assert r.json() == {"tail": payload[-3:].hex(), "in_memory": payload is small}
            assert (tmp_path / name).read_bytes() == payload


async def test_multipart_charset_field_and_part_charset(client):
    payload = body(part("_charset_", b"iso-8859-1"), part("w", "café".encode("latin-1")),
                   part("u", "café".encode(), extra="Content-Type: text/plain; charset=utf-8\r\n"))
    r = await client.post("/form", content=payload, headers={"content-type": MP_TYPE})
    assert r.status_code == 200, r.text
    assert ["w", "café"] in r.json()["fields"] and ["u", "café"] in r.json()["fields"]
    bad = body(part("w", b"\xff\xfe"))
    assert (await client.post("/form", content=bad, headers={"content-type": MP_TYPE})).status_code == 400


async def test_curl_form_upload(tmp_path):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (CI installs it)")
    payload = bytes(range(256)) * 8192  # 2 MiB
    (tmp_path / "up.bin").write_bytes(payload)
    async with running(forms_app.app) as server:
        proc = await asyncio.create_subprocess_exec(
            curl, "-sS", "--noproxy", "*", "-F", "name=curl user", "-F", f"file=@{tmp_path / 'up.bin'};type=image/png",
            base_url(server) + "/form", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert ["name", "curl user"] in data["fields"]
    (f,) = data["files"]
    assert (f["field"], f["filename"], f["content_type"], f["size"]) == ("file", "up.bin", "image/png", len(payload))


# --------------------------------------------------------------------------
# multipart(): streaming
# --------------------------------------------------------------------------


async def test_multipart_streams_parts_and_skips_unread_ones(client):
    payload = body(part("a", b"1" * 1000), part("skipme", b"2" * 300_000, "s.bin"), part("c", b"3" * 70_000, "c.bin",
                                                                                       extra="Content-Type: image/gif\r\n"))
    r = await client.post("/parts?skip=skipme", content=payload, headers={"content-type": MP_TYPE})
    assert r.status_code == 200, r.text
    assert r.json() == [
        {"name": "a", "filename": None, "size": 1000, "content_type": None},
        {"name": "skipme", "filename": "s.bin", "size": 0, "content_type": None},
        {"name": "c", "filename": "c.bin", "size": 70_000, "content_type": "image/gif"},
    ]


async def test_multipart_stream_arriving_a_few_bytes_at_a_time():
    payload = body(part("a", b"hello"), part("f", b"x" * 5000, "f.txt"))
    async with running(forms_app.app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("POST", "/parts", headers=[("Content-Type", MP_TYPE), ("Content-Length", str(len(payload)))]))
        for i in range(0, len(payload), 7):
            await conn.send(payload[i:i + 7])
        resp = await conn.read_response("POST")
    assert resp.status == 200
    assert [(p["name"], p["size"]) for p in json.loads(resp.body)] == [("a", 5), ("f", 5000)]


async def test_multipart_reader_pulls_only_what_it_needs():
    """Backpressure: the reader asks its stream for a chunk only when the handler wants more."""
    pulled = 0
    chunks = [part("a", b"1")] + [b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\n'] \
        + [b"y" * 1000] * 1000 + [f"\r\n--{BOUNDARY}--\r\n".encode()]

    async def stream():
        nonlocal pulled
        for chunk in chunks:
            pulled += 1
            yield chunk

    reader = MultipartReader(stream(), BOUNDARY)
    parts = reader.__aiter__()
    first = await parts.__anext__()
    assert first.name == "a" and await first.read() == b"1"
    second = await parts.__anext__()
    assert second.filename == "x"
    got = 0
    async for chunk in second:
        got += len(chunk)
        if got >= 10_000:
            break
    assert pulled <= 14, pulled  # ten body chunks, the two heads, and at most a chunk of look-ahead
    assert got == 10_000


# --------------------------------------------------------------------------
# limits (413), malformed (400), wrong type (415)
# --------------------------------------------------------------------------


async def test_multipart_limits_are_crossed_by_one(client):
    h = {"content-type": MP_TYPE}
    five = body(*(part(f"f{i}", b"v") for i in range(5)))
    assert (await client.post("/form/tight?parts=5", content=five, headers=h)).status_code == 200
    six = body(*(part(f"f{i}", b"v") for i in range(6)))
    assert (await client.post("/form/tight?parts=5", content=six, headers=h)).status_code == 413
    assert (await client.post("/form/tight?field=10", content=body(part("a", b"x" * 10)), headers=h)).status_code == 200
    assert (await client.post("/form/tight?field=10", content=body(part("a", b"x" * 11)), headers=h)).status_code == 413
    assert (await client.post("/form/tight?file=100", content=body(part("f", b"x" * 100, "f")), headers=h)).status_code == 200
    assert (await client.post("/form/tight?file=100", content=body(part("f", b"x" * 101, "f")), headers=h)).status_code == 413
    # a file is not bound by the field limit, and a field not by the file limit
    assert (await client.post("/form/tight?field=10", content=body(part("f", b"x" * 1000, "f")), headers=h)).status_code == 200
    big_header = body(part("a", b"v", extra="X-Pad: " + "p" * 300 + "\r\n"))
    assert (await client.post("/form/tight?header=500", content=big_header, headers=h)).status_code == 200
    assert (await client.post("/form/tight?header=200", content=big_header, headers=h)).status_code == 413


async def test_ten_thousand_tiny_parts_are_refused_quickly(client):
    flood = body(*(part("a", b"") for _ in range(10_000)))
    for path in ("/form", "/parts"):
        t0 = time.perf_counter()
        r = await client.post(path, content=flood, headers={"content-type": MP_TYPE})
        assert r.status_code == 413
        assert time.perf_counter() - t0 < 2.0


async def test_body_limit_applies_to_forms():
    app = App()

    @app.post("/f", max_body_size=1000)
    async def f(request):
        return (await request.form()).multi_items()

    async with running(app) as server:
        async with http_client(server) as c:
            assert (await c.post("/f", files={"file": ("a", b"x" * 500)})).status_code == 200
        payload = body(part("file", b"x" * 2000, "a"))
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("POST", "/f", headers=[("Content-Type", MP_TYPE), ("Transfer-Encoding", "chunked")]))
            await conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
            assert (await conn.read_response("POST")).status == 413


MALFORMED = {
    "no boundary": ("multipart/form-data", body(part("a", b"1"))),
    "empty boundary": ("multipart/form-data; boundary=", body(part("a", b"1"))),
    "boundary too long": ("multipart/form-data; boundary=" + "b" * 300, b"--" + b"b" * 300 + b"--\r\n"),
    "wrong boundary": ("multipart/form-data; boundary=other", body(part("a", b"1"))),
    "preamble junk": (MP_TYPE, b"junk before\r\n" + body(part("a", b"1"))),
    "junk after boundary": (MP_TYPE, f"--{BOUNDARY}junk\r\n".encode() + body(part("a", b"1"))),
    "truncated": (MP_TYPE, body(part("a", b"1" * 100))[:-20]),
    "no closing boundary": (MP_TYPE, part("a", b"1")),
    "no disposition": (MP_TYPE, f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()),
    "bad header line": (MP_TYPE, f"--{BOUNDARY}\r\nnot a header\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()),
    "LF only": (MP_TYPE, f"--{BOUNDARY}\nContent-Disposition: form-data; name=a\n\nx\n--{BOUNDARY}--\n".encode()),
    "empty body": (MP_TYPE, b""),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_multipart_is_400(client, case):
    ctype, payload = MALFORMED[case]
    for path in ("/form", "/parts"):
        r = await client.post(path, content=payload, headers={"content-type": ctype})
        assert r.status_code == 400, (path, r.status_code, r.text)


async def test_epilogue_after_the_closing_boundary_is_ignored(client):
    payload = body(part("a", b"1")) + b"an epilogue, legal MIME\r\n"
    r = await client.post("/form", content=payload, headers={"content-type": MP_TYPE})
    assert r.status_code == 200 and r.json()["fields"] == [["a", "1"]]


async def test_wrong_content_type_is_415(client):
    r = await client.post("/parts", data={"a": "1"})  # urlencoded: not multipart
    assert r.status_code == 415
    r = await client.post("/parts", json={"a": 1})
    assert r.status_code == 415
    r = await client.post("/form", json={"a": 1})
    assert r.status_code == 415
    r = await client.post("/form", content=b"a=1")  # no content type
    assert r.status_code == 415


async def test_connection_is_reused_after_form_answers(client):
    """Errors and successes alike leave the connection usable (the body is read to its end)."""
    for _ in range(3):
        assert (await client.post("/form", data={"a": "1"})).status_code == 200
        assert (await client.post("/form", content=b"x", headers={"content-type": MP_TYPE})).status_code == 400
        assert (await client.post("/parts", files={"f": ("f", b"z" * 100_000)})).status_code == 200


# --------------------------------------------------------------------------
# cleanup, objects, settings
# --------------------------------------------------------------------------


async def test_form_close_deletes_spooled_files():
    upload = UploadFile("f", None, [], spool_size=10)
    await upload._write(b"x" * 100)
    await upload._finish()
    assert not upload.in_memory
    fileobj = upload._file
    assert await upload.read() == b"x" * 100
    form = FormData([("a", "1")], [("f", upload)])
    await form.aclose()
    assert fileobj.closed
    with pytest.raises(ValueError):
        await upload.read()
    form.close()  # idempotent


async def test_a_forms_files_share_one_memory_bound_and_one_temporary_file(tmp_path):
    """The files of one form keep at most the spool size (1 MiB) in memory together: past it, the file
    being received spools, however small. Spooled files share one temporary file, each its own range
    of it: read, seek, save and close work on each as on a file of its own."""
    sizes = [600_000, 600_000, 10, 3 * MiB, 20, 700_000]
    payloads = [bytes([65 + i]) * size for i, size in enumerate(sizes)]
    app = App()
    kept: list = []

    @app.post("/many", max_body_size=None)
    async def many(request):
        uploads = [f for _, f in (await request.form()).files.multi_items()]
        kept.extend(uploads)
        spooled = [f for f in uploads if not f.in_memory]
        shared = len({id(f._file) for f in spooled}) == 1
        uploads[1].close()  # one file closed early: the others still read from the shared file
        with pytest.raises(ValueError):
            await uploads[1].read()
        checks = []
        for i, f in enumerate(uploads[2:], 2):
            whole = await f.read()
            await f.seek(f.size - 5)
            tail = await f.read()
            await f.seek(1)
            head = await f.read(4)
            past_end = await f.read(10 * MiB) if f.size > 5 else b""
            await f.save(tmp_path / f"{i}.bin")
            checks.append(whole == payloads[i] and tail == payloads[i][-5:] and head == payloads[i][1:5]
                          and past_end == payloads[i][5:] and (tmp_path / f"{i}.bin").read_bytes() == payloads[i])
        return {"in_memory": [f.in_memory for f in uploads], "shared": shared, "checks": checks}

    async with running(app) as server, http_client(server) as c:
        r = await c.post("/many", files=[(f"f{i}", (f"{i}.bin", p)) for i, p in enumerate(payloads)])
        assert r.status_code == 200, r.text
        assert r.json() == {"in_memory": [True, False, True, False, True, False], "shared": True,
                            "checks": [True] * 4}
    shared_file = kept[3]._file
    await wait_until(lambda: shared_file.closed, timeout=5, message="the shared temporary file was not closed")


async def test_the_shared_temporary_file_is_closed_by_its_last_upload():
    from aioserve.forms import _Spool

    spool = _Spool(10)
    a, b = (UploadFile(name, None, [], spool_size=10) for name in ("a", "b"))
    for upload, data in ((a, b"a" * 30), (b, b"b" * 30)):
        upload._spool = spool
        await upload._write(data)
        await upload._finish()
    assert a._file is b._file is spool.file and spool.users == 2
    assert await b.read() == b"b" * 30 and await a.read() == b"a" * 30
    a.close()
    a.close()  # idempotent: counted once
    assert not spool.file.closed and await b.read() == b""  # b's position is at its end
    await b.seek(0)
    assert await b.read(3) == b"bbb"
    await b.aclose()
    assert spool.file.closed


async def test_uploads_are_deleted_when_the_request_ends(client):
    r = await client.post("/form", files={"file": ("f.bin", b"x" * (3 * MiB))})
    assert r.status_code == 200 and r.json()["files"][0]["in_memory"] is False
    (upload,) = forms_app.uploads
    # Closed by the handler's task right after its answer is written, which the client may see first.
    await wait_until(lambda: upload._file.closed, timeout=5, message="the spooled upload was not closed")


async def test_form_is_parsed_once():
    app = App()

    @app.post("/twice")
    async def twice(request):
        first = await request.form()
        second = await request.form()
        return {"same": first is second, "a": second["a"]}

    async with running(app) as server, http_client(server) as c:
        assert (await c.post("/twice", data={"a": "1"})).json() == {"same": True, "a": "1"}


def test_form_limits_settings_and_flags():
    assert DEFAULT_LIMITS == FormLimits(max_parts=1000, max_part_header_size=8192, max_field_size=MiB, max_file_size=None)
    config = Config.from_settings(limit_form_parts=5, limit_form_field_size=10, limit_form_file_size=20,
                                  limit_form_part_header_size=30)
    assert config.form_limits() == FormLimits(max_parts=5, max_field_size=10, max_file_size=20, max_part_header_size=30)
    assert Config().form_limits() == DEFAULT_LIMITS
    with pytest.raises(ValueError):
        Config.from_settings(limit_form_parts=0)
    args = build_parser().parse_args(["m:app", "--limit-form-parts", "7", "--limit-form-field-size", "8",
                                      "--limit-form-file-size", "9", "--limit-form-part-header-size", "10"])
    settings = settings_from_args(args)
    assert Config.from_settings(**settings).form_limits() == FormLimits(7, 10, 8, 9)
    defaults = settings_from_args(build_parser().parse_args(["m:app"]))
    assert Config.from_settings(**defaults).form_limits() == DEFAULT_LIMITS


async def test_reader_raises_http_errors_only():
    async def stream():
        yield b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; name=a\r\n\r\n"

    with pytest.raises(HTTPError) as info:
        async for p in MultipartReader(stream(), BOUNDARY):
            await p.read()
    assert info.value.status == 400
