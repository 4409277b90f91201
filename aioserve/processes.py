"""Running an app as a program: a loop of its own, signals, worker processes and reloading.

``run()`` (and ``App.run()``, which the package wires to it through ``app.set_runner``) blocks until
SIGINT or SIGTERM, then shuts down gracefully. ``reload=True`` watches the code and restarts a child
process (``reload.py``); ``workers > 1`` or ``limit_max_requests`` runs a supervisor with worker
processes (``supervisor.py``); otherwise it serves in this process (``server.py``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any, Callable

from . import reload, supervisor
from .accept import warn_out_of_resources
from .app import App, set_runner
from .config import Config
from .logconfig import ConfigError
from .logconfig import configure_logging as _configure_logging
from .router import Router
from .server import Server, loop_factory, loop_name, servable
from .sockets import BindError, describe
from .tls import make_ssl_context

logger = logging.getLogger("aioserve")

__all__ = ["configure_logging", "run"]


def configure_logging(level: str | None, log_config: str | None = None) -> None:
    """Give aioserve's loggers a stderr handler unless the application configured logging already."""
    try:
        _configure_logging(level, log_config)
    except ConfigError as exc:
        raise SystemExit(f"aioserve: error: {exc}") from None


def run(app: Any, **settings: Any) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully. Blocks.

    ``app`` is an App, a Router or an ASGI 3 callable; ``factory=`` and ``interface=`` mean what the
    CLI's ``--factory`` and ``--interface`` do (``server.servable()``). ``reload=True`` watches the code
    and restarts a child process (``reload.py``); ``workers > 1`` or ``limit_max_requests`` runs a
    supervisor with worker processes (``supervisor.py``).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run() (app.run()) blocks and runs its own event loop, and one is running already: "
                           "inside async code use `server = await aioserve.serve(app, ...)` instead")
    config = Config.from_settings(**settings)
    reloader = config.reload and not reload.is_reload_child()
    # Once, here: workers fork with it, as the CLI's target. The reloader only checks it (a bad target
    # is reported before any child starts): a factory runs in the child that serves, never here.
    app = servable(app, config, call_factory=not reloader)
    configure_logging(config.log_level, config.log_config)
    if reloader:
        reload.run_reloader(config)
        return
    reload.adopt_reload_socket(config)
    try:
        make_ssl_context(config)  # check the files once, before anything starts
    except ValueError as exc:
        raise SystemExit(f"aioserve: error: {exc}") from None
    if config.workers > 1 or config.limit_max_requests:
        supervisor.run_supervisor(app, config)
        return
    with asyncio.Runner(loop_factory=loop_factory(config.loop)) as runner:
        runner.run(_serve_until_signalled(app, config))


def _capacity_errors_as_warnings(loop: asyncio.AbstractEventLoop) -> None:
    """accept() failing for lack of descriptors or memory is a capacity problem, not a crash.

    The loop already backs off and keeps serving (asyncio pauses accepting for a second; libuv drops
    the queued connection); this turns its per-retry ERROR traceback into one warning every 10 s.
    """
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            warn_out_of_resources(context.get("exception"))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


RELOADER_CHECK_EVERY = 0.5  # seconds between checks that a --reload child's reloader is alive


def _watch_reloader(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Callable[[], None] | None:
    """In a ``--reload`` child: shut down gracefully once the reloader is gone (killed, so it could not
    stop us), as workers do when their supervisor dies, instead of serving on as an orphan."""
    parent = reload.reloader_pid() if reload.is_reload_child() else None
    if parent is None:
        return None
    handle: asyncio.TimerHandle | None = None

    def check() -> None:
        nonlocal handle
        if os.getppid() != parent:  # reparented: the reloader died
            if not stop.is_set():
                logger.warning("Server process %d lost its reloader; shutting down", os.getpid())
                stop.set()
            return
        handle = loop.call_later(RELOADER_CHECK_EVERY, check)

    def cancel() -> None:
        if handle is not None:
            handle.cancel()

    check()
    return cancel


async def _serve_until_signalled(app: App | Router, config: Config) -> None:
    loop = asyncio.get_running_loop()
    _capacity_errors_as_warnings(loop)
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            logger.info("Received %s, shutting down gracefully", signal.Signals(signum).name)
            stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
            pass
    server = Server(app, config)
    try:
        started = await supervisor.start_unless_stopped(server, stop, config)
    except BindError as exc:
        raise SystemExit(f"aioserve: error: {exc.strerror or exc}") from None
    except OSError as exc:
        raise SystemExit(f"aioserve: error: cannot listen on {describe(config)}: {exc.strerror or exc}") from None
    if not started:  # SIGTERM/SIGINT while the start-up hooks ran: nothing was served
        logger.info("Stopped during start-up")
        return
    logger.info("Listening on %s (loop: %s, workers: 1, pid: %d)", server.url, loop_name(loop), os.getpid())
    unwatch = _watch_reloader(loop, stop)
    await stop.wait()
    if unwatch is not None:
        unwatch()
    await server.shutdown(config.timeout_graceful_shutdown)
    logger.info("Stopped")


set_runner(run)
