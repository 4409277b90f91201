"""/metrics with several workers answers for the whole server, whichever worker takes the request."""
from __future__ import annotations

import socket
import sys
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ServerProcess, http_get_json

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="workers need fork")


def _requests_to_root(host: str, port: int) -> float:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "aioserve_requests_total" and sample.labels.get("route") == "/":
                total += sample.value
    return total


def test_metrics_merge_every_worker():
    with ServerProcess("tests.support.apps:metered_app", "--workers", "2", "--port", "0", "--no-access-log") as server:
        server.wait_listening()
        pids: set[int] = set()
        sent = 0
        for _ in range(300):  # new connections until both workers have answered (bounded)
            pids.add(http_get_json(server.host, server.port)["pid"])
            sent += 1
            if len(pids) == 2 and sent >= 20:
                break
        assert len(pids) == 2
        # Each worker publishes its numbers about once a second; poll until they add up (bounded).
        deadline = time.monotonic() + 10
        seen = _requests_to_root(server.host, server.port)
        while seen != sent and time.monotonic() < deadline:
            time.sleep(0.2)  # the snapshots are files rewritten on a timer: nothing to await but /metrics itself
            seen = _requests_to_root(server.host, server.port)
        assert seen == sent, f"/metrics counted {seen} of the {sent} requests served by {len(pids)} workers"


def _scrape(host: str, port: int) -> dict[str, float]:
    """Every sample of one /metrics answer, by name and labels."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name + repr(sorted(sample.labels.items()))] = sample.value
    return out


def test_counters_never_go_backwards_whichever_worker_answers():
    """Scrapes land on different workers; each must count at least what the one before showed, while
    keep-alive clients load every worker (a worker's own file is up to a second old otherwise)."""
    with ServerProcess("tests.support.apps:metered_app", "--workers", "3", "--port", "0", "--no-access-log") as server:
        server.wait_listening()
        stop = threading.Event()

        def hammer() -> None:
            for _ in range(1_000_000):  # bounded; ends when the scrapes are done
                if stop.is_set():
                    return
                try:
                    with socket.create_connection((server.host, server.port), timeout=5) as s:
                        for _ in range(200):
                            if stop.is_set():
                                return
                            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                            if not s.recv(4096):
                                break
                except OSError:
                    pass

        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            previous: dict[str, float] = {}
            backwards = []
            for _ in range(80):  # scrapes on new connections: the kernel spreads them over the workers
                now = _scrape(server.host, server.port)
                for key, value in now.items():
                    counter = ("_total" in key or "_bucket" in key or "_count" in key or "_sum" in key)
                    if counter and value < previous.get(key, 0):
                        backwards.append((key, previous[key], value))
                previous = now
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert not backwards, f"{len(backwards)} counter(s) went backwards, e.g. {backwards[:3]}"


def test_retired_workers_are_folded_away(tmp_path):
    """--limit-max-requests replaces workers; their numbers are kept in one file, their own files go,
    and aioserve_workers counts the live workers only."""
    with ServerProcess("tests.support.apps:metered_app", "--workers", "2", "--limit-max-requests", "5",
                       "--port", "0", "--no-access-log", env={"AIOSERVE_METRICS_DIR": str(tmp_path)}) as server:
        server.wait_listening()
        sent = 0
        for _ in range(60):
            http_get_json(server.host, server.port)
            sent += 1
        server.wait_for(r"Worker \d+ exited", count=8, timeout=30)
        deadline = time.monotonic() + 15
        settled = False
        for _ in range(200):  # wait until the retired workers are folded away (bounded)
            samples = _scrape(server.host, server.port)  # (a scrape is a request: workers keep retiring)
            files = sorted(f.name for f in tmp_path.glob("worker-*.json"))
            counted = samples["aioserve_requests_total[('route', '/'), ('status', '2xx')]"]
            # (a live worker that did not answer this scrape published its numbers up to a second ago)
            settled = len(files) <= 4 and samples["aioserve_workers[]"] <= 4 and counted == sent
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # a retiring worker finishes its last answers, then the supervisor reaps it
        # two workers, each perhaps retiring (exited, not yet reaped) while its replacement starts
        assert settled, (files, samples["aioserve_workers[]"], counted, sent)
