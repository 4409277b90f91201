"""Listening sockets made before any event loop exists.

The supervisor and the reloader bind here, once, and hand the socket to the processes that serve
(workers inherit it across ``fork``, a reloaded child gets its descriptor). Because the parent keeps
the socket open while children come and go, connections that arrive between two children wait in the
kernel's accept queue instead of being refused.
"""
from __future__ import annotations

import errno
import os
import socket
import stat

from .config import Config

#: Mode of a Unix domain socket file. Any local user may connect, as with uvicorn; restrict access
#: with the permissions of the directory that holds the socket (e.g. /run/myapp, 0750, group www-data).
UDS_MODE = 0o666


class BindError(OSError):
    """Listening failed for a reason the user can fix; the message names the address."""


def describe(config: Config) -> str:
    if config.uds:
        return config.uds
    if config.fd is not None:
        return f"fd {config.fd}"
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"{host}:{config.port}"


def bind_socket(config: Config) -> socket.socket:
    """A listening socket for ``config`` (``fd``, ``uds`` or ``host``/``port``)."""
    try:
        if config.fd is not None:
            sock = socket.socket(fileno=config.fd)
            if sock.type != socket.SOCK_STREAM:
                raise BindError(f"fd {config.fd} is not a stream socket")
            sock.listen(config.backlog)
            return sock
        if config.uds:
            return bind_unix(config.uds, config.backlog)
        infos = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        return socket.create_server(address, family=family, backlog=config.backlog)
    except BindError:
        raise
    except OSError as exc:
        raise BindError(exc.errno, f"cannot listen on {describe(config)}: {exc.strerror or exc}") from None


def bind_unix(path: str, backlog: int) -> socket.socket:
    """Bind a Unix socket at ``path``, replacing a stale socket file but never a live server's."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise BindError(errno.EEXIST, f"cannot listen on {path}: the path exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:  # nobody listening: left behind by a process that died
            os.unlink(path)
        else:
            raise BindError(errno.EADDRINUSE, f"cannot listen on {path}: another server is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, UDS_MODE)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, f"cannot listen on {path}: {exc.strerror or exc}") from None
    return sock


def remove_unix(path: str) -> None:
    """Unlink the file of a Unix socket we bound (inherited ones belong to whoever made them)."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def socket_url(sock: socket.socket, scheme: str = "http") -> str:
    """The address a listening socket serves, as a user would type it."""
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
