"""Metrics: histograms by route pattern and status class, Prometheus text, worker merge, loop lag."""
from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aioserve import App, HTTPError
from aioserve.looplag import LoopLagMonitor
from aioserve.metrics import BOUNDS, NBUCKETS, Metrics, SnapshotDir, merge, quantile, render
from tests.support import RawConnection, raw_get, request_bytes, running, wait_until


def parse(text: str) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def metrics_app(**kw):
    app = App(**kw)
    app.enable_metrics("/metrics")

    @app.get("/users/{uid:int}")
    async def user(request, uid: int):
        if uid == 0:
            raise HTTPError(404)
        return {"id": uid}

    @app.get("/boom")
    async def boom(request):
        raise RuntimeError("boom")

    @app.get("/slow", deadline=0.02)
    async def slow(request):
        await asyncio.sleep(5)

    return app


async def test_metrics_parse_and_counts_match_requests_sent():
    async with running(metrics_app()) as server:
        client = await RawConnection.open(server.port)
        try:
            for uid in (1, 2, 3, 0):
                await client.request("GET", f"/users/{uid}")
            await client.request("GET", "/boom")
            await client.request("GET", "/nowhere")
            assert (await client.request("GET", "/slow")).status == 503
            reply = await client.request("GET", "/metrics")
        finally:
            await client.close()
    assert reply.status == 200
    assert reply.header("content-type").startswith("text/plain; version=0.0.4")
    m = parse(reply.body.decode())
    total = m["aioserve_requests_total"]
    assert total[(("route", "/users/{uid:int}"), ("status", "2xx"))] == 3  # pattern, not raw path
    assert total[(("route", "/users/{uid:int}"), ("status", "4xx"))] == 1
    assert total[(("route", "/boom"), ("status", "5xx"))] == 1
    assert total[(("route", "<unmatched>"), ("status", "4xx"))] == 1
    assert total[(("route", "/slow"), ("status", "5xx"))] == 1
    assert sum(total.values()) == 7  # the /metrics request itself is counted after it is answered
    count = m["aioserve_request_duration_seconds_count"]
    assert count[(("route", "/users/{uid:int}"), ("status", "2xx"))] == 3
    buckets = m["aioserve_request_duration_seconds_bucket"]
    assert buckets[(("le", "+Inf"), ("route", "/users/{uid:int}"), ("status", "2xx"))] == 3
    slow_under_20ms = buckets[(("le", "0.017782794"), ("route", "/slow"), ("status", "5xx"))]
    assert slow_under_20ms == 0 and buckets[(("le", "10"), ("route", "/slow"), ("status", "5xx"))] == 1
    assert m["aioserve_deadline_missed_total"][(("outcome", "cancelled"),)] == 1
    assert set(m["aioserve_requests_shed_total"].values()) == {0}  # by reason: limit, admission, share
    assert m["aioserve_requests_in_flight"][()] == 1  # the /metrics request itself
    assert m["aioserve_connections"][()] == 1
    assert m["aioserve_event_loop_lag_seconds"][()] >= 0


async def test_shed_requests_are_counted():
    app = metrics_app(limit_in_flight=1)
    gate = asyncio.Event()

    @app.get("/hold")
    async def hold(request):
        await gate.wait()
        return "ok"

    async with running(app) as server:
        holder = await RawConnection.open(server.port)
        holder.write(request_bytes("GET", "/hold"))
        await wait_until(lambda: server.state.observer.in_flight == 1)
        for _ in range(3):
            assert (await raw_get(server.port, "/hold")).status == 503
        m = parse((await raw_get(server.port, "/metrics")).body.decode())  # exempt from shedding
        gate.set()
        await holder.read_response()
        await holder.close()
    assert m["aioserve_requests_shed_total"][(("reason", "limit"),)] == 3
    assert m["aioserve_requests_total"][(("route", "/hold"), ("status", "5xx"))] == 3


