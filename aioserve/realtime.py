"""Real-time budgets: what the connection calls at the few points where a request's time matters.

One ``Realtime`` per server (``ServerState.rt``), created only when the app uses a feature: a
deadline, ``limit_in_flight``, adaptive shedding, metrics or ``Server-Timing``. Without one the
connection pays a single ``is None`` test per hook. The hooks in ``protocol.py``:

    connection_lost        ``on_lost``: its requests stop counting as in flight
    on_headers_complete    ``on_request``: shed (answered, no task made) or count + arm the deadline
    _handle                ``deadlines.cancelled`` for CancelledError; disarm the timer on return
    _emit / _drop          ``on_emit``: in flight -1, record latency by route and status class
    _tail                  ``timing``: the Server-Timing line

Deadlines are in ``deadlines.py``, shedding in ``shedding.py``, numbers in ``metrics.py``.
"""
from __future__ import annotations

import math
import os
from time import perf_counter
from typing import TYPE_CHECKING, Any

from . import deadlines
from .looplag import LoopLagMonitor
from .metrics import UNMATCHED, Metrics, SnapshotDir, merge, render
from .response import Response
from .router import UNSET
from .shedding import SHED_BODY, AdaptiveLimit, shed_head

if TYPE_CHECKING:
    from .app import App
    from .config import Config
    from .protocol import HttpProtocol
    from .request import Request
    from .server import ServerState

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SNAPSHOT_EVERY = 1.0  # seconds between snapshot files (multi-worker metrics)


