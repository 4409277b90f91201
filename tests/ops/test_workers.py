"""Worker processes under the supervisor: distribution, replacement, signals, recycling, health."""
from __future__ import annotations

import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import ServerProcess, http_get, http_get_json

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="workers need fork")

APP = "tests.support.apps:ops_app"


def pids_seen(server: ServerProcess, want: int, attempts: int = 300) -> set[int]:
    """Send requests on new connections until ``want`` distinct worker PIDs answered (bounded)."""
    pids: set[int] = set()
    for _ in range(attempts):
        pids.add(http_get_json(server.host, server.port)["pid"])
        if len(pids) >= want:
            break
    return pids


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_two_workers_serve_from_two_pids_and_run_hooks_in_each(loop):
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    with ServerProcess(APP, "--workers", "2", "--port", "0", "--no-access-log", "--loop", loop) as server:
        server.wait_listening()
        assert f"loop: {loop}, workers: 2" in server.output
        workers = set(server.worker_pids())
        hooks = {int(m.group(1)) for m in server.wait_for(r"startup hook ran in (\d+)", count=2)}
        assert hooks == workers and len(workers) == 2
        assert pids_seen(server, 2) == workers
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
        assert {int(m.group(1)) for m in server.wait_for(r"shutdown hook ran in (\d+)", count=2)} == workers


def test_app_run_workers_keyword():
    code = "from tests.support.apps import ops_app as app; app.run(workers=2, port=0, access_log=False)"
    with ServerProcess(command=[sys.executable, "-c", code]) as server:
        server.wait_listening()
        assert "workers: 2" in server.output
        assert len(pids_seen(server, 2)) == 2


def test_sigkill_worker_loses_no_later_request_and_is_replaced():
    with ServerProcess(APP, "--workers", "2", "--port", "0", "--no-access-log") as server:
        server.wait_listening()
        victim, survivor = server.worker_pids()
        import os

        os.kill(victim, signal.SIGKILL)
        for _ in range(30):  # at once: the shared accept queue hands every connection to a live worker
            assert http_get_json(server.host, server.port)["pid"] != victim
        server.wait_for(rf"Worker {victim} died \(signal SIGKILL\); replacing it")
        ready = server.wait_for(r"Worker (\d+) ready", count=3)
        newcomer = int(ready[2].group(1))
        assert newcomer not in (victim, survivor)
        assert pids_seen(server, 2) == {survivor, newcomer}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_completes_in_flight_requests(sig):
    with ServerProcess(APP, "--workers", "2", "--port", "0", "--no-access-log") as server:
        server.wait_listening()
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(http_get, server.host, server.port, "/slow?s=1") for _ in range(4)]
            server.wait_for("slow request started", count=4)
            server.signal(sig)
            results = [f.result(timeout=15) for f in futures]
        assert [status for status, _, _ in results] == [200] * 4
        assert all(headers.get("connection") == "close" for _, headers, _ in results)
        assert server.wait_exit() == 0
        assert server.count("shutdown hook ran") == 2


def test_sighup_replaces_workers_one_by_one_without_refusing():
    with ServerProcess(APP, "--workers", "2", "--port", "0", "--no-access-log") as server:
        server.wait_listening()
        old = set(server.worker_pids())
        errors: list[BaseException] = []
        answers: list[int] = []
        done = threading.Event()
        progress = threading.Condition()

        def hammer() -> None:
            while not done.is_set() and len(answers) < 5000:
                try:
                    answers.append(http_get_json(server.host, server.port)["pid"])
                except BaseException as exc:  # noqa: BLE001 - every failure counts
                    errors.append(exc)
                with progress:
                    progress.notify_all()

        client = threading.Thread(target=hammer)
        client.start()
        try:
            server.signal(signal.SIGHUP)
            for pid in old:
                server.wait_for(rf"Worker {pid} exited", timeout=15)
            new = {int(m.group(1)) for m in server.wait_for(r"Worker (\d+) ready", count=4)} - old
            count_before = len(answers)
            with progress:  # answered by the new workers (bounded)
                progress.wait_for(lambda: len(answers) >= count_before + 20 or not client.is_alive(), timeout=10)
        finally:
            done.set()
            client.join(15)
        assert not errors, errors[:3]
        assert len(new) == 2
        assert set(answers[-10:]) <= new
        assert old & set(answers)


