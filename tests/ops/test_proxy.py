"""Proxy headers: trusted peers set ``request.client`` and the scheme; anyone else is ignored."""
from __future__ import annotations

import httpx2
import pytest

import aioserve
from aioserve.errors import ProtocolError
from aioserve.proxy import ProxyHeaders, parse_forwarded, split_node
from aioserve.request import Request
from tests.support import ServerProcess, http_get_json


def make_request(peer: tuple[str, int] | None, headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request(None, "GET", b"/", b"", "/", raw, client=peer)


def resolve(allow, peer, headers):
    req = make_request(peer, headers)
    ProxyHeaders(allow).apply(req)
    return req.client, req.scheme


PEER = ("127.0.0.1", 50000)


@pytest.mark.parametrize("allow,peer,headers,client,scheme", [
    # a trusted peer: X-Forwarded-For / -Proto are taken
    ("127.0.0.1", PEER, {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}, ("203.0.113.7", 0), "https"),
    # an untrusted peer: ignored
    ("10.0.0.1", PEER, {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}, PEER, "http"),
    # a chain: the right-most address that is not one of our proxies is the client; spoofed left part ignored
    ("127.0.0.1, 10.0.0.0/8", PEER, {"X-Forwarded-For": "6.6.6.6, 203.0.113.7, 10.1.2.3"}, ("203.0.113.7", 0), "http"),
    # '*' trusts everyone: the left-most entry is the client
    ("*", ("198.51.100.1", 1), {"X-Forwarded-For": "203.0.113.7, 10.1.2.3"}, ("203.0.113.7", 0), "http"),
    # networks
    ("192.168.0.0/16", ("192.168.4.5", 1), {"X-Forwarded-For": "203.0.113.9"}, ("203.0.113.9", 0), "http"),
    # RFC 7239 Forwarded, when no X-Forwarded-For came; IPv6 in brackets with a port; proto per hop
    ("127.0.0.1", PEER, {"Forwarded": 'for="[2001:db8::17]:4711";proto=https'}, ("2001:db8::17", 4711), "https"),
    # a hop that is not an IP address (unknown, obfuscated, text for the log) leaves the peer in place
    ("127.0.0.1", PEER, {"Forwarded": "for=unknown"}, PEER, "http"),
    ("127.0.0.1", PEER, {"Forwarded": 'for="10.0.0.1 - \\"GET /admin\\" 200"'}, PEER, "http"),
    ("127.0.0.1", PEER, {"X-Forwarded-For": "_hidden"}, PEER, "http"),
    ("127.0.0.1", PEER, {"Forwarded": "for=203.0.113.7;proto=http, for=127.0.0.1;proto=https"},
     ("203.0.113.7", 0), "http"),
    # a Unix-socket peer has no address: trusted only with 'unix:'
    ("unix:", None, {"X-Forwarded-For": "203.0.113.7"}, ("203.0.113.7", 0), "http"),
    ("127.0.0.1", None, {"X-Forwarded-For": "203.0.113.7"}, None, "http"),
    # an IPv4-mapped IPv6 peer matches its IPv4 entry; junk schemes are ignored
    ("127.0.0.1", ("::ffff:127.0.0.1", 1), {"X-Forwarded-Proto": "gopher"}, ("::ffff:127.0.0.1", 1), "http"),
])
def test_resolution(allow, peer, headers, client, scheme):
    assert resolve(allow, peer, headers) == (client, scheme)


@pytest.mark.parametrize("headers", [
    {"Forwarded": 'for="[2001:db8::17]:4711";proto=https', "X-Forwarded-For": "1.1.1.1"},
    {"Forwarded": "for=10.0.0.7;proto=https", "X-Forwarded-Proto": "https"},
    {"Forwarded": "for=1.2.3.4", "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},
])
def test_both_kinds_from_a_trusted_proxy_are_refused(headers):
    """A proxy writes one kind and passes the client's other through: which is which cannot be told.
    Trusting either lets the client name its address; trusting neither lets it pass for the proxy."""
    with pytest.raises(ProtocolError) as refused:
        resolve("127.0.0.1", PEER, headers)
    assert refused.value.status == 400 and "drop the one it does not write" in refused.value.reason
    assert resolve("10.0.0.1", PEER, headers) == (PEER, "http")  # from an untrusted peer: ignored, as ever


def test_parsers():
    assert split_node("[::1]:80") == ("::1", 80)
    assert split_node("::1") == ("::1", 0)
    assert split_node("1.2.3.4:8080") == ("1.2.3.4", 8080)
    assert parse_forwarded('for="a,b";by=x, For=y') == [{"for": "a,b", "by": "x"}, {"for": "y"}]


def test_bad_allow_list_is_rejected():
    with pytest.raises(ValueError, match="not an IP address"):
        aioserve.Config.from_settings(proxy_headers=True, forwarded_allow_ips="127.0.0.1,example.com")


@pytest.mark.parametrize("settings,client,scheme", [
    ({"proxy_headers": True}, "203.0.113.7", "https"),  # default allow list: 127.0.0.1
    ({"proxy_headers": True, "forwarded_allow_ips": "10.0.0.1"}, "127.0.0.1", "http"),
    ({"proxy_headers": True, "forwarded_allow_ips": "*"}, "203.0.113.7", "https"),
    ({}, "127.0.0.1", "http"),  # off by default: the headers are not even looked at
])
async def test_served_requests(settings, client, scheme):
    from tests.support.apps import ops_app as app

    server = await aioserve.serve(app, port=0, **settings)
    try:
        async with httpx2.AsyncClient() as http:
            resp = await http.get(f"{server.url}/whoami",
                                  headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
        assert resp.json()["client"][0] == client and resp.json()["scheme"] == scheme
    finally:
        await server.shutdown(timeout=5)


def test_cli_flags():
    with ServerProcess("tests.support.apps:ops_app", "--port", "0", "--proxy-headers",
                       "--forwarded-allow-ips", "10.0.0.0/8,127.0.0.1") as server:
        server.wait_listening()
        got = http_get_json(server.host, server.port, "/whoami", {"X-Forwarded-For": "203.0.113.7, 10.0.0.2"})
        assert got["client"] == ["203.0.113.7", 0]
        server.wait_for(r'203\.0\.113\.7:0 - "GET /whoami HTTP/1\.1" 200')  # the access log shows the real client


def test_cli_bad_allow_list_is_one_line():
    with ServerProcess("tests.support.apps:ops_app", "--proxy-headers", "--forwarded-allow-ips", "nope") as server:
        assert server.wait_exit() != 0
        server.wait_for("<EOF>")
        assert len(server.lines) == 2 and server.lines[0].startswith("aioserve: error: --forwarded-allow-ips")


async def test_both_kinds_through_a_served_request_get_a_clear_400():
    from tests.support import raw_connection
    from tests.support.apps import ops_app as app

    server = await aioserve.serve(app, port=0, proxy_headers=True)
    try:
        async with raw_connection(server.port) as conn:
            response = await conn.request("GET", "/whoami", headers={"X-Forwarded-For": "203.0.113.9",
                                                                     "Forwarded": "for=1.2.3.4"})
            assert response.status == 400 and b"drop the one it does not write" in response.body
            assert await conn.is_closed_by_peer()
    finally:
        await server.shutdown(timeout=5)


def test_a_remembered_chain_reads_as_a_fresh_one():
    """A proxy sends the same chains again and again, so each is read once and remembered: one
    ProxyHeaders serving many requests must give each exactly what a fresh one gives, whatever came
    before it (chains differing only in the scheme, in order, or in kind; a trusted and an untrusted peer)."""
    chains = [
        {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
        {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "http"},
        {"X-Forwarded-For": "203.0.113.7"},
        {"X-Forwarded-For": "6.6.6.6, 203.0.113.7, 10.1.2.3"},
        {"X-Forwarded-For": "203.0.113.7, 6.6.6.6"},
        {"Forwarded": "for=203.0.113.7"},
        {"Forwarded": "for=203.0.113.7;proto=https"},
        {"Forwarded": 'for="[2001:db8::17]:4711";proto=https, for=10.9.9.9'},
        {"X-Forwarded-Proto": "https"},
        {"X-Forwarded-For": "unknown"},
    ]
    allow = "127.0.0.1, 10.0.0.0/8"
    shared = ProxyHeaders(allow)
    for rounds in range(3):
        for peer in (PEER, ("10.2.3.4", 1), ("192.0.2.1", 2)):  # two trusted, one not
            for headers in chains:
                req = make_request(peer, headers)
                shared.apply(req)
                assert (req.client, req.scheme) == resolve(allow, peer, headers), (rounds, peer, headers)
    assert resolve(allow, ("192.0.2.1", 2), chains[0]) == (("192.0.2.1", 2), "http")  # untrusted: ignored


def test_remembered_chains_are_bounded_and_long_ones_still_read():
    """Distinct chains (each new client behind the proxy brings one) never grow memory past the bound,
    and a chain too long to remember is read in full every time."""
    proxy = ProxyHeaders("127.0.0.1, 10.0.0.0/8")
    for i in range(10_000):
        req = make_request(PEER, {"X-Forwarded-For": f"198.51.{i // 256}.{i % 256}"})
        proxy.apply(req)
        assert req.client == (f"198.51.{i // 256}.{i % 256}", 0)
    assert len(proxy._chains) <= 4096
    hops = ", ".join(["203.0.113.7"] + [f"10.0.{i}.1" for i in range(60)])  # over 256 bytes: not remembered
    for _ in range(2):
        req = make_request(PEER, {"X-Forwarded-For": hops, "X-Forwarded-Proto": "https"})
        proxy.apply(req)
        assert (req.client, req.scheme) == (("203.0.113.7", 0), "https")
    assert all(len(key[1] or b"") <= 256 for key in proxy._chains)
