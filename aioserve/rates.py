"""Minimum data rates (``min_request_body_rate``, ``min_response_rate``), as Kestrel enforces them.

An inactivity timeout alone lets a client hold a connection for ever by sending (or reading) one
byte just before it expires. A ``MinRate`` instead compares the bytes moved with the time spent,
averaged once a grace period is over. Its clock runs only while the server waits on the client (a
body while reading is not paused, a response while the transport is paused for writing), so a
handler busy elsewhere is never the client's fault. Pure arithmetic on times the caller passes in,
so it is tested with a fake clock; the connection asks it on the server's one timer (timers.py).
"""
from __future__ import annotations

import sys
from typing import Any

INF = float("inf")

if sys.platform == "linux":
    import fcntl
    import socket
    import struct
    import termios

    _TCP_INFO = getattr(socket, "TCP_INFO", 11)
    _ACKED_AT = 120  # offset of tcpi_bytes_acked (u64, Linux 4.1+) in struct tcp_info

    def _kernel_queue(fd: int) -> int:
        return struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]  # SIOCOUTQ

    def _acked(sock: Any) -> int | None:
        """Bytes of ``sock``'s stream the client has acknowledged, or None where the kernel cannot say."""
        if sock.family != socket.AF_INET and sock.family != socket.AF_INET6:
            return None
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _ACKED_AT + 8)
        if len(info) < _ACKED_AT + 8:  # a kernel older than 4.1
            return None
        return struct.unpack_from("Q", info, _ACKED_AT)[0]
else:  # no portable way to ask: only the transport's own buffer is seen
    def _kernel_queue(fd: int) -> int:
        return 0

    def _acked(sock: Any) -> int | None:
        return None


def unsent(transport: Any) -> int:
    """Bytes written to ``transport`` that the client has not taken yet, as a count whose changes are what
    matter: the callers compare two readings, and a fall is bytes the client took.

    The transport's buffer alone stands still while the kernel's send queue (megabytes, autotuned)
    drains to a client reading steadily, so it would make a slow but live reader look stalled. On Linux
    over TCP the count is minus the bytes the client acknowledged (``TCP_INFO``), which sees every
    buffer on the way: a TLS transport's size leaves out the TCP transport under it, which takes its
    encrypted bytes half a megabyte at a time and feeds the kernel's queue as the client reads, so
    buffer plus queue stood still for seconds while a slow link took hundreds of kilobytes. Elsewhere
    (a Unix socket, another system) it is the transport's buffer plus, on Linux, the socket's queue."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            acked = _acked(sock)
            if acked is not None:
                return -acked
            return transport.get_write_buffer_size() + _kernel_queue(sock.fileno())
        except (OSError, ValueError):  # closed meanwhile
            pass
    return transport.get_write_buffer_size()


def waiting(transport: Any) -> int:
    """Bytes written to ``transport`` not yet acknowledged by the client where the kernel can say (its
    buffer plus, on Linux, the socket's send queue, sent but unacknowledged bytes included): 0 once
    everything has arrived. (A TLS transport's buffer leaves out the TCP transport under it, but that
    one keeps the kernel's queue from emptying while it holds bytes.)"""
    size = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            size += _kernel_queue(sock.fileno())
        except (OSError, ValueError):  # closed meanwhile
            pass
    return size


class MinRate:
    __slots__ = ("rate", "grace", "counted", "since", "base")

    def __init__(self, rate: float, grace: float) -> None:
        self.rate = rate  # bytes per second; > 0
        self.grace = grace  # seconds of counted time before the rate applies
        self.counted = 0.0  # counted time in finished spells
        self.since: float | None = None  # when the current spell began; None while the clock is stopped
        self.base = 0  # bytes already moved when this measure began (subtracted from what is passed in)

    def start(self, now: float, moved: int = 0, running: bool = True) -> None:
        """Begin a new measure; ``moved`` is the byte count so far (later counts are relative to it)."""
        self.counted = 0.0
        self.since = now if running else None
        self.base = moved

    def stop(self, now: float) -> None:
        """The server is no longer waiting on the client: time stops counting."""
        if self.since is not None:
            self.counted += now - self.since
            self.since = None

    def resume(self, now: float) -> None:
        if self.since is None:
            self.since = now

    def elapsed(self, now: float) -> float:
        since = self.since
        return self.counted if since is None else self.counted + now - since

    def missed(self, now: float, moved: int) -> bool:
        """Whether the client is below the rate: grace over, and fewer bytes than rate x counted time."""
        elapsed = self.elapsed(now)
        return elapsed >= self.grace and moved - self.base < self.rate * elapsed

    def due(self, now: float, moved: int) -> float:
        """The loop time at which ``missed`` turns true if no more bytes move; INF while stopped."""
        if self.since is None:
            return INF
        need = max(self.grace, (moved - self.base) / self.rate)
        return now + need - self.elapsed(now)
