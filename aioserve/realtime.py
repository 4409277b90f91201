"""Real time as one optional observer of the connection: budgets, shedding and metrics.

One ``Realtime`` per server (``ServerState.observer``), created only when the app uses a feature: a
deadline, ``limit_in_flight``, adaptive shedding, metrics or ``Server-Timing``. Without one the
connection pays a single ``is None`` test per hook. It implements ``shared.Observer``; the connection
calls it at five places (``connection.py``) and it answers through the connection's public surface:

    admit          a head is parsed and routed: shed (answered, no task made) or count + arm the budget
    before_start   a handler's task starts: out of budget already? then answer and skip the handler
    started        its handler starts (admission control only): queueing delay measured
    finished       answered or dropped: in flight -1, latency recorded by route and status class
    timing         the Server-Timing line

Only admission control (a budget, a limit, adaptive shedding) changes how handlers are scheduled
(``schedules``); metrics and Server-Timing only watch. Deadlines are in ``deadlines.py``, shedding in
``shedding.py``, numbers in ``metrics.py``.

Admission control (``admission.py``) is on for every route with a deadline unless
``App(admission=False)``: a request is shed (reason ``admission`` or ``share``) when it cannot finish
within its budget. ``limit_in_flight`` stays a hard cap, checked first (reason ``limit``). Its clock
is ``perf_counter()`` (``Exchange.started`` is the head's stamp), not the loop's: uvloop's moves in
whole milliseconds, as long as the service times it must tell apart.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from time import perf_counter
from typing import Any

from .admission import Admission
from .app import App
from .config import Config
from .deadlines import Deadlines
from .exchange import Exchange
from .looplag import LoopLagMonitor
from .metrics import UNMATCHED, Metrics, SnapshotDir, merge, render
from .router import UNSET
from .shared import Responder, ServerState, WebSocketStats
from .shedding import SHED_BODY, AdaptiveLimit, shed_head

SNAPSHOT_EVERY = 1.0  # seconds between snapshot files (multi-worker metrics)


class Realtime:
    __slots__ = (
        "state", "loop", "app", "in_flight", "limit", "adaptive", "metrics", "deadlines", "server_timing",
        "schedules", "lag", "snapdir", "_shed_head", "_ticks", "admission", "tracks_starts",
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
        if self.metrics is not None:
            state.websockets = WebSocketStats()  # wsconn.py counts into it; nothing is counted otherwise
        header = app.deadline_header.encode("latin-1") if app.deadline_header else None
        self.deadlines = Deadlines(header, app.retry_after, self.metrics)
        self.server_timing = app.server_timing
        self._shed_head = shed_head(app.retry_after)
        self._ticks = 0
        sharing = Counter(route.pattern for route in app.routes)
        for route in app.routes:
            route.budget = app.deadline if route.deadline is UNSET else route.deadline
            # GET and POST on one path are different work: their service-time estimates must not mix.
            route.estimate_key = route.pattern if sharing[route.pattern] == 1 else \
                f"{'|'.join(route.methods)} {route.pattern}"
        self.schedules = (limit is not None or self.adaptive is not None
                          or any(route.budget is not None for route in app.routes))
        budgeted = any(route.budget is not None for route in app.routes)
        self.admission = Admission(self._polls_before_ready(self.loop)) if app.admission and budgeted else None
        self.tracks_starts = self.admission is not None
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
        if self.metrics is not None:
            self.app.metrics_renderer = self.render
        if self.lag is not None:
            self.lag.start()

    def stop(self) -> None:
        if self.app.metrics_renderer == self.render:
            self.app.metrics_renderer = None
        if self.lag is not None:
            self.lag.stop()
        if self.snapdir is not None:
            self.snapdir.write(self.snapshot())

    # -- the Observer hooks ------------------------------------------------------------------------------
    def admit(self, conn: Responder, ex: Exchange) -> bool:
        """The head is parsed and routed. Returns False when the request was answered (shed)."""
        route = ex.request.route
        if route is None:  # 404/405: cheap, answered by the app, not load
            return True
        if self.in_flight >= self.limit and route.shed:
            if self.metrics is not None:
                self.metrics.counters["requests_shed"] += 1
            self._shed(conn, ex)
            return False
        budget = route.budget
        if budget is not None:
            budget = self.deadlines.budget(ex, budget)
            admission = self.admission
            if admission is not None and route.shed and not admission.admit(route.estimate_key, budget, ex.started):
                self._shed(conn, ex)  # counted by the controller, by reason
                return False
        self.in_flight += 1
        ex.accounted = 1
        adaptive = self.adaptive
        if adaptive is not None and self.in_flight > adaptive.peak:
            adaptive.peak = self.in_flight
        if budget is not None:
            self.deadlines.arm(conn, ex, budget)
        return True

    def before_start(self, conn: Responder, ex: Exchange) -> bool:
        return self.deadlines.before_start(conn, ex)

    def started(self, ex: Exchange) -> None:
        """A handler starts (admission control on): how long its request waited since its head."""
        route = ex.request.route
        if route is None or ex.accounted != 1:  # 404/405, or answered/dropped before it ran
            return
        now = ex.began = perf_counter()
        self.admission.started(route.estimate_key, now - ex.started, now)  # type: ignore[union-attr]

    def finished(self, ex: Exchange, status: int) -> None:
        """The answer is ready (or the request is dropped): no longer in flight."""
        accounted = ex.accounted
        if accounted == 2:
            return
        if accounted == 1:
            self.in_flight -= 1
        ex.accounted = 2
        ex.disarm()
        if not ex.started:
            return  # an exchange made up to carry a parse error: nothing to time
        now = perf_counter()
        seconds = now - ex.started
        if accounted == 1 and self.admission is not None:
            self._admission_done(ex, status, now)
        metrics = self.metrics
        deadline = ex.deadline
        if deadline is not None and not ex.expired and metrics is not None and self.loop.time() > deadline:
            metrics.counters["deadline_late"] += 1
        route = ex.request.route
        if metrics is not None:
            label = ex.request.metrics_label or (route.pattern if route is not None else UNMATCHED)
            metrics.route(label).record(status, seconds)
        if self.adaptive is not None and route is not None and route.budget is not None and status < 500:
            self.adaptive.record(route.estimate_key, route.budget, seconds)

    def _admission_done(self, ex: Exchange, status: int, now: float) -> None:
        """Tell the controller how an admitted request ended: its service time when its handler gave
        the answer; abandoned when it never started, was cancelled, lost its client, or streamed (a
        stream's end says nothing of how long its handler held the loop)."""
        route = ex.request.route
        if route is None:
            return
        admission: Admission = self.admission  # type: ignore[assignment]
        began = ex.began
        if began:
            if ex.status or ex.expired or status == 499:
                admission.abandoned(route.estimate_key, now, started=True)
            else:
                admission.finished(route.estimate_key, now - began, now)
        elif route.budget is not None and route.shed:  # it was admitted, and is still counted as waiting
            admission.abandoned(route.estimate_key, now, started=False)

    @staticmethod
    def _polls_before_ready(loop: Any) -> bool:
        """How the loop orders its sockets and its ready handlers, for admission's unseen wait:
        asyncio's own loops (``BaseEventLoop._run_once``) poll the selector, run the ready handlers,
        then read what the poll found; libuv's (uvloop, winloop) poll and read at once, after the
        handlers. A loop not known to be libuv's is taken to be the former (the safer estimate)."""
        return not type(loop).__module__.startswith(("uvloop", "winloop"))

    def timing(self, ex: Exchange) -> bytes:
        if not ex.started:
            return b""
        return b"Server-Timing: app;dur=%.3f\r\n" % ((perf_counter() - ex.started) * 1000.0)

    def _shed(self, conn: Responder, ex: Exchange) -> None:
        # Keep the connection when the body (if any) will come anyway; close when the client waits
        # for 100 Continue, which it will not get.
        conn.answer_head(ex, self._shed_head, SHED_BODY, 503, ex.expect_continue)

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
        admission = self.admission.metrics() if self.admission is not None else None
        return metrics.snapshot(self.in_flight, len(self.state.connections), admission, self.state.websockets)

    def render(self) -> str:
        own = self.snapshot()
        merged = self.snapdir.merged(own) if self.snapdir is not None else merge([own])
        return render(merged)
