"""--reload: a changed Python file restarts the server, with watchfiles and with the polling fallback."""
from __future__ import annotations

import os

import pytest

from aioserve.reload import PollingWatcher
from tests.support import LISTENING, ServerProcess, http_get

MODULE = '''\
from aioserve import App

app = App()


@app.get("/")
async def index(request):
    return "{version}"
'''


def test_polling_watcher_sees_changes_additions_and_removals(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("not python\n")
    (tmp_path / ".hidden").mkdir()
    watcher = PollingWatcher([str(tmp_path)])
    assert watcher.changes() == []
    (tmp_path / "a.py").write_text("x = 22\n")
    (tmp_path / "b.py").write_text("")
    (tmp_path / "notes.txt").write_text("changed\n")
    (tmp_path / ".hidden" / "c.py").write_text("")
    assert watcher.changes() == [str(tmp_path / "a.py"), str(tmp_path / "b.py")]
    os.unlink(tmp_path / "b.py")
    assert watcher.changes() == [str(tmp_path / "b.py")]


def answers_after_start(server: ServerProcess, starts: int, body: bytes) -> None:
    """Wait for the ``starts``-th server process to say it listens, then ask once: the reloader stops
    the old process before starting the new one, so the answer comes from the new code."""
    server.wait_for(LISTENING.pattern, timeout=15, count=starts)
    status, _, got = http_get(server.host, server.port, "/", timeout=5)
    assert (status, got) == (200, body), server.output


@pytest.mark.parametrize("watcher", ["watchfiles", "polling"])
def test_reload_restarts_on_change(tmp_path, watcher):
    if watcher == "watchfiles":
        pytest.importorskip("watchfiles")
    src = tmp_path / "src"
    src.mkdir()
    (src / "reload_target.py").write_text(MODULE.format(version="v1"))
    env = {"PYTHONPATH": str(src)}
    if watcher == "polling":  # hide watchfiles: a package that refuses to import shadows it
        shim = tmp_path / "shim" / "watchfiles"
        shim.mkdir(parents=True)
        (shim / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "shim"), str(src)])
    with ServerProcess("reload_target:app", "--port", "0", "--reload", "--reload-dir", str(src),
                       "--reload-delay", "0.1", env=env) as server:
        server.wait_listening()
        assert server.count(r"\(watchfiles\)" if watcher == "watchfiles" else r"\(polling every") == 1
        answers_after_start(server, 1, b"v1")
        first_port = server.port
        (src / "reload_target.py").write_text(MODULE.format(version="v2"))
        server.wait_for("Detected a change in")
        answers_after_start(server, 2, b"v2")
        assert server.port == first_port  # the reloader keeps the socket: same port, nothing refused
        (src / "notes.txt").write_text("not python")
        (src / "reload_target.py").write_text(MODULE.format(version="v3"))
        answers_after_start(server, 3, b"v3")
        assert server.count("Detected a change in") == 2
        server.stop()
        assert server.proc.returncode == 0


def test_reload_dir_must_exist(tmp_path):
    with ServerProcess("tests.support.apps:ops_app", "--reload", "--reload-dir", str(tmp_path / "nope")) as server:
        assert server.wait_exit() != 0
        server.wait_for("<EOF>")
        assert server.lines[0].startswith("aioserve: error: --reload-dir") and len(server.lines) == 2


def test_app_run_reload_rejects_workers():
    import aioserve
    from tests.support.apps import ops_app as app

    with pytest.raises(ValueError, match="--reload cannot be combined with --workers"):
        aioserve.Config.from_settings(reload=True, workers=2)
    with pytest.raises(ValueError):
        app.run(reload=True, workers=3)


def test_app_run_reload_reruns_the_script(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "reload_target.py").write_text(MODULE.format(version="v1"))
    script = src / "serve_me.py"
    script.write_text(
        "from reload_target import app\n"
        "if __name__ == '__main__':\n"
        f"    app.run(port=0, reload=True, reload_dirs=[{str(src)!r}], reload_delay=0.1)\n")
    import sys

    with ServerProcess(command=[sys.executable, str(script)], env={"PYTHONPATH": str(src)}) as server:
        server.wait_listening()
        answers_after_start(server, 1, b"v1")
        (src / "reload_target.py").write_text(MODULE.format(version="v2"))
        answers_after_start(server, 2, b"v2")
