"""Constants every benchmark server and the load generator agree on.

Kept dependency-free so each server app (and the harness) can import it.
"""
from __future__ import annotations

import json

PLAINTEXT = b"Hello, World!"
JSON_OBJ = {"message": "Hello, World!"}
#: Number of extra parameterised routes registered *before* /users/{id:int}
#: (``/r0/{id:int}/x`` ... ``/r99/{id:int}/x``), so routers that scan linearly pay
#: for all of them on every /users lookup.
EXTRA_ROUTES = 100
EXTRA_ROUTE_FMT = "/r{i}/{{id}}/x"  # framework code fills in its own param syntax


def _make_echo_body(size: int = 1024) -> bytes:
    """A deterministic JSON document of exactly ``size`` bytes."""
    base = {"id": 12345, "name": "benchmark", "tags": ["a", "b", "c"], "active": True, "pad": ""}
    raw = json.dumps(base, separators=(",", ":")).encode()
    pad = size - len(raw)
    if pad < 0:
        raise ValueError("size too small")
    base["pad"] = "x" * pad
    out = json.dumps(base, separators=(",", ":")).encode()
    assert len(out) == size, len(out)
    return out


ECHO_BODY = _make_echo_body()


def user_json(uid: int) -> dict:
    return {"id": uid}


def route_json(i: int, uid: int) -> dict:
    return {"route": i, "id": uid}
