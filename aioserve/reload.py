"""``--reload`` for development: restart the server when a Python file changes.

The reloader binds the listening socket itself and re-runs the same command line (``python -m
aioserve ...`` or the user's script calling ``app.run(reload=True)``) as a child process that serves
on the inherited descriptor. A fresh interpreter is the only way to really load changed code, and
because the reloader keeps the socket open, a request that arrives during a restart waits in the
accept queue instead of being refused.

Changes are detected with watchfiles when it is installed (OS notifications), otherwise by polling
file modification times every ``reload_delay`` seconds, which is cheap for a project's source tree.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Iterator

from .config import Config
from .sockets import BindError, bind_socket, remove_unix

logger = logging.getLogger("aioserve")

CHILD_ENV = "AIOSERVE_RELOAD_FD"  # set in the child: the descriptor of the reloader's socket
PARENT_ENV = "AIOSERVE_RELOAD_PARENT"  # set in the child: the reloader's pid
SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "venv", "build", "dist"}


def is_reload_child() -> bool:
    return CHILD_ENV in os.environ


def reloader_pid() -> int | None:
    """In a reloaded child: the pid of the reloader that started it (the child exits once it is gone)."""
    try:
        return int(os.environ[PARENT_ENV])
    except (KeyError, ValueError):
        return None


def adopt_reload_socket(config: Config) -> None:
    """In a reloaded child: serve on the reloader's socket instead of binding one."""
    fd = os.environ.get(CHILD_ENV)
    if fd is not None:
        config.fd = int(fd)
        config.uds = None


class PollingWatcher:
    """Finds changed, added and removed ``*.py`` files by comparing (mtime, size) snapshots."""

    def __init__(self, dirs: list[str]) -> None:
        self.dirs = dirs
        self.snapshot = self.scan()

    def scan(self) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        for root_dir in self.dirs:
            for root, dirs, files in os.walk(root_dir):
                dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS]
                for name in files:
                    if name.endswith(".py"):
                        path = os.path.join(root, name)
                        try:
                            st = os.stat(path)
                        except OSError:
                            continue
                        found[path] = (st.st_mtime_ns, st.st_size)
        return found

    def changes(self) -> list[str]:
        new = self.scan()
        old = self.snapshot
        self.snapshot = new
        return sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))


def watch(dirs: list[str], delay: float, stop: threading.Event) -> Iterator[list[str]]:
    """Yield the changed files, or ``[]`` about twice a second when nothing changed."""
    try:
        import watchfiles
    except ImportError:
        watcher = PollingWatcher(dirs)
        logger.info("Watching %s for changes (polling every %.2fs)", ", ".join(dirs), delay)
        while not stop.wait(delay):
            yield watcher.changes()
        return
    logger.info("Watching %s for changes (watchfiles)", ", ".join(dirs))
    for changes in watchfiles.watch(*dirs, watch_filter=watchfiles.PythonFilter(), stop_event=stop,
                                    yield_on_timeout=True, rust_timeout=500, raise_interrupt=False):
        yield sorted({path for _, path in changes})


def run_reloader(config: Config) -> None:
    """Serve from a child process; restart it on every change until SIGINT/SIGTERM. Blocks."""
    dirs = [os.path.abspath(d) for d in (config.reload_dirs or [os.getcwd()])]
    for d in dirs:
        if not os.path.isdir(d):
            raise SystemExit(f"aioserve: error: --reload-dir {d} is not a directory")
    try:
        sock = bind_socket(config)
    except BindError as exc:
        raise SystemExit(f"aioserve: error: {exc.strerror or exc}") from None
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    command = [sys.executable, *sys.orig_argv[1:]]
    env = dict(os.environ, **{CHILD_ENV: str(sock.fileno()), PARENT_ENV: str(os.getpid())})

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, pass_fds=(sock.fileno(),))

    child = start()
    exited_reported = False
    try:
        for changed in watch(dirs, config.reload_delay, stop):
            if stop.is_set():
                break
            if child.poll() is not None and not exited_reported:
                exited_reported = True
                logger.warning("Server process exited with code %s; waiting for a change to restart it", child.returncode)
            if changed:
                shown = ", ".join(os.path.relpath(p) for p in changed[:3]) + (" ..." if len(changed) > 3 else "")
                logger.info("Detected a change in %s; reloading", shown)
                _stop_child(child, config.timeout_graceful_shutdown)
                child = start()
                exited_reported = False
    finally:
        _stop_child(child, config.timeout_graceful_shutdown)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if config.uds and config.fd is None:
            remove_unix(config.uds)
        sock.close()


def _stop_child(child: subprocess.Popen[bytes], timeout: float | None) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait((timeout if timeout is not None else 30.0) + 5.0)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
