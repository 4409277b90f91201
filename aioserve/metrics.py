"""Request metrics: per-route latency histograms, counters, gauges; mergeable; Prometheus text.

Every series is a fixed set of preallocated lists: one histogram per (route pattern, status class)
with the same log-spaced bucket bounds (``BOUNDS``, four per decade from 100 us to 10 s), so
recording a request is a ``bisect`` and two list updates: no allocation of containers, no lock (one
event loop per worker records; nothing else writes).

A worker's numbers leave the process as a *snapshot*: a plain dict of lists and numbers (JSON-able).
``merge()`` adds snapshots together (counters and buckets add; the loop-lag gauges take the worst
worker), and ``render()`` turns one snapshot into the Prometheus text exposition format (0.0.4).
``SnapshotDir`` is how several workers answer ``/metrics`` for the whole server: each worker writes
its snapshot to ``<dir>/worker-<pid>.json`` about once a second and before each ``/metrics`` answer
(atomically, write then rename), and ``/metrics`` in any worker merges every file of the directory
with its own live numbers; exited workers are folded into one file, and no answer counts less than
the one before (see ``SnapshotDir``).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from bisect import bisect_left
from typing import Any, Iterable

import orjson

try:
    import fcntl
except ImportError:  # Windows: no workers, so no lock is needed
    fcntl = None  # type: ignore[assignment]

#: Upper bounds (seconds) of the latency buckets: 10 ** (k / 4) for k in -16..4, i.e. 100 us .. 10 s.
BOUNDS: tuple[float, ...] = tuple(round(10 ** (k / 4), 9) for k in range(-16, 5))
NBUCKETS = len(BOUNDS) + 1  # the last bucket is +Inf
#: Status classes 1xx..5xx; index 0 collects anything odd (e.g. 499 for a client that went away is 4).
CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")
UNMATCHED = "<unmatched>"

COUNTERS = ("requests_shed", "deadline_cancelled", "deadline_late", "shed_admission", "shed_share",
            "websocket_messages_in", "websocket_messages_out")
#: Shed reasons as rendered, and the counter of each: the in-flight limit, admission control (the
#: request could not finish within its budget), and fairness (the route yielded to one it crowded out).
SHED_REASONS = (("limit", "requests_shed"), ("admission", "shed_admission"), ("share", "shed_share"))
SNAPSHOT_VERSION = 1


class RouteSeries:
    """One route pattern: a histogram per status class, laid out flat in one list."""

    __slots__ = ("counts", "sums")

    def __init__(self) -> None:
        self.counts = [0] * (len(CLASSES) * NBUCKETS)
        self.sums = [0.0] * len(CLASSES)

    def record(self, status: int, seconds: float) -> None:
        cls = status // 100
        if cls > 5:
            cls = 0
        self.counts[cls * NBUCKETS + bisect_left(BOUNDS, seconds)] += 1
        self.sums[cls] += seconds


class Metrics:
    """The live numbers of one worker."""

    __slots__ = ("series", "counters", "lag_last", "lag_max")

    def __init__(self) -> None:
        self.series: dict[str, RouteSeries] = {}
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.lag_last = 0.0
        self.lag_max = 0.0

    def route(self, pattern: str) -> RouteSeries:
        """The series of ``pattern``; made once per pattern, then found with one dict lookup."""
        series = self.series.get(pattern)
        if series is None:
            series = self.series[pattern] = RouteSeries()
        return series

    def snapshot(self, in_flight: int = 0, connections: int = 0,
                 admission: dict[str, Any] | None = None, websockets: Any = None) -> dict[str, Any]:
        """``admission``: ``Admission.metrics()`` when admission control is on (its shed counts become
        counters; its per-route section is kept as it is). ``websockets``: the server's
        ``WebSocketStats`` (open sockets, messages each way), if any."""
        counters = dict(self.counters)
        if admission is not None:
            counters["shed_admission"] = admission["shed"]["admission"]
            counters["shed_share"] = admission["shed"]["share"]
        open_sockets = 0
        if websockets is not None:
            counters["websocket_messages_in"] = websockets.messages_in
            counters["websocket_messages_out"] = websockets.messages_out
            open_sockets = websockets.open
        return {
            "version": SNAPSHOT_VERSION,
            "pid": os.getpid(),
            "bounds": list(BOUNDS),
            "series": {p: {"counts": list(s.counts), "sums": list(s.sums)} for p, s in self.series.items()},
            "counters": counters,
            "gauges": {"in_flight": in_flight, "connections": connections, "websockets": open_sockets,
                       "loop_lag": self.lag_last, "loop_lag_max": self.lag_max},
            "admission": admission["routes"] if admission is not None else {},
        }


def empty_snapshot() -> dict[str, Any]:
    return Metrics().snapshot()


def merge(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Add worker snapshots: buckets, sums and counters add; in-flight and connections add (they are
    per-worker amounts); the loop-lag gauges keep the worst worker (the figure to look at)."""
    out = empty_snapshot()
    out["pid"] = None
    series = out["series"]
    gauges = out["gauges"]
    workers = 0
    for snap in snapshots:
        if snap.get("version") != SNAPSHOT_VERSION or list(snap.get("bounds", ())) != list(BOUNDS):
            raise ValueError("cannot merge metrics snapshots with different versions or buckets")
        workers += 1
        for pattern, data in snap["series"].items():
            into = series.get(pattern)
            if into is None:
                series[pattern] = {"counts": list(data["counts"]), "sums": list(data["sums"])}
                continue
            counts, sums = into["counts"], into["sums"]
            for i, n in enumerate(data["counts"]):
                counts[i] += n
            for i, s in enumerate(data["sums"]):
                sums[i] += s
        for name, n in snap["counters"].items():
            out["counters"][name] = out["counters"].get(name, 0) + n
        _merge_admission(out["admission"], snap.get("admission") or {})
        g = snap.get("gauges") or {}
        gauges["in_flight"] += g.get("in_flight", 0)
        gauges["connections"] += g.get("connections", 0)
        gauges["websockets"] += g.get("websockets", 0)
        gauges["loop_lag"] = max(gauges["loop_lag"], g.get("loop_lag", 0.0))
        gauges["loop_lag_max"] = max(gauges["loop_lag_max"], g.get("loop_lag_max", 0.0))
    out["workers"] = workers
    return out


