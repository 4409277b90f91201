"""Worker processes under one supervisor (``workers > 1`` or ``limit_max_requests``).

How it works, and why:

- The supervisor binds the listening socket once and starts workers with ``fork``; every worker
  inherits that one socket and runs its own event loop over it. One shared accept queue (as gunicorn
  and uvicorn's multiprocess mode do) means a worker that exits, dies or is being replaced never
  strands connections: they wait in the queue for the others. With ``SO_REUSEPORT`` each worker would
  own a queue, and connections queued on a worker that closes are reset. ``fork`` rather than
  ``spawn`` because the app object (even one built in ``__main__`` with closures, as ``app.run(workers=4)``
  allows) is inherited as is, with no pickling and no re-import; the supervisor forks before it has
  an event loop or threads, so none are copied half-way. ``fork`` also rules out Windows.
- Each worker has a pipe to the supervisor. It writes ``R`` once it listens (start-up hooks done),
  ``h`` every heartbeat from its event loop, and ``X`` when it retires at its request limit. A ready
  worker silent for ``timeout_worker_healthcheck`` seconds has a stuck loop and is killed.
- A worker that exits is replaced. One that exits before it was ready is a start-up failure: the next
  start waits 0.5 s, 1 s, 2 s ... up to 10 s, so a broken deployment does not spin.
- Signals to the supervisor: SIGTERM/SIGINT stop every worker gracefully (SIGKILL after the graceful
  timeout plus a margin); SIGHUP replaces workers one by one, each old one stopped only once its
  replacement is ready; SIGTTIN/SIGTTOU add or remove one worker.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import contextlib
import glob
import os
import shutil
import tempfile
import random
import signal
import socket
import sys
import time
from collections import deque
from multiprocessing.connection import wait as wait_for
from typing import TYPE_CHECKING, Any

from . import metrics
from .asgi import LifespanError
from .config import Config
from .server import Server, loop_factory
from .sockets import BindError, bind_socket, remove_unix, socket_url

if TYPE_CHECKING:
    from .app import App
    from .router import Router

logger = logging.getLogger("aioserve")

READY, BEAT, RETIRING = b"R", b"h", b"X"
KILL_MARGIN = 5.0  # after the graceful timeout, before SIGKILL
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 10.0
# getattr: this module is imported on Windows too, where these signals (and fork) do not exist.
STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGQUIT", None)) if s)
CONTROL_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGHUP", "SIGTTIN", "SIGTTOU")) if s)


class Worker:
    """The supervisor's view of one worker process."""

    __slots__ = ("process", "pid", "fd", "started", "ready", "last_seen", "retiring", "pending", "kill_at", "killed")

    def __init__(self, process: Any, fd: int) -> None:
        self.process = process
        self.pid: int = process.pid
        self.fd: int | None = fd  # read end of the worker's pipe
        self.started = self.last_seen = time.monotonic()
        self.ready = False
        self.retiring = False  # leaving: not counted towards the target
        self.pending = False  # SIGHUP: to be stopped once a replacement is ready
        self.kill_at: float | None = None  # SIGKILL after this (set when asked to stop)
        self.killed = False

    def stop(self, timeout: float | None) -> None:
        """Ask for a graceful exit; the supervisor kills it if it outstays ``timeout``."""
        self.retiring = True
        self.pending = False
        self.kill_at = time.monotonic() + (timeout if timeout is not None else 3600.0) + KILL_MARGIN
        _kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        self.killed = True
        _kill(self.pid, signal.SIGKILL)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Supervisor:
    def __init__(self, app: App | Router, config: Config, sock: socket.socket) -> None:
        self.app = app
        self.config = config
        self.sock = sock
        self.target = config.workers
        self.workers: dict[int, Worker] = {}
        self.signals: deque[int] = deque()
        self.failures = 0  # consecutive start-up failures
        self.next_start = 0.0  # back-off: no worker starts before this (monotonic)
        self.rolling: deque[int] = deque()  # SIGHUP: pids of the workers still to replace
        self.stopping = False
        self.announced = False
        self.context = multiprocessing.get_context("fork")
        self._wake_r, self._wake_w = os.pipe()
        self.metrics_dir: str | None = None  # the workers' metrics snapshots: an exited one's are folded

    # -- main loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS + CONTROL_SIGNALS}
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        try:
            while not (self.stopping and not self.workers):
                now = time.monotonic()
                while self.signals:
                    self._handle_signal(self.signals.popleft())
                if not self.stopping:
                    self._reconcile(now)
                self._check_health(now)
                self._wait(self._timeout(now))
        finally:
            for worker in self.workers.values():
                worker.kill()
            for worker in self.workers.values():
                worker.process.join(5)
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)
        logger.info("Stopped")

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def _timeout(self, now: float) -> float:
        if not self.stopping and self._active() < self.target:
            return max(0.0, min(0.5, self.next_start - now))
        return 0.5

    def _wait(self, timeout: float) -> None:
        fds: list[Any] = [self._wake_r]
        for worker in self.workers.values():
            fds.append(worker.process.sentinel)
            if worker.fd is not None:
                fds.append(worker.fd)
        ready = set(wait_for(fds, timeout))
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        for worker in list(self.workers.values()):
            if worker.fd is not None and worker.fd in ready:
                self._read_messages(worker)
            if worker.process.sentinel in ready:
                self._reap(worker)

    # -- events ------------------------------------------------------------------------------------
    def _handle_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum in STOP_SIGNALS:
            if self.stopping:
                logger.warning("Received %s again, killing the workers", name)
                for worker in self.workers.values():
                    worker.kill()
                return
            logger.info("Received %s, stopping %d worker(s) gracefully", name, len(self.workers))
            self.stopping = True
            for worker in self.workers.values():
                worker.stop(self.config.timeout_graceful_shutdown)
            # No worker starts from now on: without our copy, the socket stops listening once the
            # workers close theirs (at the start of their drain), so new connections are refused at
            # once instead of waiting in a queue nobody accepts from, to be reset when we exit.
            self.sock.close()
        elif self.stopping:
            return
        elif signum == signal.SIGHUP:
            logger.info("Received SIGHUP, replacing the workers one by one")
            self.rolling = deque(w.pid for w in self._by_age() if not w.retiring)
        elif signum == signal.SIGTTIN:
            self.target += 1
            logger.info("Received SIGTTIN, workers: %d", self.target)
        elif signum == signal.SIGTTOU:
            if self.target > 1:
                self.target -= 1
            logger.info("Received SIGTTOU, workers: %d", self.target)

    def _read_messages(self, worker: Worker) -> None:
        assert worker.fd is not None
        try:
            data = os.read(worker.fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker closed its end: it is exiting; the sentinel says when it is gone
            os.close(worker.fd)
            worker.fd = None
            return
        worker.last_seen = time.monotonic()
        if READY in data and not worker.ready:
            worker.ready = True
            self.failures = 0
            logger.info("Worker %d ready", worker.pid)
            self._stop_one_pending()
            self._announce()
        if RETIRING in data and (worker.pending or not worker.retiring):
            logger.info("Worker %d reached its request limit; starting a replacement", worker.pid)
            worker.retiring = True
            worker.pending = False  # leaving anyway: SIGHUP moves on to the next one
            worker.kill_at = time.monotonic() + (self.config.timeout_graceful_shutdown or 3600.0) + KILL_MARGIN

    def _reap(self, worker: Worker) -> None:
        worker.process.join(1)
        del self.workers[worker.pid]
        if worker.fd is not None:
            os.close(worker.fd)
            worker.fd = None
        if self.metrics_dir is not None:  # it can write no more: keep its counts in one file, drop its own
            try:
                metrics.SnapshotDir.retire(self.metrics_dir, worker.pid)
            except (OSError, ValueError) as exc:
                logger.warning("Could not fold the metrics of worker %d: %s", worker.pid, exc)
        code = worker.process.exitcode
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"code {code}"
        if self.stopping or (worker.retiring and not worker.pending):
            logger.info("Worker %d exited (%s)", worker.pid, how)
        elif not worker.ready:
            self.failures += 1
            delay = min(BACKOFF_FIRST * 2 ** (self.failures - 1), BACKOFF_MAX)
            self.next_start = time.monotonic() + delay
            logger.error("Worker %d exited (%s) before it was ready; next start in %.1fs", worker.pid, how, delay)
        else:
            logger.warning("Worker %d died (%s); replacing it", worker.pid, how)

    # -- keeping the right workers alive -----------------------------------------------------------
    def _active(self) -> int:
        return sum(1 for w in self.workers.values() if not w.retiring)

    def _by_age(self) -> list[Worker]:
        return sorted(self.workers.values(), key=lambda w: w.started)

    def _reconcile(self, now: float) -> None:
        # SIGHUP: mark the next old worker; it keeps serving until its replacement is ready.
        if self.rolling and not any(w.pending for w in self.workers.values()):
            while self.rolling:
                old = self.workers.get(self.rolling.popleft())
                if old is not None and not old.retiring:
                    old.retiring = old.pending = True
                    break
        active = self._active()
        while active < self.target and now >= self.next_start:
            self._start_worker()
            active += 1
        if active > self.target:
            for worker in self._by_age()[: active - self.target]:
                if not worker.retiring:
                    logger.info("Stopping worker %d", worker.pid)
                    worker.stop(self.config.timeout_graceful_shutdown)

    def _stop_one_pending(self) -> None:
        for worker in self._by_age():
            if worker.pending:
                logger.info("Stopping worker %d (replaced)", worker.pid)
                worker.stop(self.config.timeout_graceful_shutdown)
                return

    def _check_health(self, now: float) -> None:
        timeout = self.config.timeout_worker_healthcheck
        for worker in self.workers.values():
            if worker.killed:
                continue
            if worker.kill_at is not None and now > worker.kill_at:
                logger.warning("Worker %d did not stop in time; killing it", worker.pid)
                worker.kill()
            elif worker.ready and now - worker.last_seen > timeout:
                logger.error("Worker %d missed its health check (%.0fs without a heartbeat); killing it",
                             worker.pid, now - worker.last_seen)
                worker.kill()

    def _start_worker(self) -> None:
        limit = self.config.limit_max_requests
        if limit:  # jitter drawn here: forked workers share the random state
            limit += random.randint(0, limit // 10)
        read_end, write_end = os.pipe()
        process = self.context.Process(
            target=worker_main, args=(self.app, self.config, self.sock, write_end, limit), name="aioserve-worker")
        process.start()
        os.close(write_end)
        os.set_blocking(read_end, False)
        self.workers[process.pid] = Worker(process, read_end)

    def _announce(self) -> None:
        if self.announced or self.stopping or sum(1 for w in self.workers.values() if w.ready and not w.retiring) < self.target:
            return
        self.announced = True
        loop = "uvloop" if loop_factory(self.config.loop) is not asyncio.new_event_loop else "asyncio"
        scheme = "https" if self.config.ssl_certfile else "http"
        logger.info("Listening on %s (loop: %s, workers: %d, pid: %d)",
                    socket_url(self.sock, scheme), loop, self.target, os.getpid())


def run_supervisor(app: App | Router, config: Config) -> None:
    """Bind, start the workers, and supervise them until SIGTERM/SIGINT. Blocks."""
    if not hasattr(os, "fork"):
        raise SystemExit("aioserve: error: --workers > 1 needs fork (Linux, macOS); run one process per port instead")
    try:
        sock = bind_socket(config)
    except BindError as exc:
        raise SystemExit(f"aioserve: error: {exc.strerror or exc}") from None
    metrics_dir, made = _shared_metrics_dir(app, config)
    supervisor = Supervisor(app, config, sock)
    supervisor.metrics_dir = metrics_dir
    try:
        supervisor.run()
    finally:
        if config.uds and config.fd is None:
            remove_unix(config.uds)
        sock.close()
        if made:
            shutil.rmtree(metrics_dir, ignore_errors=True)  # type: ignore[arg-type]


def _shared_metrics_dir(app: App | Router, config: Config) -> tuple[str | None, bool]:
    """With /metrics on, every worker writes its numbers to one fresh directory that /metrics merges.

    Returns the directory, and whether the supervisor made it (and so removes it at exit); a directory
    the user chose (``enable_metrics(multiprocess_dir=...)`` or ``AIOSERVE_METRICS_DIR``) is emptied of
    a previous run's files instead, so its dead workers do not count.
    """
    if not getattr(app, "metrics_path", None) and not config.metrics:
        return None, False
    chosen = getattr(app, "metrics_dir", None) or os.environ.get("AIOSERVE_METRICS_DIR")
    if chosen:
        stale = glob.glob(os.path.join(chosen, "worker-*.json"))
        stale += [os.path.join(chosen, name) for name in (metrics.RETIRED, metrics.SERVED)]
        for path in stale:
            with contextlib.suppress(OSError):
                os.unlink(path)
        os.environ["AIOSERVE_METRICS_DIR"] = chosen
        return chosen, False
    made = tempfile.mkdtemp(prefix="aioserve-metrics-")
    os.environ["AIOSERVE_METRICS_DIR"] = made  # inherited by the forked workers
    return made, True


# -- inside a worker ----------------------------------------------------------------------------------
async def start_unless_stopped(server: Server, stop: asyncio.Event, config: Config) -> bool:
    """Run the start-up (hooks, lifespan); False when ``stop`` came first. A start-up hook may wait long
    (a database that does not answer): nothing is served yet, so SIGTERM/SIGINT cancels it at once rather
    than after it. The start-up's own error is raised."""
    starting = asyncio.ensure_future(server.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():
        starting.cancel()
        await asyncio.wait((starting,))
        if not starting.cancelled() and starting.exception() is None:  # a hook swallowed the cancellation
            await server.shutdown(config.timeout_graceful_shutdown)
        return False
    starting.result()
    return True


async def _start(server: Server, stop: asyncio.Event, config: Config) -> bool:
    """A worker's start-up; False when stopped during it. One that fails exits with code 3, which the
    supervisor backs off on."""
    try:
        started = await start_unless_stopped(server, stop, config)
    except LifespanError as error:  # the app said why: its message is the line
        logger.error("Worker %d failed to start: %s", os.getpid(), error)
        sys.exit(3)
    except Exception as error:
        logger.error("Worker %d failed to start", os.getpid(), exc_info=error)
        sys.exit(3)
    if not started:
        logger.info("Worker %d stopped during start-up", os.getpid())
    return started


def worker_main(app: App | Router, config: Config, sock: socket.socket, fd: int, limit: int | None) -> None:
    """Entry point of a forked worker: its own loop, the inherited socket, the pipe to the supervisor."""
    signal.set_wakeup_fd(-1)
    for sig in CONTROL_SIGNALS:  # meant for the supervisor (a terminal's SIGHUP included)
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(signal, "SIGQUIT"):
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    os.set_blocking(fd, False)
    try:
        with asyncio.Runner(loop_factory=loop_factory(config.loop)) as runner:
            runner.run(_serve_worker(app, config, sock, fd, limit))
    except KeyboardInterrupt:
        pass
    finally:
        os.close(fd)


async def _serve_worker(app: App | Router, config: Config, sock: socket.socket, fd: int, limit: int | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    parent = os.getppid()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = Server(app, config, sock=sock)
    if not await _start(server, stop, config):
        return

    def send(message: bytes) -> None:
        try:
            os.write(fd, message)
        except BlockingIOError:
            pass
        except OSError:  # the supervisor is gone: nobody would replace or stop us
            if not stop.is_set():
                logger.warning("Worker %d lost its supervisor; shutting down", os.getpid())
                stop.set()

    def retire() -> None:
        logger.info("Worker %d served %d requests; retiring", os.getpid(), limit)
        send(RETIRING)
        stop.set()

    if limit:
        server.state.limit_requests(limit, retire)  # type: ignore[union-attr]
    interval = min(1.0, config.timeout_worker_healthcheck / 4)
    beat: asyncio.TimerHandle | None = None

    def heartbeat() -> None:
        nonlocal beat
        if os.getppid() != parent and not stop.is_set():  # reparented: the supervisor died
            logger.warning("Worker %d lost its supervisor; shutting down", os.getpid())
            stop.set()
        send(BEAT)
        beat = loop.call_later(interval, heartbeat)

    send(READY)
    heartbeat()
    await stop.wait()
    await server.shutdown(config.timeout_graceful_shutdown)
    if beat is not None:
        beat.cancel()
