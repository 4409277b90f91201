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
from tests.support.smuggling_corpus import BAD_REQUESTS, GOOD_REQUESTS

FOLLOW_UP = b"GET /?smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


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
