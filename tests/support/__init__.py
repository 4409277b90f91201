"""Everything the tests share, one name per concept.

- a server in this process: ``running(app, **settings)`` (``server.py``), with ``http_client`` (httpx2);
- a server in a subprocess: ``ServerProcess`` (``process.py``), which knows the "Listening on" line;
- the wire: ``RawConnection`` / ``raw_connection``, ``HostileClient``, ``request_bytes``, ``RecordingTransport``
  (a connection fed by hand, read by read) and the one
  response parser ``parse_response`` (``wire.py``);
- polling: ``wait_until`` returns once a condition holds, or raises ``NotReached`` (``timing.py``);
- logs: ``capture_logs``, ``access_records`` (also a fixture), ``loop_exceptions`` (``logs.py``); memory: ``RssSampler`` (``memory.py``);
- apps the tests serve: ``hostile_app()``, ``ops_app``, ... (``apps.py``, served by subprocesses as
  ``tests.support.apps:NAME``).
"""

from .logs import LogCapture, access_records, capture_logs, describe_contexts, loop_exceptions
from .memory import RssSampler, status_kb
from .process import (
    LISTENING,
    REPO_ROOT,
    ServerProcess,
    deployment_snippet,
    free_port,
    http_get,
    http_get_json,
    run_cli,
    stop_process,
    wait_port,
)
from .server import base_url, current_loop_name, http_client, running, sync_client, upgraded_session
from .timing import NotReached, Timed, wait_until
from .wire import (
    HOST,
    READ_TIMEOUT,
    HostileClient,
    ProtocolViolation,
    RawConnection,
    RawResponse,
    RecordingTransport,
    exchange,
    parse_response,
    parse_responses,
    raw_connection,
    raw_get,
    request_bytes,
)

__all__ = [
    "HOST", "LISTENING", "READ_TIMEOUT", "REPO_ROOT",
    "HostileClient", "LogCapture", "NotReached", "ProtocolViolation", "RawConnection", "RawResponse", "RecordingTransport",
    "RssSampler", "ServerProcess", "Timed",
    "access_records", "base_url", "capture_logs", "current_loop_name", "deployment_snippet", "describe_contexts", "exchange",
    "free_port", "http_client", "http_get", "http_get_json", "loop_exceptions", "parse_response",
    "parse_responses", "raw_connection", "raw_get", "request_bytes", "run_cli", "running", "status_kb",
    "stop_process", "sync_client", "upgraded_session", "wait_port", "wait_until",
]
