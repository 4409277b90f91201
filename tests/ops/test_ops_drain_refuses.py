"""--workers: once graceful shutdown begins, new connections are refused at once (as in one process),
not queued on the supervisor's copy of the listening socket until it exits, then reset."""
from __future__ import annotations

import signal
import socket
import sys
import threading
import time

import pytest

from tests.support import ServerProcess, http_get

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="workers need fork")


def test_new_connections_are_refused_during_the_drain():
    with ServerProcess("tests.support.apps:ops_app", "--workers", "2", "--port", "0", "--no-access-log") as server:
        server.wait_listening()
        answers: list[int] = []
        slow = threading.Thread(target=lambda: answers.append(http_get(server.host, server.port, "/slow?s=6")[0]))
        slow.start()
        server.wait_for("slow request started")
        server.signal(signal.SIGTERM)
        server.wait_for("stopping 2 worker")
        refused = False
        deadline = time.monotonic() + 4  # well inside the 6 s the slow request keeps a worker draining
        for _ in range(200):
            try:
                with socket.create_connection((server.host, server.port), timeout=1):
                    pass
            except ConnectionRefusedError:
                refused = True
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)  # the workers close their copies as their drain starts: nothing to await
        assert refused, "a new connection was still accepted into the queue during the drain"
        assert server.wait_exit(20) == 0
        slow.join(10)
        assert answers == [200]  # the in-flight request still finished
