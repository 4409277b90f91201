"""Accept-Encoding negotiation (RFC 9110 12.5.3), shared by compression and static files.

Both ask one question: of the codings I can produce, which does this client want most? The answer
honours q-values, ``;q=0`` as a refusal, ``*`` for "anything not named", and ``identity`` (which may
itself be refused, in which case a server that cannot encode should answer anyway: refusing to
answer helps nobody, so callers fall back to identity).
"""
from __future__ import annotations

from typing import Iterable

#: Server preference at equal q: brotli compresses text best, zstd is fastest, gzip is universal.
PREFERENCE = ("br", "zstd", "gzip")

_MAX_ITEMS = 32  # a header is bounded by the head size limit; this bounds the work per response too


def parse_accept_encoding(header: str | None) -> dict[str, float]:
    """``"gzip;q=0.5, br"`` -> ``{"gzip": 0.5, "br": 1.0}``. Malformed items are skipped."""
    accepted: dict[str, float] = {}
    if not header:
        return accepted
    for item in header.split(",")[:_MAX_ITEMS]:
        name, _, params = item.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
                if not 0.0 <= q <= 1.0:  # "q=nan", "q=2": not a valid weight, ignore the item
                    q = -1.0
        if q < 0:
            continue
        if name == "x-gzip":  # RFC 9110 8.4.1.3: a synonym
            name = "gzip"
        accepted[name] = max(q, accepted.get(name, q))  # a name given twice: the higher weight
    return accepted


def negotiate(header: str | None, available: Iterable[str]) -> str | None:
    """The coding from ``available`` the client prefers (server order breaks ties), or None for identity.

    No Accept-Encoding at all means the client did not say: identity (RFC 9110 allows any coding, but
    sending one unasked breaks clients in practice).
    """
    if not header:
        return None
    accepted = parse_accept_encoding(header)
    star = accepted.get("*")
    best: str | None = None
    best_q = 0.0
    for coding in available:
        q = accepted.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    if best is None:
        return None
    # identity is always acceptable unless refused; it wins only when the client ranked it, by name,
    # above the best coding (a client that lists codings wants one of them)
    identity_q = accepted.get("identity")
    if identity_q is not None and identity_q > best_q:
        return None
    return best


def vary_with(headers, token: str) -> None:
    """Add ``token`` to a response's ``Vary``, keeping every value of every ``Vary`` line.

    Nothing changes when a line already names it (or ``*``); otherwise the lines become one, their
    values and ``token`` joined (RFC 9110 5.3: repeated lines are one list)."""
    lines = headers.getall("vary")
    if not lines:
        headers.add("Vary", token)
        return
    joined = lines[0] if len(lines) == 1 else ", ".join(lines)
    merged = vary_add(joined, token)
    if merged is not joined:
        headers["Vary"] = merged


def vary_add(existing: str | None, token: str) -> str:
    """A ``Vary`` value with ``token`` added once (case-insensitively); ``*`` already covers all."""
    if not existing:
        return token
    tokens = [t.strip().lower() for t in existing.split(",")]
    if "*" in tokens or token.lower() in tokens:
        return existing
    return f"{existing}, {token}"