def test_histogram_buckets_are_le_and_log_spaced():
    assert BOUNDS[0] == pytest.approx(1e-4) and BOUNDS[-1] == pytest.approx(10.0)
    assert all(b / a == pytest.approx(10 ** 0.25, rel=1e-4) for a, b in zip(BOUNDS, BOUNDS[1:]))
    m = Metrics()
    s = m.route("/x")
    s.record(200, BOUNDS[4])  # exactly on a bound: in that bucket (le)
    s.record(200, 0.0)
    s.record(200, 99.0)  # past the last bound: +Inf
    s.record(503, 0.002)
    hist = s.counts[2 * NBUCKETS:3 * NBUCKETS]
    assert hist[0] == 1 and hist[4] == 1 and hist[-1] == 1
    assert sum(s.counts[5 * NBUCKETS:6 * NBUCKETS]) == 1
    assert quantile(hist, 0.5) == BOUNDS[4]


def test_merge_adds_workers():
    a, b = Metrics(), Metrics()
    for _ in range(3):
        a.route("/x").record(200, 0.001)
    b.route("/x").record(200, 0.001)
    b.route("/y").record(500, 0.5)
    a.counters["requests_shed"] = 2
    b.counters["requests_shed"] = 5
    a.lag_last, b.lag_last = 0.001, 0.2
    merged = merge([a.snapshot(in_flight=1, connections=3), json.loads(json.dumps(b.snapshot(2, 4)))])
    m = parse(render(merged))
    assert m["aioserve_requests_total"][(("route", "/x"), ("status", "2xx"))] == 4
    assert m["aioserve_requests_total"][(("route", "/y"), ("status", "5xx"))] == 1
    assert m["aioserve_requests_shed_total"][(("reason", "limit"),)] == 7
    assert m["aioserve_requests_in_flight"][()] == 3
    assert m["aioserve_connections"][()] == 7
    assert m["aioserve_event_loop_lag_seconds"][()] == 0.2  # the worst worker
    assert m["aioserve_workers"][()] == 2
    assert a.route("/x").counts[2 * NBUCKETS + 4] == 3  # merging does not touch the live numbers
    bad = a.snapshot()
    bad["bounds"] = [1.0]
    with pytest.raises(ValueError):
        merge([a.snapshot(), bad])


def test_snapshot_dir_keeps_dead_workers_counts_but_not_their_gauges(tmp_path):
    other = Metrics()
    other.route("/x").record(200, 0.01)
    snap = other.snapshot(in_flight=9, connections=9)
    snap["pid"] = 2 ** 22 + 12345  # no such process
    (tmp_path / "worker-dead.json").write_text(json.dumps(snap))
    live = dict(snap, pid=os.getppid())
    (tmp_path / "worker-live.json").write_text(json.dumps(live))
    (tmp_path / "unrelated.txt").write_text("x")
    own = Metrics()
    own.route("/x").record(200, 0.01)
    d = SnapshotDir(str(tmp_path))
    d.write(own.snapshot())
    merged = d.merged(own.snapshot(in_flight=1))
    assert merged["workers"] == 2  # live workers only
    assert sum(merged["series"]["/x"]["counts"]) == 3
    assert merged["gauges"]["in_flight"] == 1 + 9  # own + the live worker; the dead one's dropped