def test_sigttin_adds_and_sigttou_removes_a_worker():
    with ServerProcess(APP, "--workers", "1", "--limit-max-requests", "100000", "--port", "0",
                       "--no-access-log") as server:
        server.wait_listening()
        (first,) = server.worker_pids()
        server.signal(signal.SIGTTIN)
        second = int(server.wait_for(r"Worker (\d+) ready", count=2)[1].group(1))
        assert pids_seen(server, 2) == {first, second}
        server.signal(signal.SIGTTOU)
        server.wait_for(rf"Worker {first} exited")  # the oldest goes
        assert {http_get_json(server.host, server.port)["pid"] for _ in range(10)} == {second}


def test_limit_max_requests_recycles_workers():
    with ServerProcess(APP, "--workers", "1", "--limit-max-requests", "10", "--port", "0",
                       "--no-access-log") as server:
        server.wait_listening()
        served: dict[int, int] = {}
        for _ in range(45):  # every request answered, across worker restarts
            pid = http_get_json(server.host, server.port)["pid"]
            served[pid] = served.get(pid, 0) + 1
        assert len(served) >= 4
        assert max(served.values()) <= 11  # 10 plus up to 10% jitter
        assert server.count("reached its request limit") >= 3


def test_unresponsive_worker_is_replaced():
    with ServerProcess(APP, "--workers", "1", "--limit-max-requests", "100000", "--timeout-worker-healthcheck", "1",
                       "--port", "0", "--no-access-log") as server:
        server.wait_listening()
        (stuck,) = server.worker_pids()
        blocker = threading.Thread(target=lambda: _ignore_errors(http_get, server.host, server.port, "/block?s=30"))
        blocker.start()
        server.wait_for(rf"Worker {stuck} missed its health check", timeout=10)
        server.wait_for(r"Worker (\d+) ready", count=2)
        assert http_get_json(server.host, server.port)["pid"] != stuck
        blocker.join(10)


def _ignore_errors(func, *args):
    try:
        func(*args)
    except OSError:
        pass


def test_worker_failing_at_startup_backs_off():
    with ServerProcess("tests.support.apps:failing_app", "--workers", "2", "--port", "0") as server:
        server.wait_for(r"before it was ready; next start in 1\.0s", timeout=10)
        # two workers fail at once, then one start per back-off step: no busy restart loop
        assert server.count("before it was ready") <= 4
        server.signal(signal.SIGTERM)
        assert server.wait_exit(10) == 0


def test_reload_with_workers_is_a_clear_error():
    with ServerProcess(APP, "--workers", "2", "--reload") as server:
        assert server.wait_exit() != 0
        server.wait_for("<EOF>")
        lines = [line for line in server.lines if line != "<EOF>"]
        assert len(lines) == 1 and lines[0].startswith("aioserve: error:") and "--reload" in lines[0], lines


def test_graceful_shutdown_timeout_bounds_the_stop():
    with ServerProcess(APP, "--workers", "2", "--port", "0", "--timeout-graceful-shutdown", "1") as server:
        server.wait_listening()
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(_ignore_errors, http_get, server.host, server.port, "/slow?s=60")
            server.wait_for("slow request started")
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            assert server.wait_exit(10) == 0
            assert time.monotonic() - started < 5
            future.result(timeout=10)
        assert server.count("Graceful shutdown timed out") == 1


def test_workers_exit_when_the_supervisor_is_killed():
    import os
    import select

    with ServerProcess(APP, "--workers", "2", "--port", "0") as server:
        server.wait_listening()
        pids = server.worker_pids()
        # A pidfd becomes readable when its process exits: wait on that, not on a polling loop.
        pidfds = {}
        for pid in pids:
            try:
                pidfds[os.pidfd_open(pid)] = pid
            except ProcessLookupError:
                pass  # already gone
        server.signal(signal.SIGKILL)
        server.wait_exit()
        deadline = time.monotonic() + 10
        try:
            while pidfds and time.monotonic() < deadline:
                ready, _, _ = select.select(list(pidfds), [], [], max(0.0, deadline - time.monotonic()))
                for fd in ready:
                    pidfds.pop(fd)
                    os.close(fd)
        finally:
            for fd in pidfds:
                os.close(fd)
        alive = set(pidfds.values())
        assert not alive, "workers outlived their supervisor"


@pytest.mark.parametrize("flags,message", [
    (["--workers", "0"], "--workers must be an integer >= 1"),
    (["--limit-max-requests", "0"], "--limit-max-requests must be an integer >= 1"),
    (["--timeout-worker-healthcheck", "0"], "--timeout-worker-healthcheck must be a number > 0"),
])
def test_bad_worker_settings_are_one_line(flags, message):
    with ServerProcess(APP, *flags) as server:
        assert server.wait_exit() != 0
        server.wait_for("<EOF>")
        assert len(server.lines) == 2 and server.lines[0].startswith(f"aioserve: error: {message}")
