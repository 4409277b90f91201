"""--reload: a child server whose reloader was killed (SIGKILL: no chance to stop it) exits too,
instead of serving on as an orphan nobody will restart or stop."""
from __future__ import annotations

import os
import re
import signal
import sys
import time

import pytest

from tests.support import LISTENING, ServerProcess, http_get

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX parent and child processes")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return bool(re.search(r"^State:\s+Z", f.read(), re.M))  # exited, not yet reaped
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_reload_child_exits_when_the_reloader_is_killed(tmp_path):
    with ServerProcess("tests.support.apps:ops_app", "--port", "0", "--reload", "--reload-dir", str(tmp_path),
                       "--reload-delay", "0.1") as server:
        server.wait_listening()
        child = int(server.wait_for(LISTENING.pattern + r".*pid: (\d+)")[0].group(5))
        assert child != server.proc.pid
        assert http_get(server.host, server.port, "/")[0] == 200
        server.proc.kill()  # the reloader dies without a word to its child
        server.proc.wait(10)
        try:
            deadline = time.monotonic() + 10
            for _ in range(200):
                if _gone(child) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # the child notices its parent's death on a timer: nothing to await
            assert _gone(child), "the reload child still runs after its reloader was killed"
        finally:
            if not _gone(child):  # an orphan would hold the test's pipes open: stop it (it is ours)
                os.kill(child, signal.SIGKILL)
        server.wait_for("lost its reloader")