def test_retired_worker_is_folded_into_one_file_and_counted_once(tmp_path):
    """The supervisor folds an exited worker's file into retired.json; a reader that still holds the
    worker's file (read before the fold) does not count it twice, nor miss it after."""
    gone = Metrics()
    for _ in range(3):
        gone.route("/x").record(200, 0.01)
    writer = SnapshotDir(str(tmp_path))
    writer.write(gone.snapshot(in_flight=4))
    gone_file = tmp_path / f"worker-{os.getpid()}.json"
    held = gone_file.read_bytes()
    os.rename(gone_file, tmp_path / "worker-1.json")  # as if written by worker pid 1's
    SnapshotDir.retire(str(tmp_path), 1)
    assert sorted(p.name for p in tmp_path.glob("worker-*.json")) == []
    reader = SnapshotDir(str(tmp_path / "r"))  # a worker in another directory reading this one
    reader.path = str(tmp_path)
    own = Metrics()
    own.route("/x").record(200, 0.01)
    merged = reader.merged(own.snapshot())
    assert sum(merged["series"]["/x"]["counts"]) == 4
    assert merged["workers"] == 1 and merged["gauges"]["in_flight"] == 0
    (tmp_path / "worker-2.json").write_bytes(held)  # the file as a slow reader saw it before the fold
    merged = reader.merged(own.snapshot())
    assert sum(merged["series"]["/x"]["counts"]) == 4
    # a second retired worker adds to the first
    again = SnapshotDir(str(tmp_path))
    again.write(gone.snapshot())
    os.rename(tmp_path / f"worker-{os.getpid()}.json", tmp_path / "worker-3.json")
    SnapshotDir.retire(str(tmp_path), 3)
    assert sum(reader.merged(own.snapshot())["series"]["/x"]["counts"]) == 7


def test_merged_counters_never_below_what_was_served(tmp_path):
    """The last answer's counters are a floor for the next, whichever worker answers; a histogram's
    buckets and sum are raised one by one, so its count stays the sum of its buckets."""
    d = SnapshotDir(str(tmp_path))
    m = Metrics()
    for _ in range(5):
        m.route("/x").record(200, 0.01)
    first = d.merged(m.snapshot())
    other = SnapshotDir(str(tmp_path / "o"))
    other.path = str(tmp_path)
    other.own = str(tmp_path / "worker-other.json")
    stale = Metrics()  # a worker answering with older numbers for the same series
    stale.route("/x").record(200, 0.5)
    os.unlink(d.own)  # as if this worker's file were older than what it served
    second = other.merged(stale.snapshot())
    counts = second["series"]["/x"]["counts"]
    assert counts == [max(a, b) for a, b in zip(first["series"]["/x"]["counts"], stale.snapshot()["series"]["/x"]["counts"])]
    assert second["series"]["/x"]["sums"][2] >= first["series"]["/x"]["sums"][2]
    text = render(second)
    assert 'aioserve_requests_total{route="/x",status="2xx"} 6' in text


async def test_metrics_endpoint_answers_for_all_workers(tmp_path):
    other = Metrics()
    for _ in range(5):
        other.route("/users/{uid:int}").record(200, 0.003)
    snap = other.snapshot()
    snap["pid"] = os.getppid()
    (tmp_path / "worker-1.json").write_text(json.dumps(snap))
    app = metrics_app()
    app.enable_metrics("/metrics", multiprocess_dir=str(tmp_path))  # again: changes the settings
    async with running(app) as server:
        await raw_get(server.port, "/users/1")
        m = parse((await raw_get(server.port, "/metrics")).body.decode())
        assert m["aioserve_requests_total"][(("route", "/users/{uid:int}"), ("status", "2xx"))] == 6
        assert m["aioserve_workers"][()] == 2
    # on shutdown the worker leaves its final numbers for the others
    files = sorted(p.name for p in tmp_path.iterdir())
    assert f"worker-{os.getpid()}.json" in files


async def test_loop_lag_monitor_sees_a_blocked_loop():
    loop = asyncio.get_running_loop()
    monitor = LoopLagMonitor(loop, interval=0.01, window=1.0)
    ticks = []
    monitor.hooks.append(lambda: ticks.append(monitor.last))
    monitor.start()
    try:
        await wait_until(lambda: len(ticks) >= 1)
        end = time.perf_counter() + 0.06
        while time.perf_counter() < end:  # hold the loop: the next tick must run late
            pass
        n = len(ticks)
        await wait_until(lambda: len(ticks) > n)
        assert monitor.max >= 0.03
    finally:
        monitor.stop()
