"""/metrics with several workers answers for the whole server, whichever worker takes the request."""
from __future__ import annotations

import sys
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
