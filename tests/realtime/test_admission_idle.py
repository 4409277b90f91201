"""Admission control on a quiet server: time the loop spent idle is never taken for queueing.

Driven by a fake clock, calling the controller exactly as the observer (``realtime.py``) does: ``started``
and ``finished`` for every request counted in flight, ``admit`` only for requests of routes with a budget
that may be shed. A route without a deadline, a ``shed=False`` health check and the ``/metrics`` scrape
all start handlers the controller never admitted.
"""
from __future__ import annotations

import pytest

from aioserve.admission import Admission

BUDGET = 0.050
SERVICE = 0.001


def serve(ctl: Admission, key: str, now: float, service: float = SERVICE, *, admit: bool = True,
          budget: float = BUDGET) -> float:
    """One request of ``key`` on an idle loop, head parsed at ``now``: admitted (if the route is
    subject to admission), started at once, answered ``service`` later. Returns when it finished."""
    if admit:
        assert ctl.admit(key, budget, now)
    ctl.started(key, 20e-6, now + 20e-6)
    ctl.finished(key, service, now + 20e-6 + service)
    return now + 20e-6 + service


@pytest.mark.parametrize("gap", [0.1, 2.0, 15.0])
@pytest.mark.parametrize("spacing", [0.06, 0.1, 0.2])
def test_a_request_that_skips_admission_does_not_lock_a_quiet_route_out(gap, spacing):
    """/score, then after ``gap`` one request the controller never admitted (a ``/metrics`` scrape,
    a ``deadline=None`` route, a ``shed=False`` health check), then /score every ``spacing``: the
    server is idle throughout, so every /score fits its budget."""
    ctl = Admission()
    serve(ctl, "/score", 0.0)
    serve(ctl, "/metrics", gap, admit=False)
    now = gap
    refused = []
    for i in range(30):
        now += spacing
        if not ctl.admit("/score", BUDGET, now):
            refused.append(i)
            continue
        ctl.started("/score", 20e-6, now + 20e-6)
        ctl.finished("/score", SERVICE, now + 20e-6 + SERVICE)
    assert refused == []
    assert ctl.snapshot()["shed"] == {"admission": 0, "share": 0}


@pytest.mark.parametrize("spacing", [0.06, 0.1, 0.2])
def test_after_a_refusal_a_quiet_route_is_admitted_again(spacing):
    """A /score head read after 60 ms of /slow work is refused (it may have waited that long unseen:
    correct). Then the loop is idle, and /score every ``spacing``, each alone, must be admitted: the
    gap between two refused heads is idle time, not unseen wait."""
    ctl = Admission()
    serve(ctl, "/score", 0.0)
    now = 1.0
    for _ in range(3):  # three CPU-bound /slow (20 ms each, 500 ms budget) read in one batch
        assert ctl.admit("/slow", 0.5, now)
    for i in range(3):  # run back to back: the loop is busy 60 ms, and learns /slow's occupancy
        ctl.started("/slow", i * 0.020, now + i * 0.020)
        ctl.finished("/slow", 0.020, now + (i + 1) * 0.020)
    now += 0.060 + 50e-6
    assert not ctl.admit("/score", BUDGET, now)  # read after 60 ms of work: may have waited 60 ms
    statuses = []
    for _ in range(20):
        now += spacing
        ok = ctl.admit("/score", BUDGET, now)
        statuses.append(ok)
        if ok:
            ctl.started("/score", 20e-6, now + 20e-6)
            ctl.finished("/score", SERVICE, now + 20e-6 + SERVICE)
    assert all(statuses), statuses


def test_a_handler_awaiting_io_leaves_the_loop_idle():
    """A handler that awaits for 100 ms holds the loop for microseconds: a head read just after its
    answer did not wait for it."""
    ctl = Admission()
    serve(ctl, "/score", 0.0)
    for start in (1.0, 2.0):  # its occupancy is never measured (never two waiting at once)
        assert ctl.admit("/db", 0.5, start)
        ctl.started("/db", 20e-6, start + 20e-6)
        ctl.finished("/db", 0.100, start + 0.100 + 20e-6)
        assert ctl.admit("/score", BUDGET, start + 0.1003)
        ctl.started("/score", 20e-6, start + 0.1003 + 20e-6)
        ctl.finished("/score", SERVICE, start + 0.1003 + 20e-6 + SERVICE)
    assert ctl.snapshot()["shed"] == {"admission": 0, "share": 0}


def test_a_refusal_for_real_unseen_wait_still_happens_when_the_loop_never_idled():
    """The other side: a head read right after 60 ms of handlers that ran back to back is refused, and
    so is one read after a stretch of heads the controller never admitted (they ran 60 ms of handlers)."""
    ctl = Admission()
    serve(ctl, "/score", 0.0)
    now = 1.0
    for i in range(3):  # /report (no deadline): three 20 ms CPU handlers, read in one batch
        ctl.started("/report", i * 0.020 + 20e-6, now + i * 0.020 + 20e-6)
        ctl.finished("/report", 0.020, now + (i + 1) * 0.020 + 20e-6)
    assert not ctl.admit("/score", BUDGET, now + 0.060 + 50e-6)


@pytest.mark.parametrize("poll_before_ready", [False, True])
def test_a_request_refused_by_its_deadline_while_the_loop_idled_leaves_no_queue_behind(poll_before_ready):
    """A WebSocket handshake whose handler never accepted (waiting, the loop idle) is answered 503 by
    its deadline: it never started in the controller's eyes and ends abandoned. The next request,
    a moment later, must not be charged that idle wait as if it had queued behind it."""
    ctl = Admission(poll_before_ready)
    budget = 0.3
    assert ctl.admit("ws", budget, 1.0)
    ctl.abandoned("ws", 1.0 + budget + 0.0002, started=False)  # its deadline answered it
    assert ctl.admit("quick", budget, 1.0 + budget + 0.0005)
