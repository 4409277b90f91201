"""Proxy headers: who the client is when a reverse proxy stands in front of the server.

Only when the connection's peer is a trusted proxy (``forwarded_allow_ips``: addresses, networks,
``*``, or ``unix:`` for Unix-socket peers) are ``X-Forwarded-For`` / ``X-Forwarded-Proto`` or
``Forwarded`` (RFC 7239) read; from anyone else they are ignored, because anyone can send them. In a chain of proxies the client is the right-most address that is not a
trusted proxy itself, so a client cannot spoof its address by sending the header first.

A proxy writes one of the two and passes the other through untouched, as the client sent it: nginx
appends to ``X-Forwarded-For`` (``$proxy_add_x_forwarded_for``) and leaves a ``Forwarded`` alone, and a
proxy that writes ``Forwarded`` leaves an ``X-Forwarded-For`` alone. So when both came, which one the
proxy wrote cannot be told: trusting either would let a client name its own address and scheme, and
trusting neither would let it pass for the proxy itself (an internal address past an allowlist). So
such a request is refused with 400, naming the fix: have the proxy drop the one it does not write. A hop is taken
only when it is an IP address: anything else (``unknown``, an obfuscated ``_name``, text meant for the
access log) leaves the peer's address in place.

The connection calls ``apply`` once per request, and only when ``proxy_headers`` is on.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

from .config import parse_trusted
from .errors import ProtocolError
from .request import Request

_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_CHAINS = 4096  # chains remembered (then forgotten all at once): at most 4096 x _CHAIN_BYTES of header text
_CHAIN_BYTES = 256  # longer chains are read every time


class ProxyHeaders:
    """Trust rules, parsed once at start-up; ``apply(request)`` rewrites ``client`` and ``scheme``."""

    __slots__ = ("trust_all", "trust_unix", "hosts", "networks", "_cache", "_chains")

    def __init__(self, allow: str | Iterable[str]) -> None:
        self.trust_all, self.trust_unix, self.hosts, self.networks = parse_trusted(allow)
        self._cache: dict[str, bool] = {}
        self._chains: dict[tuple[bytes | None, bytes | None, bytes | None],
                           tuple[tuple[str, int] | None, str | None]] = {}

    def trusts(self, host: str | None) -> bool:
        """Is ``host`` (a peer or a hop in a forwarded chain) one of our proxies?"""
        if self.trust_all:
            return True
        if host is None:  # a Unix-socket peer has no address
            return self.trust_unix
        known = self._cache.get(host)
        if known is None:
            known = self._check(host)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[host] = known
        return known

    def _check(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        if str(addr) in self.hosts:
            return True
        mapped = getattr(addr, "ipv4_mapped", None)
        if mapped is not None and str(mapped) in self.hosts:
            return True
        return any(addr in net for net in self.networks)

    def apply(self, req: Request) -> None:
        peer = req.client
        if not self.trusts(peer[0] if peer else None):
            return
        forwarded = xff = proto = None
        for name, value in req.raw_headers:
            if name == b"forwarded":
                forwarded = value if forwarded is None else forwarded + b"," + value
            elif name == b"x-forwarded-for":
                xff = value if xff is None else xff + b"," + value
            elif name == b"x-forwarded-proto":
                proto = value if proto is None else proto + b"," + value
        if forwarded is None and xff is None and proto is None:
            return
        if forwarded is not None and (xff is not None or proto is not None):
            raise ProtocolError(400, "Both Forwarded and X-Forwarded-* came through the proxy, so the client "
                                     "cannot be told: the proxy must drop the one it does not write")
        # What a chain means depends only on its text and the trust rules, and a proxy sends the same
        # few chains again and again: each is read once (an address parse per hop costs about as much
        # as the rest of a request), and short ones are remembered, boundedly.
        key = (forwarded, xff, proto)
        found = self._chains.get(key)
        if found is None:
            found = self._resolve(forwarded, xff, proto)
            if len(forwarded or b"") + len(xff or b"") + len(proto or b"") <= _CHAIN_BYTES:
                if len(self._chains) >= _CHAINS:
                    self._chains.clear()
                self._chains[key] = found
        client, scheme = found
        if client is not None:
            req.client = client
        if scheme is not None:
            req.scheme = scheme

    def _resolve(self, forwarded: bytes | None, xff: bytes | None,
                 proto: bytes | None) -> tuple[tuple[str, int] | None, str | None]:
        """The client address and scheme a chain names (None: leave the peer's in place)."""
        client = scheme = None
        if forwarded is not None:
            hops = parse_forwarded(forwarded.decode("latin-1"))
            chosen = self._client_hop([hop.get("for", "") for hop in hops])
            if chosen is not None:
                hop = hops[chosen]
                client = address(hop.get("for", ""))
                scheme = _SCHEMES.get(hop.get("proto", "").lower())
            return client, scheme
        if xff is not None:
            hops = [h.strip() for h in xff.decode("latin-1").split(",")]
            chosen = self._client_hop(hops)
            if chosen is not None:
                client = address(hops[chosen])
        if proto is not None:
            scheme = _SCHEMES.get(proto.decode("latin-1").split(",")[0].strip().lower())
        return client, scheme

    def _client_hop(self, hosts: list[str]) -> int | None:
        """Index of the client in a chain: right-most hop that is not a trusted proxy."""
        if not hosts:
            return None
        if self.trust_all:
            return 0
        for i in range(len(hosts) - 1, -1, -1):
            if not self.trusts(split_node(hosts[i])[0]):
                return i
        return 0  # every hop is one of ours: the first is the client


def split_node(node: str) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``, ``unknown`` -> (host, port); port 0 if absent."""
    node = node.strip().strip('"')
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
    else:
        host, port = node, ""
    return host, int(port) if port.isdigit() else 0


def address(node: str) -> tuple[str, int] | None:
    """``split_node``, when the host is an IP address (the only kind a client address can be); None
    for ``unknown``, an obfuscated identifier or anything else."""
    host, port = split_node(node)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host, port


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """RFC 7239 ``Forwarded``: comma-separated hops of ``key=value`` pairs joined by ``;``."""
    hops: list[dict[str, str]] = []
    for element in _split_outside_quotes(value, ","):
        hop: dict[str, str] = {}
        for pair in _split_outside_quotes(element, ";"):
            key, sep, val = pair.partition("=")
            if sep:
                val = val.strip()
                if len(val) >= 2 and val[0] == val[-1] == '"':
                    val = val[1:-1].replace('\\"', '"')
                hop[key.strip().lower()] = val
        if hop:
            hops.append(hop)
    return hops


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    if '"' not in text:  # the usual case: no quoted string can hide a separator
        return [p for p in (p.strip() for p in text.split(sep)) if p]
    parts, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]