class Realtime:
    __slots__ = (
        "state", "loop", "app", "in_flight", "limit", "adaptive", "metrics", "header", "server_timing",
        "lag", "snapdir", "_shed_head", "_retry_after", "_ticks",
    )

    def __init__(self, app: App, config: Config, state: ServerState) -> None:
        self.state = state
        self.loop = state.loop
        self.app = app
        self.in_flight = 0
        limit = config.limit_in_flight if config.limit_in_flight is not None else app.limit_in_flight
        self.limit: float = math.inf if limit is None else limit
        self.adaptive = AdaptiveLimit(self.limit) if app.adaptive_shedding else None
        self.metrics = Metrics() if app.metrics_path else None
        self.header = app.deadline_header.encode("latin-1") if app.deadline_header else None
        self.server_timing = app.server_timing
        self._retry_after = app.retry_after
        self._shed_head = shed_head(app.retry_after)
        self._ticks = 0
        for route in app.routes:
            route.budget = app.deadline if route.deadline is UNSET else route.deadline
        self.lag: LoopLagMonitor | None = None
        if self.metrics is not None or self.adaptive is not None:
            self.lag = LoopLagMonitor(self.loop)
            self.lag.hooks.append(self._tick)
        directory = app.metrics_dir or os.environ.get("AIOSERVE_METRICS_DIR")
        self.snapdir = SnapshotDir(directory) if directory and self.metrics is not None else None

    @staticmethod
    def wanted(app: App, config: Config) -> bool:
        return bool(
            app.deadline is not None or app.limit_in_flight is not None or config.limit_in_flight is not None
            or app.adaptive_shedding or app.metrics_path or app.server_timing
            or any(r.deadline is not UNSET and r.deadline is not None for r in app.routes)
        )

    def start(self) -> None:
        self.app.realtime = self
        if self.lag is not None:
            self.lag.start()

    def stop(self) -> None:
        if self.lag is not None:
            self.lag.stop()
        if self.snapdir is not None:
            self.snapdir.write(self.snapshot())

    # -- hooks -------------------------------------------------------------------------------------
    def on_request(self, conn: HttpProtocol, req: Request) -> bool:
        """The head is parsed and routed. Returns True when the request was answered (shed)."""
        req._t0 = perf_counter()
        route = req.route
        if route is None:  # 404/405: cheap, answered by the app, not load
            return False
        if self.in_flight >= self.limit and route.shed:
            self._shed(conn, req)
            return True
        self.in_flight += 1
        req._rt = 1
        adaptive = self.adaptive
        if adaptive is not None and self.in_flight > adaptive.peak:
            adaptive.peak = self.in_flight
        budget = route.budget
        if budget is not None:
            if self.header is not None:
                asked = deadlines.header_budget(req._raw_headers, self.header)
                if asked is not None and asked < budget:
                    budget = asked
            req._deadline = when = self.loop.time() + budget
            req._timer = self.loop.call_at(when, deadlines.expire, conn, req)
        return False

    def on_emit(self, req: Request, status: int) -> None:
        """The response is ready (or the request is dropped): no longer in flight."""
        state = req._rt
        if state == 2:
            return
        if state == 1:
            self.in_flight -= 1
        req._rt = 2
        timer = req._timer
        if timer is not None:
            timer.cancel()
            req._timer = None
        if not req._t0:
            return  # a request made up to carry a parse error: nothing to time
        seconds = perf_counter() - req._t0
        metrics = self.metrics
        deadline = req._deadline
        if deadline is not None and not req._expired and metrics is not None and self.loop.time() > deadline:
            metrics.counters["deadline_late"] += 1
        route = req.route
        if metrics is not None:
            metrics.route(route.pattern if route is not None else UNMATCHED).record(status, seconds)
        if self.adaptive is not None and route is not None and route.budget is not None and status < 500:
            self.adaptive.record(route.pattern, route.budget, seconds)

    def on_lost(self, conn: HttpProtocol) -> None:
        for req in conn.pipeline:
            if req._rt != 2:
                self.on_emit(req, 499)

    def timing(self, req: Request) -> bytes:
        if not self.server_timing or not req._t0:
            return b""
        return b"Server-Timing: app;dur=%.3f\r\n" % ((perf_counter() - req._t0) * 1000.0)

    # -- answers -------------------------------------------------------------------------------------
    def _shed(self, conn: HttpProtocol, req: Request) -> None:
        if self.metrics is not None:
            self.metrics.counters["requests_shed"] += 1
        # Keep the connection when the body (if any) will come anyway; close when the client waits
        # for 100 Continue, which it will not get.
        close = req._expect_continue or not req.keep_alive or conn.draining
        body = b"" if req.method == "HEAD" else SHED_BODY
        data = self._shed_head + conn._tail(req, close) + b"\r\n" + body
        conn._emit(req, data, close, 503, len(body))

    def deadline_response(self) -> Response:
        return Response(b"Deadline exceeded", 503, {"Retry-After": str(self._retry_after)},
                        "text/plain; charset=utf-8")

    # -- periodic --------------------------------------------------------------------------------
    def _tick(self) -> None:
        lag = self.lag
        if self.metrics is not None and lag is not None:
            self.metrics.lag_last = lag.last
            self.metrics.lag_max = lag.max
        self._ticks += 1
        if lag is not None and self._ticks * lag.interval >= SNAPSHOT_EVERY:
            self._ticks = 0
            if self.adaptive is not None:
                self.limit = self.adaptive.update()
            if self.snapdir is not None:
                try:
                    self.snapdir.write(self.snapshot())
                except OSError:
                    pass

    # -- metrics ----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        metrics = self.metrics or Metrics()
        if self.lag is not None:
            metrics.lag_last = self.lag.last
            metrics.lag_max = self.lag.max
        return metrics.snapshot(self.in_flight, len(self.state.connections))

    def render(self) -> str:
        own = self.snapshot()
        merged = self.snapdir.merged(own) if self.snapdir is not None else merge([own])
        return render(merged)


async def metrics_endpoint(request: Request) -> Response:
    conn = request._conn
    rt = conn.state.rt if conn is not None else None
    if rt is None:
        return Response(b"metrics are not running", 503, content_type="text/plain; charset=utf-8")
    return Response(rt.render(), content_type=PROMETHEUS_TYPE)
