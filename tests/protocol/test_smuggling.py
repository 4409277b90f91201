"""Request smuggling and malformed input (RFC 9112 sections 5 and 6.3), and response splitting.

Each bad request is sent together with a second, innocent request in the same write: the server must
answer the bad one with the expected status and ``Connection: close``, close, and never process what
followed it (that second request is how a smuggling attack would get through).
"""

from __future__ import annotations

import pytest

from aioserve import Response
from tests.support import HostileClient, raw_connection, request_bytes, running
from tests.support.apps import hostile_app

FOLLOW_UP = b"GET /?smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

# (id, raw request, accepted statuses)
BAD_REQUESTS = [
    # --- framing: Content-Length / Transfer-Encoding (RFC 9112 6.3) ---
    ("cl-and-te", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    ("te-and-cl", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", {400}),
    ("cl-and-te-get", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    ("two-cl-differ", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", {400}),
    ("cl-list-differ", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!", {400}),
    ("cl-plus", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", {400}),
    ("cl-minus", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello", {400}),
    ("cl-hex", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello", {400}),
    ("cl-decimal-point", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5.0\r\n\r\nhello", {400}),
    ("cl-underscore", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\nhellohello", {400}),
    ("cl-inner-space", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1 0\r\n\r\nhellohello", {400}),
    ("cl-empty", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", {400}),
    ("cl-unicode-digit", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: \u0665\r\n\r\nhello".encode("utf-8"), {400}),
    ("cl-overflow", b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999999\r\n\r\n", {400, 413}),
    ("te-gzip", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", {400}),
    ("te-chunked-then-gzip", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", {400}),
    ("te-identity", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", {400, 501}),
    ("te-xchunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", {400, 501}),
    ("te-chunked-x", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n", {400, 501}),
    ("te-unknown-then-chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n", {501}),
    ("te-gzip-then-chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", {501}),
    ("te-two-headers-last-not-chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n", {400, 501}),
    ("te-chunked-twice", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", {400, 501}),
    ("te-space-before-colon", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", {400}),
    ("te-obs-fold", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", {400}),
    ("te-vertical-tab", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", {400, 501}),
    ("te-and-cl-in-http10", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", {400}),
    # --- header syntax (RFC 9112 5) ---
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", {400}),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", {400}),
    ("obs-fold-first-line", b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", {400}),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n", {400}),
    ("tab-before-colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A\t: b\r\n\r\n", {400}),
    ("host-space-before-colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", {400}),
    ("nul-in-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", {400}),
    ("nul-in-name", b"GET / HTTP/1.1\r\nHost: x\r\nX-\x00A: b\r\n\r\n", {400}),
    ("bare-cr-in-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", {400}),
    ("bare-cr-in-name", b"GET / HTTP/1.1\r\nHost: x\r\nX-\rA: b\r\n\r\n", {400}),
    ("bare-cr-line-end", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\rX-B: c\r\n\r\n", {400}),
    ("ctl-in-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", {400}),
    ("esc-in-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x1bb\r\n\r\n", {400}),
    ("del-in-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", {400}),
    ("ctl-in-name", b"GET / HTTP/1.1\r\nHost: x\r\nX-\x01A: b\r\n\r\n", {400}),
    ("separator-in-name", b"GET / HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n", {400}),
    ("empty-name", b"GET / HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n", {400}),
    ("no-colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A b\r\n\r\n", {400}),
    ("nul-in-target", b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("space-in-target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", {400, 505}),
    ("ctl-in-target", b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    # --- Host (RFC 9112 3.2) ---
    ("no-host", b"GET / HTTP/1.1\r\n\r\n", {400}),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {400}),
    ("two-identical-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", {400}),
    ("host-list", b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", {400}),
    ("host-space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", {400}),
    ("host-slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", {400}),
    ("host-userinfo", b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", {400}),
    ("host-bad-port", b"GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", {400}),
    ("host-two-ports", b"GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", {400}),
    ("host-long-port", b"GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n", {400}),
    ("host-unclosed-bracket", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", {400}),
    ("host-backslash", b"GET / HTTP/1.1\r\nHost: a\\b\r\n\r\n", {400}),
    ("host-hash", b"GET / HTTP/1.1\r\nHost: a#b\r\n\r\n", {400}),
    # --- method and version ---
    ("method-separator", b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("method-at", b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("method-nul", b"GET\x00 / HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("method-del", b"\x7fGET / HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("method-empty", b" / HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("http-2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", {505}),
    ("http-1.2", b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", {505}),
    ("http-0.9", b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", {505}),
    ("http-3.0", b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", {505}),
    ("http-lowercase", b"GET / http/1.1\r\nHost: x\r\n\r\n", {400}),
    ("http-junk-version", b"GET / HTTP/1.1x\r\nHost: x\r\n\r\n", {400}),
    # --- chunked body syntax ---
    ("chunk-size-overflow", b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", {400}),
    ("chunk-size-overflow-long", b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 40 + b"\r\n", {400}),
    ("chunk-size-0x", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk-size-negative", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk-data-too-long", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk-data-no-crlf", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", {400}),
]


def _app():
    return hostile_app()


@pytest.mark.parametrize("payload,statuses", [p[1:] for p in BAD_REQUESTS], ids=[p[0] for p in BAD_REQUESTS])
async def test_bad_request_refused_closed_and_nothing_after_it_processed(payload, statuses):
    app, probe = _app()
    async with running(app) as server:
        client = await HostileClient.open(server.port)
        try:
            client.write(payload + FOLLOW_UP)
            assert await client.closed(timeout=5), f"connection not closed; got {bytes(client.sink.data)!r}"
            responses = await client.responses(1, timeout=1)
        finally:
            client.close()
        assert len(responses) == 1, [(r.status, r.body) for r in responses]
        resp = responses[0]
        assert resp.status in statuses, (resp.status, resp.body)
        assert "close" in (resp.header("connection") or "").lower()
        assert "smuggled" not in repr(probe.paths) and probe.started == 0
        # The server is unharmed.
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/"))
            assert (await conn.read_final_response()).status == 200


GOOD_REQUESTS = [
    ("te-tab-ows", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b'{"size":5}'),
    ("te-uppercase", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b'{"size":5}'),
    ("cl-leading-zeros", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\nhello", b'{"size":5}'),
    ("cl-trailing-ows", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5 \r\n\r\nhello", b'{"size":5}'),
    ("chunk-extension", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n", b'{"size":5}'),
    ("chunk-uppercase-hex", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nA\r\nhellohello\r\n0\r\n\r\n", b'{"size":10}'),
    ("host-with-port", b"GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", b"ok"),
    ("host-ipv6", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", b"ok"),
    ("host-ipv4", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"ok"),
    ("host-empty-http11", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", b"ok"),  # RFC 9110 7.2: empty Host is allowed
    ("http10-no-host", b"GET / HTTP/1.0\r\n\r\n", b"ok"),
    ("obs-text-in-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: caf\xe9\r\n\r\n", b"ok"),
    ("tab-in-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\tb\r\n\r\n", b"ok"),
]


@pytest.mark.parametrize("payload,body", [p[1:] for p in GOOD_REQUESTS], ids=[p[0] for p in GOOD_REQUESTS])
async def test_valid_edge_cases_are_accepted(payload, body):
    app, _ = _app()
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(payload)
        resp = await conn.read_final_response()
        assert resp.status == 200 and resp.body == body, (resp.status, resp.body)


async def test_identical_duplicate_content_length_is_not_a_desync():
    """RFC 9112 6.3 lets a server accept identical repeated lengths or refuse them; either way the
    body must be read with that length, never split into a second request."""
    app, probe = _app()
    async with running(app) as server:
        client = await HostileClient.open(server.port)
        try:
            client.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
                         + request_bytes("GET", "/"))
            first = await client.response()
            if first.status == 200:
                assert first.body == b'{"size":5}'
                assert [r.status for r in await client.responses(2)] == [200, 200]
            else:
                assert first.status == 400 and await client.closed()
                assert probe.started == 0
        finally:
            client.close()


async def test_te_and_cl_smuggle_attempt_answers_once():
    """The classic CL.TE probe: a front end using Content-Length would forward ``0\\r\\n\\r\\nG`` as
    body; a back end using chunked would see a new request starting with ``G``.  aioserve refuses."""
    app, probe = _app()
    async with running(app) as server:
        client = await HostileClient.open(server.port)
        try:
            client.write(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"0\r\n\r\nGET /?smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            assert await client.closed()
            responses = await client.responses(1)
            assert [r.status for r in responses] == [400]
            assert probe.started == 0
        finally:
            client.close()


async def test_transfer_encoding_in_http10_request_closes_after_it():
    """RFC 9112 6.1: framing of an HTTP/1.0 message with Transfer-Encoding is faulty; the
    connection must close after it even when the client asked for keep-alive."""
    app, probe = _app()
    async with running(app) as server:
        client = await HostileClient.open(server.port)
        try:
            client.write(b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n0\r\n\r\n" + FOLLOW_UP)
            assert await client.closed()
            responses = await client.responses(1)
            assert len(responses) == 1 and responses[0].status in (200, 400)
            assert "smuggled" not in repr(probe.paths)
        finally:
            client.close()


# --------------------------------------------------------------------------
# Response splitting: the app can never put CR or LF into a response head
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: Response(b"x", headers={"X-Evil": "a\r\nInjected: 1"}),
        lambda: Response(b"x", headers={"X-Evil": "a\nInjected: 1"}),
        lambda: Response(b"x", headers={"X-Evil": "a\rInjected: 1"}),
        lambda: Response(b"x", headers={"X-Evil\r\nInjected": "1"}),
        lambda: Response(b"x", headers={"X-Evil: a\r\nInjected": "1"}),
        lambda: Response(b"x", headers=[("X-Evil", "a\r\n\r\n<html>")]),
        lambda: Response(b"x", content_type="text/html\r\nInjected: 1"),
    ],
    ids=["crlf-value", "lf-value", "cr-value", "crlf-name", "colon-name", "list-body-injection", "content-type"],
)
def test_response_header_with_cr_or_lf_raises(build):
    with pytest.raises(ValueError):
        response = build()
        response.encode_head(b"", b"")


def test_response_header_set_later_with_crlf_raises():
    response = Response(b"x")
    with pytest.raises(ValueError):
        response.headers["X-Evil"] = "a\r\nInjected: 1"
    with pytest.raises(ValueError):
        response.headers.add("X-Evil", "a\nInjected: 1")
    with pytest.raises(ValueError):
        response.set_cookie("a", "b", path="/\r\nInjected: 1")
    with pytest.raises(ValueError):
        response.set_cookie("a", "b", domain="x\r\nInjected: 1")


@pytest.mark.parametrize("path", ["/split-value", "/split-name", "/split-lf", "/split-set", "/split-cookie"])
async def test_split_header_from_handler_is_never_sent(path):
    app, _ = _app()
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", path))
        resp = await conn.read_final_response()
        assert resp.status == 500
        assert b"Injected" not in resp.raw_head and not resp.has("injected")
        # the connection is still usable
        await conn.send(request_bytes("GET", "/"))
        assert (await conn.read_final_response()).status == 200


def test_redirect_location_cannot_split():
    from aioserve import redirect

    try:
        response = redirect("/a\r\nInjected: 1")
    except ValueError:
        return
    head = response.encode_head(b"", b"")
    assert b"\r\nInjected" not in head
