"""Every benchmarked server: how to launch it, on which fixed port, and what it needs installed.

All servers run one worker, no access log, bound to 127.0.0.1, keep-alive timeout raised to 120 s
where the server has such a setting (so the idle-connection benchmark measures memory, not timeouts).
Two more run only when named (``--servers``): aioserve and uvicorn with their access log on, as each
ships by default (of these servers only those two log every request unless told otherwise).
The harness prefixes each command with ``taskset -c <server cpu>`` and runs it from the repo root.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from dataclasses import dataclass, field
from typing import Callable

HOST = "127.0.0.1"
KEEPALIVE = 120
PY = sys.executable


@dataclass(frozen=True)
class ServerSpec:
    name: str
    port: int
    description: str
    argv: Callable[[int], list[str]]
    requires: tuple[str, ...] = ()  # importable top-level modules
    executables: tuple[str, ...] = ()  # console scripts needed on PATH
    reference: bool = False  # the server every ratio is computed against
    in_all: bool = True  # part of ``--servers all``; False: run only when named
    notes: str = ""
    extra_env: dict = field(default_factory=dict)

    def missing(self) -> list[str]:
        """What is not installed (empty when the server can run)."""
        out = [m for m in self.requires if importlib.util.find_spec(m) is None]
        out += [e for e in self.executables if shutil.which(e) is None and _bin(e) is None]
        return out


def _bin(name: str) -> str | None:
    """A console script installed next to this interpreter, even if that dir is not on PATH."""
    import os

    cand = os.path.join(os.path.dirname(PY), name)
    return cand if os.path.exists(cand) else None


def _exe(name: str) -> str:
    return _bin(name) or shutil.which(name) or name


def _aioserve(loop: str, access_log: bool = False) -> Callable[[int], list[str]]:
    return lambda port: [
        PY, "-m", "aioserve", "benchmarks.servers.aioserve_app:app",
        "--host", HOST, "--port", str(port), "--loop", loop,
        "--access-log" if access_log else "--no-access-log", "--timeout-keep-alive", str(KEEPALIVE),
    ]


def _uvicorn(access_log: bool = False) -> Callable[[int], list[str]]:
    return lambda port: [
        PY, "-m", "uvicorn", "benchmarks.servers.starlette_app:app", "--host", HOST, "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--timeout-keep-alive", str(KEEPALIVE), "--lifespan", "off",
        *(("--access-log", "--log-level", "info") if access_log else ("--no-access-log", "--log-level", "warning")),
    ]


SERVERS: list[ServerSpec] = [
    ServerSpec(
        "aioserve-uvloop", 18001, "aioserve, --loop uvloop", _aioserve("uvloop"),
        requires=("aioserve", "uvloop"), reference=True,
    ),
    ServerSpec(
        "aioserve-asyncio", 18002, "aioserve, --loop asyncio", _aioserve("asyncio"),
        requires=("aioserve",),
    ),
    ServerSpec(
        "bare", 18003, "bare httptools+uvloop protocol (the ceiling)",
        lambda port: [PY, "-m", "benchmarks.servers.bare", "--host", HOST, "--port", str(port)],
        requires=("httptools", "uvloop"),
        notes="no framework: precomputed responses, hand dispatch, no Date header",
    ),
    ServerSpec(
        "uvicorn-starlette", 18004, "uvicorn (httptools, uvloop) + Starlette",
        _uvicorn(),
        requires=("uvicorn", "starlette", "uvloop", "httptools"),
    ),
    ServerSpec(
        "sanic", 18005, "Sanic, single_process=True",
        lambda port: [PY, "-m", "benchmarks.servers.sanic_app", "--host", HOST, "--port", str(port)],
        requires=("sanic",),
    ),
    ServerSpec(
        "aiohttp", 18006, "aiohttp web.run_app on uvloop",
        lambda port: [PY, "-m", "benchmarks.servers.aiohttp_app", "--host", HOST, "--port", str(port)],
        requires=("aiohttp", "uvloop"),
    ),
    ServerSpec(
        "granian", 18007, "Granian RSGI, 1 worker, 1 runtime thread, hand-dispatched app",
        lambda port: [
            _exe("granian"), "--interface", "rsgi", "--host", HOST, "--port", str(port),
            "--workers", "1", "--runtime-threads", "1", "--loop", "uvloop", "--no-ws",
            "--log-level", "warning", "--no-access-log",
            # backpressure defaults to backlog (1024): past it, new connections wait unserved, which
            # breaks the 5,000-idle-connection benchmark; 60 s is the largest header-read timeout
            "--backlog", "8192", "--backpressure", "8192", "--http1-header-read-timeout", "60000",
            "benchmarks.servers.granian_app:app",
        ],
        requires=("granian", "orjson"), executables=("granian",),
        notes="Granian has no router: its app dispatches by hand (closer to the ceiling than a framework); "
              "backpressure raised to 8192 concurrent requests",
    ),
    ServerSpec(
        "socketify", 18008, "socketify.py (uWebSockets, C++) native App",
        lambda port: [PY, "-m", "benchmarks.servers.socketify_app", "--host", HOST, "--port", str(port)],
        requires=("socketify",),
        notes="HTTP parsing, routing and writes in C++; only the handler body is Python",
    ),
    ServerSpec(
        "aioserve-logged", 18009, "aioserve, --loop uvloop, access log on (its default)",
        _aioserve("uvloop", access_log=True), requires=("aioserve", "uvloop"), in_all=False,
        notes="one access line per request to the server's log file, as shipped",
    ),
    ServerSpec(
        "uvicorn-logged", 18010, "uvicorn + Starlette, access log on (its default)", _uvicorn(access_log=True),
        requires=("uvicorn", "starlette", "uvloop", "httptools"), in_all=False,
        notes="one access line per request to the server's log file, as shipped",
    ),
]

BY_NAME = {s.name: s for s in SERVERS}
REFERENCE = next(s.name for s in SERVERS if s.reference)


def select(names: str | None) -> list[ServerSpec]:
    """``names`` is a comma-separated list (or None/'all'); unknown names raise ValueError."""
    if not names or names == "all":
        return [s for s in SERVERS if s.in_all]
    out = []
    for n in (x.strip() for x in names.split(",") if x.strip()):
        if n not in BY_NAME:
            raise ValueError(f"unknown server {n!r}; known: {', '.join(BY_NAME)}")
        out.append(BY_NAME[n])
    return out