def _merge_admission(into: dict[str, Any], routes: dict[str, Any]) -> None:
    """Queueing-delay histograms add; limits add (each worker admits its own); the target delay keeps
    the largest (the same budget everywhere, less a service time each worker estimates)."""
    for pattern, data in routes.items():
        mine = into.get(pattern)
        if mine is None:
            into[pattern] = {"target_delay": data["target_delay"], "limit": data["limit"],
                             "queued": list(data["queued"]), "queued_sum": data["queued_sum"]}
            continue
        for i, n in enumerate(data["queued"]):
            mine["queued"][i] += n
        mine["queued_sum"] += data["queued_sum"]
        if data["limit"] is not None:
            mine["limit"] = (mine["limit"] or 0) + data["limit"]
        if data["target_delay"] is not None:
            mine["target_delay"] = max(mine["target_delay"] or 0.0, data["target_delay"])


def quantile(counts: list[int], q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` of one histogram (inf past the last)."""
    total = sum(counts)
    if not total:
        return 0.0
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return BOUNDS[i] if i < len(BOUNDS) else math.inf
    return math.inf


# -- Prometheus text format -------------------------------------------------------------------------
def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(x: float) -> str:
    if x == math.inf:
        return "+Inf"
    if isinstance(x, int) or float(x).is_integer():
        return str(int(x))
    return repr(float(x))


_LE = tuple(_num(b) for b in BOUNDS) + ("+Inf",)


def render(snap: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    add("# HELP aioserve_requests_total Requests answered, by route pattern and status class.")
    add("# TYPE aioserve_requests_total counter")
    per_class: list[tuple[str, str, list[int], float]] = []
    for pattern in sorted(snap["series"]):
        data = snap["series"][pattern]
        counts, sums = data["counts"], data["sums"]
        for c, name in enumerate(CLASSES):
            hist = counts[c * NBUCKETS:(c + 1) * NBUCKETS]
            total = sum(hist)
            if total:
                per_class.append((pattern, name, hist, sums[c]))
                add(f'aioserve_requests_total{{route="{_label(pattern)}",status="{name}"}} {total}')
    add("# HELP aioserve_request_duration_seconds Time from request head parsed to response ready.")
    add("# TYPE aioserve_request_duration_seconds histogram")
    for pattern, name, hist, total_s in per_class:
        labels = f'route="{_label(pattern)}",status="{name}"'
        cumulative = 0
        for le, n in zip(_LE, hist):
            cumulative += n
            add(f'aioserve_request_duration_seconds_bucket{{{labels},le="{le}"}} {cumulative}')
        add(f"aioserve_request_duration_seconds_sum{{{labels}}} {_num(total_s)}")
        add(f"aioserve_request_duration_seconds_count{{{labels}}} {cumulative}")
    counters = snap["counters"]
    add("# HELP aioserve_requests_shed_total Requests refused at once (503), by reason: limit (too many in "
        "flight), admission (could not finish within its budget), share (yielded to a route it crowded out).")
    add("# TYPE aioserve_requests_shed_total counter")
    for reason, name in SHED_REASONS:
        add(f'aioserve_requests_shed_total{{reason="{reason}"}} {counters.get(name, 0)}')
    add("# HELP aioserve_deadline_missed_total Requests past their deadline: cancelled, or answered late "
        "by a handler that could not be interrupted.")
    add("# TYPE aioserve_deadline_missed_total counter")
    add(f'aioserve_deadline_missed_total{{outcome="cancelled"}} {counters.get("deadline_cancelled", 0)}')
    add(f'aioserve_deadline_missed_total{{outcome="late"}} {counters.get("deadline_late", 0)}')
    _render_admission(add, snap.get("admission") or {})
    gauges = snap["gauges"]
    add("# HELP aioserve_requests_in_flight Requests whose head is parsed and whose response is not yet ready.")
    add("# TYPE aioserve_requests_in_flight gauge")
    add(f"aioserve_requests_in_flight {gauges.get('in_flight', 0)}")
    add("# HELP aioserve_connections Open client connections.")
    add("# TYPE aioserve_connections gauge")
    add(f"aioserve_connections {gauges.get('connections', 0)}")
    add("# HELP aioserve_websockets Open WebSockets (handshake answered 101, TCP connection not yet closed).")
    add("# TYPE aioserve_websockets gauge")
    add(f"aioserve_websockets {gauges.get('websockets', 0)}")
    add("# HELP aioserve_websocket_messages_total WebSocket messages received (in) and sent (out).")
    add("# TYPE aioserve_websocket_messages_total counter")
    add(f'aioserve_websocket_messages_total{{direction="in"}} {counters.get("websocket_messages_in", 0)}')
    add(f'aioserve_websocket_messages_total{{direction="out"}} {counters.get("websocket_messages_out", 0)}')
    add("# HELP aioserve_event_loop_lag_seconds How late the last periodic loop callback ran (worst worker).")
    add("# TYPE aioserve_event_loop_lag_seconds gauge")
    add(f"aioserve_event_loop_lag_seconds {_num(gauges.get('loop_lag', 0.0))}")
    add("# HELP aioserve_event_loop_lag_max_seconds Worst loop lag over the last 10 seconds (worst worker).")
    add("# TYPE aioserve_event_loop_lag_max_seconds gauge")
    add(f"aioserve_event_loop_lag_max_seconds {_num(gauges.get('loop_lag_max', 0.0))}")
    if "workers" in snap:
        add("# HELP aioserve_workers Worker snapshots merged into this answer.")
        add("# TYPE aioserve_workers gauge")
        add(f"aioserve_workers {snap['workers']}")
    add("")
    return "\n".join(lines)


def _render_admission(add: Any, routes: dict[str, Any]) -> None:
    if not routes:
        return
    add("# HELP aioserve_admission_target_delay_seconds Queueing delay a route's requests can accept: its "
        "deadline less its service time.")
    add("# TYPE aioserve_admission_target_delay_seconds gauge")
    for pattern in sorted(routes):
        if routes[pattern]["target_delay"] is not None:
            add(f'aioserve_admission_target_delay_seconds{{route="{_label(pattern)}"}} '
                f'{_num(routes[pattern]["target_delay"])}')
    add("# HELP aioserve_admission_limit The in-flight limit admission control amounts to, per route "
        "(what one would otherwise tune by hand).")
    add("# TYPE aioserve_admission_limit gauge")
    for pattern in sorted(routes):
        if routes[pattern]["limit"] is not None:
            add(f'aioserve_admission_limit{{route="{_label(pattern)}"}} {routes[pattern]["limit"]}')
    add("# HELP aioserve_queueing_delay_seconds Time from request head parsed to handler start.")
    add("# TYPE aioserve_queueing_delay_seconds histogram")
    for pattern in sorted(routes):
        data = routes[pattern]
        label = f'route="{_label(pattern)}"'
        cumulative = 0
        for le, n in zip(_LE, data["queued"]):
            cumulative += n
            add(f'aioserve_queueing_delay_seconds_bucket{{{label},le="{le}"}} {cumulative}')
        add(f"aioserve_queueing_delay_seconds_sum{{{label}}} {_num(data['queued_sum'])}")
        add(f"aioserve_queueing_delay_seconds_count{{{label}}} {cumulative}")


# -- several workers --------------------------------------------------------------------------------
WORKER_PREFIX = "worker-"
RETIRED = "retired.json"  # the numbers of every worker that has exited, folded into one snapshot
SERVED = "served.json"  # the highest counters any /metrics answer has shown: the next one shows no less
LOCK = ".lock"
KEEP_FOLDED = 1024  # ids of folded workers remembered (a reader holds a file it read for milliseconds)


class SnapshotDir:
    """Per-worker snapshot files in one directory, merged on read.

    Counters never go backwards, whichever worker answers:

    - The answering worker writes its own file before it merges, so every file only grows and no
      answer shows more than the files hold (another worker's file may be a second old).
    - An exited worker's counters keep counting: the supervisor folds its file into ``retired.json``
      (``retire()``) and removes it, so files do not pile up as workers are replaced. A reader reads
      ``retired.json`` after the worker files and skips a worker file already folded into it (by the
      snapshot's ``id``), so a worker is never counted twice nor missed while it moves.
    - Every answer is raised to ``served.json`` (under a lock), the last totals served, and stored
      there: buckets, sums and counters each take the larger value, so a histogram's buckets, count and
      sum stay consistent and no corner case (float sums adding in another order, a worker killed
      between two snapshots) shows a counter going down.

    Gauges (in flight, connections, loop lag) are live workers' only; ``workers`` counts the live
    workers whose numbers were merged.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.own = os.path.join(path, f"{WORKER_PREFIX}{os.getpid()}.json")
        self.id = f"{os.getpid()}-{time.time_ns()}"  # pids are reused; a snapshot's id is not

    def write(self, snap: dict[str, Any]) -> None:
        _write_json(self.own, dict(snap, id=self.id))

    def read_others(self) -> list[dict[str, Any]]:
        """Every other worker's snapshot (dead workers' without gauges), then the retired workers' one."""
        out = []
        for name in sorted(os.listdir(self.path)):
            full = os.path.join(self.path, name)
            if not name.startswith(WORKER_PREFIX) or not name.endswith(".json") or full == self.own:
                continue
            snap = _read_json(full)
            if snap is None:
                continue  # being replaced, or folded away (then retired.json, read below, has it)
            pid = snap.get("pid")
            snap["live"] = not (isinstance(pid, int) and not _alive(pid))
            if not snap["live"]:
                _drop_gauges(snap)
            out.append(snap)
        retired = _read_json(os.path.join(self.path, RETIRED))  # after the worker files: see the class doc
        if retired is not None:
            folded = set(retired.get("folded") or ())
            out = [snap for snap in out if snap.get("id") is None or snap["id"] not in folded]
            out.insert(0, retired)
        return out

    def merged(self, own: dict[str, Any]) -> dict[str, Any]:
        """The whole server's numbers, with ``own`` (this worker's live snapshot) written first."""
        try:
            self.write(own)
        except OSError:
            pass
        others = self.read_others()
        live = 1 + sum(1 for snap in others if snap.get("live"))
        out = merge([own, *others])
        try:
            with _Locked(os.path.join(self.path, LOCK)):
                served = _read_json(os.path.join(self.path, SERVED))
                if served is not None:
                    raise_to(out, served)
                _write_json(os.path.join(self.path, SERVED), out)
        except OSError:
            pass
        out["workers"] = live
        return out

    @staticmethod
    def retire(path: str, pid: int) -> None:
        """Fold the file of worker ``pid``, which has exited, into ``retired.json`` and remove it.

        Called by the one process that reaps the workers (the supervisor), so ``retired.json`` has one
        writer; written (atomically) before the worker's file is removed.
        """
        own = os.path.join(path, f"{WORKER_PREFIX}{pid}.json")
        snap = _read_json(own)
        if snap is None:
            with contextlib.suppress(OSError):
                os.unlink(own)  # unreadable (a partial write cannot be: files are renamed into place)
            return
        _drop_gauges(snap)
        retired_path = os.path.join(path, RETIRED)
        retired = _read_json(retired_path)
        folded = list(retired.get("folded") or ()) if retired is not None else []
        if snap.get("id") is not None:
            folded.append(snap["id"])
        out = merge([retired, snap] if retired is not None else [snap])
        out.pop("workers", None)
        _drop_gauges(out)
        out["folded"] = folded[-KEEP_FOLDED:]
        out["live"] = False
        _write_json(retired_path, out)
        os.unlink(own)


def raise_to(snap: dict[str, Any], floor: dict[str, Any]) -> None:
    """Raise every counter of ``snap`` (buckets, sums, counters, queueing histograms) to at least
    ``floor``'s, in place. Buckets are raised one by one, so counts derived from them stay their sum."""
    series = snap["series"]
    for pattern, data in (floor.get("series") or {}).items():
        mine = series.get(pattern)
        if mine is None:
            series[pattern] = {"counts": list(data["counts"]), "sums": list(data["sums"])}
            continue
        mine["counts"] = [max(a, b) for a, b in zip(mine["counts"], data["counts"])]
        mine["sums"] = [max(a, b) for a, b in zip(mine["sums"], data["sums"])]
    counters = snap["counters"]
    for name, n in (floor.get("counters") or {}).items():
        counters[name] = max(counters.get(name, 0), n)
    admission = snap["admission"]
    for pattern, data in (floor.get("admission") or {}).items():
        mine = admission.get(pattern)
        if mine is None:
            admission[pattern] = {"target_delay": None, "limit": None,
                                  "queued": list(data["queued"]), "queued_sum": data["queued_sum"]}
            continue
        mine["queued"] = [max(a, b) for a, b in zip(mine["queued"], data["queued"])]
        mine["queued_sum"] = max(mine["queued_sum"], data["queued_sum"])


def _drop_gauges(snap: dict[str, Any]) -> None:
    """A worker that is gone: its counters stay, its gauges (and admission limits) go."""
    snap["gauges"] = {}
    for data in (snap.get("admission") or {}).values():
        data["limit"] = None


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            data = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(data))
    os.replace(tmp, path)


class _Locked:
    """An exclusive ``flock`` on ``path`` (released when the holder exits, even killed); nothing where
    there is no ``fcntl`` (Windows, which has no workers)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        if fcntl is not None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: Any) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing releases the lock
            self.fd = -1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
