"""``request.query``: what ``urllib.parse.parse_qsl(keep_blank_values=True)`` gives, for every query;
queries with nothing to decode (no ``%``, no ``+``) are split without it (``datastructures.parse_query``)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from hypothesis import given, settings
from hypothesis import strategies as st

from aioserve import App
from aioserve.datastructures import QueryParams, parse_query
from tests.support import http_client, running

PIECES = ["a", "b", "q", "x1", "=", "&", "&&", "==", "%", "%20", "%2", "%zz", "%C3%A9", "+", ";", " ", "é", "\x7f", ""]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12).map("".join))
def test_parse_query_is_parse_qsl(query):
    assert parse_query(query) == parse_qsl(query, keep_blank_values=True)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parse_query_is_parse_qsl_on_any_text(query):
    assert parse_query(query) == parse_qsl(query, keep_blank_values=True)


def test_query_params_from_the_wire_bytes():
    q = QueryParams(b"q=fraud&page=2&page=3&flag&empty=&&last=x=y")
    assert q["q"] == "fraud" and q.get("page") == "2" and q.getall("page") == ["2", "3"]
    assert q["flag"] == "" and q["empty"] == "" and q["last"] == "x=y" and len(q) == 5
    assert QueryParams(b"name=J%C3%A9r%C3%B4me+D")["name"] == "Jérôme D"


async def test_a_served_query():
    app = App()

    @app.get("/search")
    async def search(request):
        return {"q": request.query.get("q"), "tags": request.query.getall("tag"), "n": len(request.query)}

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/search?q=caf%C3%A9+au+lait&tag=a&tag=b&blank")
        assert r.json() == {"q": "café au lait", "tags": ["a", "b"], "n": 3}
        r = await client.get("/search?q=plain&tag=x")
        assert r.json() == {"q": "plain", "tags": ["x"], "n": 2}
