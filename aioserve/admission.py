"""Admission control that needs no tuning: admit a request only if it can still finish within its budget.

Pure and deterministic: no asyncio, no I/O, no clock of its own. Every call takes ``now`` (loop time,
seconds), so the same sequence of calls always gives the same answers and tests drive it with a fake
clock. One ``Admission`` per server (one event loop); per-route state keyed by any hashable (the route
pattern). The observer in the connection calls, for every routed request:

    admit(key, budget, now)          head parsed and routed; False = shed (503 + Retry-After)
    started(key, queued, now)        the handler starts; queued = head parsed -> handler start
    finished(key, service, now)      the answer is ready; service = handler start -> answer
    abandoned(key, now, started=..)  dropped without an answer (client gone, deadline ran out first)

``admit`` only for requests that may be shed (a budget, ``shed`` true); ``started`` and ``finished``
for every routed request counted in flight, admitted or not: their handlers hold the same loop.

Designs studied, and what was taken:

* **Netflix concurrency-limits (Vegas, Gradient2)** and **Envoy's adaptive concurrency** find a
  concurrency limit from latency *gradients*: the ratio of a no-load latency (minRTT, which Envoy
  re-measures by throttling traffic to a trickle) to the latest one. They aim at "no queue", know
  nothing of a deadline, need smoothing/probing parameters, and converge over seconds. A server that
  is told each request's budget can do better than infer a target.
* **CoDel** controls *sojourn time* against a fixed target and interval: the right signal (time in
  queue, not queue length), but drops from the head of a queue it owns; here the queue is the event
  loop's ready list and the socket buffers, which we cannot reorder, and a request must be refused
  before its body is read.
* **Breakwater** (OSDI 2020) admits with credits driven by measured queueing delay against a target,
  plus a delay-based drop for what slipped through. Closest in spirit: admission at the door,
  queueing delay as the congestion signal.

What this module does: a direct *prediction* of each request's completion, checked against its own
budget, with every term measured, none configured:

    unseen + ahead + own  <=  budget

* ``own``: the route's service time (EWMA of ``finished`` service times).
* ``ahead``: admitted requests not yet started, each weighted by its route's *occupancy*: how long one
  of its handlers holds the loop before the next ready handler can start (measured as the gap between
  consecutive ``started`` calls when the second was already waiting). For a CPU-bound handler that is
  its service time; for a handler that awaits a database it is the few microseconds before its first
  await. This is what makes the same rule right for both, where "service time x queue length" would
  shed an I/O-bound route at the first burst. The handlers start in arrival order (the connection's
  FIFO), so the work ahead is exactly this sum.
* ``unseen``: time the request already spent in the socket buffer before its head was parsed. The
  server cannot see arrivals, but it knows when the loop polled its sockets: a head parsed now was
  not found by the poll before the one that found it, so it may have arrived just after that earlier
  poll, and the time since is charged to it (worst case). Where that poll was depends on the loop:
  libuv (uvloop) polls and reads at once, after running the ready handlers, so the earlier poll was
  when the previous batch of heads was read; asyncio's ``_run_once`` polls *before* running the
  ready handlers and reads what it found *after* them, so the earlier poll came before the handler
  stretch that preceded the previous batch, and a head can wait two busy stretches
  (``poll_before_ready``). But a loop that had nothing to do was waiting in its poll, and a head
  that arrived then was read at once: after a gap with no sign of work (``IDLE_GAP``), the charge
  restarts from the end of the gap, so idle time is never taken for queueing. This is the term that
  makes a hand tuned limit need "deadline / service / 2": about half of a request's wait under
  overload happens before the server can see it.

So the admitted queue in each loop batch adapts by itself to service time, load and budget. Measured
queueing delay (the CoDel/Breakwater signal) feeds the prediction through the occupancy estimate and
is exported as a histogram.

**Fairness.** Each route is judged against its own budget, so a slow route with a long budget would
fill the loop and starve a fast one whose requests then never fit. Max-min fairness on loop time:
when a route is refused for its budget while another route uses more of the loop (decayed usage over
``FAIR_WINDOW``), the refused route is owed that work, and the heavier route's next requests are shed
(reason ``share``) until the debt is paid. A route that uses little (health checks) is thereby never
starved, and a heavy route yields only as much as the lighter one was refused.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from typing import Any, Hashable

from .metrics import BOUNDS, NBUCKETS

#: Weight of a new sample in the service-time and occupancy averages (EWMA; 1/8 follows TCP's SRTT).
GAIN = 0.125
DEV_GAIN = 0.25  # ... and in their mean deviation (RFC 6298)
#: Time constant (seconds) of the per-route loop-usage rates compared for fairness.
FAIR_WINDOW = 1.0
REASONS = ("admission", "share")
#: Seconds past its budget after which a request still counted as waiting is forgotten.
PRUNE_AFTER = 1.0
#: Seconds with no sign of work after which the loop is taken to have waited in its poll (idle). Between
#: two steps of back-to-back work, what the controller is not told of (a write, the poll, a task switch)
#: takes tens of microseconds (measured at twice capacity on both loops: 99% of the gaps between one
#: handler's answer and the next one's start under 0.12 ms). A longer gap (a collection, the process
#: descheduled) also counts as idle: heads read after it are charged less than they may have waited,
#: the price of never refusing a request for idle time.
IDLE_GAP = 1e-3


class RouteState:
    """What the controller knows about one route."""

    __slots__ = (
        "service", "deviation", "occupancy", "budget", "waiting", "in_flight", "admitted", "shed", "finished",
        "abandoned", "queued_hist", "queued_sum", "usage", "usage_at", "debt",
        "last_done",
    )

    def __init__(self) -> None:
        self.service: float | None = None  # EWMA of start -> answer
        self.deviation = 0.0  # EWMA of |sample - service| (RFC 6298's RTTVAR)
        self.occupancy: float | None = None  # EWMA of how long a handler holds the loop
        self.budget = math.inf  # last budget asked for (for the snapshot)
        self.waiting: deque[float] = deque()  # expiry times of admitted, not started requests
        self.in_flight = 0  # started, not finished
        self.admitted = 0
        self.shed = dict.fromkeys(REASONS, 0)
        self.finished = 0
        self.abandoned = 0
        self.queued_hist = [0] * NBUCKETS
        self.queued_sum = 0.0  # seconds, for the Prometheus histogram's _sum
        self.usage = 0.0  # decayed sum of loop-seconds admitted (rate = usage / FAIR_WINDOW)
        self.usage_at = 0.0
        self.debt = 0.0  # loop-seconds this route was refused while a heavier route was admitted
        self.last_done = -math.inf  # when one of its requests last finished or was abandoned

    def cost(self) -> float:
        """Loop time one waiting request of this route will take before the next can start."""
        if self.occupancy is not None:
            return self.occupancy
        return self.service if self.service is not None else 0.0

    def limits(self) -> tuple[float | None, int | None]:
        """The queueing delay this route can accept (its budget less its service time), and the
        in-flight limit that amounts to; None when not known yet (no budget, or no sample)."""
        if self.budget == math.inf:
            return None, None
        target = max(0.0, self.budget - (self.service or 0.0))
        cost = self.cost()
        # Under sustained overload half of the target is spent before the head is seen (see
        # ``unseen``), so the loop holds about target / 2 of admitted work: the limit a user
        # would otherwise have had to tune by hand.
        return target, (math.floor(target / 2 / cost) + 1 if cost > 0 else None)

    def rate(self, now: float) -> float:
        """Loop-seconds per second this route was admitted, recently."""
        if now > self.usage_at:
            self.usage *= math.exp((self.usage_at - now) / FAIR_WINDOW)
            self.usage_at = now
        return self.usage / FAIR_WINDOW


class Admission:
    """One server's admission controller. No parameters to tune; see the module docstring."""

    __slots__ = (
        "routes", "ahead", "n_waiting", "poll_before_ready", "_last_admit", "_first", "_first_unseen",
        "_poll", "_prev_poll", "_busy_from", "_busy_from_before", "_busy_to", "_worked", "_work_from",
        "_last_start", "_last_start_route", "_indebted", "_batch_admitted",
    )

    def __init__(self, poll_before_ready: bool = False) -> None:
        self.routes: dict[Hashable, RouteState] = {}
        self.ahead = 0.0  # predicted loop time of every admitted, not started request
        self.n_waiting = 0
        #: The loop polls its sockets before running the ready handlers and reads them after (asyncio's
        #: own loops); False: it polls and reads at once, after the handlers (libuv: uvloop).
        self.poll_before_ready = poll_before_ready
        self._last_admit = -math.inf
        self._first = -math.inf  # first admit of the current batch of heads
        self._first_unseen = 0.0  # ... and the unseen wait charged to it
        self._poll = -math.inf  # when the loop polled for the current batch
        self._prev_poll = -math.inf  # ... for the one before: a head of this batch arrived after it, at worst
        self._busy_from = -math.inf  # start of the loop's current busy stretch (end of its last idle gap)
        self._busy_from_before = -math.inf  # ... and of the one before it
        self._busy_to = -math.inf  # end of the loop's known work
        self._worked = True  # a handler started or ended since the last admit: the next admit opens a batch
        self._work_from = -math.inf  # when the first of those handler steps began
        self._last_start = -math.inf
        self._last_start_route: RouteState | None = None
        self._indebted: dict[Hashable, RouteState] = {}
        self._batch_admitted = 0

    def route(self, key: Hashable) -> RouteState:
        state = self.routes.get(key)
        if state is None:
            state = self.routes[key] = RouteState()
        return state

    # -- the four calls ----------------------------------------------------------------------------
    def admit(self, key: Hashable, budget: float, now: float) -> bool:
        """Head parsed and routed. True: count it as waiting; False: shed it (nothing else to call)."""
        r = self.route(key)
        r.budget = budget
        self._prune(r, now)
        if now > self._busy_to + IDLE_GAP and not self.n_waiting:
            self._idle_until(now)  # the loop was waiting in its poll: this head arrived just now
        if self._worked:
            self._open_batch(now)
        elif not self._batch_admitted and now - self._first > self._first_unseen:
            # Every head since the batch opened was refused, so no handler ran, for longer than the
            # handlers ran before it: reading heads is far cheaper than running them, so this is no
            # longer the same read of the sockets; the loop went back to them after the last refusal.
            self._prev_poll = self._poll = self._first = self._last_admit
            self._first_unseen = 0.0
        self._last_admit = now
        if now > self._busy_to:
            self._busy_to = now
        unseen = now - max(self._prev_poll, self._busy_from)
        own = r.service if r.service is not None else 0.0
        # Service times vary: the sum of the n waiting and this one spreads as sqrt(n + 1); two
        # deviations of margin, as TCP's retransmission timer keeps four above its smoothed RTT.
        spread = 2.0 * r.deviation * math.sqrt(self.n_waiting + 1)
        if unseen + self.ahead + own + spread > budget and not self._probe(r, own, budget, now):
            self._refused(key, r, now)
            return False
        cost = r.cost()
        if self._indebted and self._owes(key, r, now, cost):
            r.shed["share"] += 1
            return False
        r.admitted += 1
        self._batch_admitted += 1
        r.waiting.append(now + budget)
        self.n_waiting += 1
        self.ahead += cost
        r.rate(now)
        r.usage += cost
        return True

    def started(self, key: Hashable, queued: float, now: float) -> None:
        """A handler starts, ``queued`` seconds after its head was parsed (its request admitted, or of a
        route that admission does not judge)."""
        r = self.route(key)
        parsed = now - queued
        if parsed < self._busy_from:
            # Its task was ready to run since its head was read, so the loop was never idle since:
            # a gap taken for idle (a handler of unknown occupancy that did not await) was not.
            self._busy_from = min(self._busy_from_before, parsed)
        elif not self.n_waiting:
            if parsed > self._busy_to + IDLE_GAP:
                # A head the controller was not asked about (no budget, shed=False, the metrics
                # scrape), read after an idle gap: the loop's busy stretch began when it read it.
                self._idle_until(parsed)
            elif now > self._busy_to + IDLE_GAP:
                self._idle_until(now)
        if not self._worked:
            self._worked = True
            self._work_from = now
        prev = self._last_start_route
        if prev is not None and parsed <= self._last_start:
            # This request was waiting when the previous handler started: the gap is how long the
            # previous handler held the loop (plus any heads read in between: they delay it too).
            # Any route's, admitted or not: a handler without a budget holds the loop all the same.
            self._set_occupancy(prev, now - self._last_start)
        if r.waiting:
            r.waiting.popleft()
            self._unwait(r)
        r.in_flight += 1
        r.queued_hist[bisect_left(BOUNDS, queued)] += 1
        r.queued_sum += queued
        self._last_start = now
        self._last_start_route = r
        until = now + (r.occupancy if r.occupancy is not None else 0.0)  # holds the loop that long
        if until > self._busy_to:
            self._busy_to = until

    def finished(self, key: Hashable, service: float, now: float) -> None:
        """The answer of a started request is ready, ``service`` seconds after its handler started."""
        r = self.route(key)
        # Its last step held the loop until now; how long is known only for a route whose handlers
        # were seen holding the loop (occupancy): a handler that awaited left the loop idle meanwhile.
        self._work(now - (min(service, r.occupancy) if r.occupancy is not None else 0.0), now)
        old = r.cost()
        if r.service is None:
            r.service = service
            r.deviation = service / 2
        else:
            r.deviation += DEV_GAIN * (abs(service - r.service) - r.deviation)
            r.service += GAIN * (service - r.service)
        self._recost(r, old)
        if r.in_flight:
            r.in_flight -= 1
        r.finished += 1
        r.last_done = now

    def abandoned(self, key: Hashable, now: float, started: bool = True) -> None:
        """An admitted request ends without an answer: ``started=False`` if its handler never ran
        (client gone or budget spent while it waited), True if it was cancelled while running."""
        r = self.route(key)
        if not started:  # no longer waiting, first: the loop may have been idle all the while (_work)
            if r.waiting:
                r.waiting.popleft()
                self._unwait(r)
        elif r.in_flight:
            r.in_flight -= 1
        self._work(now, now)
        r.abandoned += 1
        r.last_done = now

    # -- internals -----------------------------------------------------------------------------------
    def _open_batch(self, now: float) -> None:
        """First head parsed since handlers ran: the loop polled its sockets for it just now (libuv), or
        just before the handler steps that ran since the previous batch (asyncio), unless it was idle
        since. A head of this batch arrived after the poll for the previous batch, at worst."""
        self._prev_poll = self._poll
        work_from = self._work_from
        self._poll = work_from if self.poll_before_ready and work_from >= self._busy_from else now
        self._first = now
        self._first_unseen = now - max(self._prev_poll, self._busy_from)
        self._worked = False
        self._batch_admitted = 0

    def _work(self, began: float, now: float) -> None:
        """A handler step ran from ``began`` to ``now``: no gap means the loop stayed busy, and so does
        a gap while admitted handlers were waiting to start (their tasks were ready to run)."""
        if began > self._busy_to + IDLE_GAP and not self.n_waiting:
            self._idle_until(began)
        if now > self._busy_to:
            self._busy_to = now
        if not self._worked:
            self._worked = True
            self._work_from = max(began, self._last_admit)

    def _idle_until(self, t: float) -> None:
        """No sign of work for longer than ``IDLE_GAP`` before ``t``: the loop was waiting in its poll,
        so whatever it reads from now on arrived after that."""
        self._busy_from_before = self._busy_from
        self._busy_from = t

    @staticmethod
    def _probe(r: RouteState, own: float, budget: float, now: float) -> bool:
        """A route whose estimate alone no longer fits its budget (one slow answer: a cold cache, a
        first import) would be refused for ever, since only answers correct the estimate. So it is
        let through one request at a time, at most once per budget, as Envoy re-measures its minRTT:
        when none of it waits or runs and none ended within the last budget."""
        return (own + 2.0 * r.deviation > budget and not r.waiting and not r.in_flight
                and now - r.last_done >= budget)

    def _prune(self, r: RouteState, now: float) -> None:
        """Forget waiting requests a second past their budget: the deadline answers them within a loop
        iteration, so the observer missed an ``abandoned``; without this the queue would never drain."""
        waiting = r.waiting
        while waiting and waiting[0] < now - PRUNE_AFTER:
            waiting.popleft()
            self._unwait(r)

    def _unwait(self, r: RouteState) -> None:
        self.n_waiting -= 1
        if self.n_waiting <= 0:
            self.n_waiting = 0
            self.ahead = 0.0  # exact again: no float drift survives an empty queue
        else:
            self.ahead = max(0.0, self.ahead - r.cost())

    def _set_occupancy(self, r: RouteState, sample: float) -> None:
        old = r.cost()
        r.occupancy = sample if r.occupancy is None else r.occupancy + GAIN * (sample - r.occupancy)
        self._recost(r, old)

    def _recost(self, r: RouteState, old: float) -> None:
        """A route's cost estimate changed: its waiting requests now weigh that much more (or less)."""
        if r.waiting:
            self.ahead = max(0.0, self.ahead + len(r.waiting) * (r.cost() - old))

    def _refused(self, key: Hashable, r: RouteState, now: float) -> None:
        r.shed["admission"] += 1
        mine = r.rate(now)
        cost = r.cost()
        for other_key, other in self.routes.items():
            if other is not r and other.rate(now) > mine:
                # someone heavier is being admitted: this route is owed the loop time it was refused
                r.debt = min(r.debt + cost, r.budget if r.budget < math.inf else cost)
                self._indebted[key] = r
                return

    def _owes(self, key: Hashable, r: RouteState, now: float, cost: float) -> bool:
        """True if ``r`` must yield to a lighter route it has crowded out (max-min fairness)."""
        mine = r.rate(now)
        for other_key, other in list(self._indebted.items()):
            if other is r:
                continue
            if other.debt <= 0.0:
                del self._indebted[other_key]
                continue
            if mine > other.rate(now):
                other.debt -= cost
                if other.debt <= 0.0:
                    other.debt = 0.0
                    del self._indebted[other_key]
                return True
        return False

    # -- numbers ---------------------------------------------------------------------------------------
    def predicted(self, key: Hashable, now: float) -> float:
        """Completion time (seconds from now's head parsed) a request of ``key`` would be promised."""
        r = self.route(key)
        busy_from = now if now > self._busy_to + IDLE_GAP and not self.n_waiting else self._busy_from
        unseen = now - max(self._poll if self._worked else self._prev_poll, busy_from)
        return unseen + self.ahead + (r.service or 0.0)

    def snapshot(self) -> dict[str, Any]:
        """Per route: the budget, the queueing it can accept, the equivalent in-flight limit, the
        estimates, counters and a queueing-delay histogram (``metrics.BOUNDS``); shed counts by reason."""
        routes: dict[str, Any] = {}
        shed = dict.fromkeys(REASONS, 0)
        for key, r in self.routes.items():
            target, limit = r.limits()
            routes[str(key)] = {
                "budget": r.budget if r.budget < math.inf else None,
                "target_delay": target, "limit": limit,
                "service": r.service, "occupancy": r.occupancy,
                "waiting": len(r.waiting), "in_flight": r.in_flight,
                "admitted": r.admitted, "finished": r.finished, "abandoned": r.abandoned,
                "shed": dict(r.shed), "queued": {"bounds": list(BOUNDS), "counts": list(r.queued_hist)},
            }
            for reason, n in r.shed.items():
                shed[reason] += n
        return {"routes": routes, "shed": shed, "waiting": self.n_waiting, "ahead": self.ahead}

    def metrics(self) -> dict[str, Any]:
        """The part of a worker's metrics snapshot (``metrics.py``) that is admission control's: per
        route the target delay, the limit and the queueing-delay histogram; shed counts by reason."""
        routes: dict[str, Any] = {}
        shed = dict.fromkeys(REASONS, 0)
        for key, r in self.routes.items():
            target, limit = r.limits()
            routes[str(key)] = {"target_delay": target, "limit": limit,
                                "queued": list(r.queued_hist), "queued_sum": r.queued_sum}
            for reason, n in r.shed.items():
                shed[reason] += n
        return {"routes": routes, "shed": shed}
