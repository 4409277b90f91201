"""Logging set-up: standard ``logging``, every logger under ``aioserve``.

``aioserve`` (lifecycle, workers), ``aioserve.error`` (handler failures) and ``aioserve.access`` (one
line per request, written after the response with ``client``, ``method``, ``path``, ``status``,
``bytes`` and ``duration_ms`` as record attributes for structured formatters such as ``JsonFormatter``).

``--log-config FILE`` hands logging to the user: ``.json`` (and ``.yaml`` when PyYAML is installed)
files go to ``logging.config.dictConfig``, anything else to ``fileConfig`` (INI). Without one,
aioserve adds a stderr handler to its own logger only, unless the application configured logging.
"""
from __future__ import annotations

import json
import logging
import logging.config
import sys
from typing import Any

LOG_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
TRACE = 5  # below DEBUG, as in uvicorn
logging.addLevelName(TRACE, "TRACE")

# The attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class ConfigError(ValueError):
    """The log level or the log config file cannot be used; the message says why."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(level: str | None = None, log_config: str | None = None) -> None:
    """Apply ``log_config`` (if any), then ``level`` to the ``aioserve`` loggers (if given)."""
    if log_config:
        load_log_config(log_config)
    base = logging.getLogger("aioserve")
    if level is not None or not log_config:
        base.setLevel(_numeric(level or "info"))
    if log_config:
        return
    if not logging.getLogger().handlers and not base.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.aioserve_default = True  # type: ignore[attr-defined]  # accesslog.py may write to it directly
        base.addHandler(handler)
        base.propagate = False


def load_log_config(path: str) -> None:
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
            config.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(config)
        elif path.endswith((".yaml", ".yml")):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError:
                raise ConfigError(f"--log-config {path}: YAML needs PyYAML installed (pip install pyyaml), or use JSON") from None
            with open(path, encoding="utf-8") as f:
                config = yaml.safe_load(f)
            config.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(config)
        else:
            with open(path, encoding="utf-8"):  # a missing file must not read as an empty INI
                pass
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except ConfigError:
        raise
    except OSError as exc:
        raise ConfigError(f"cannot read --log-config {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # json, configparser and dictConfig errors
        detail = " ".join(str(exc).split())  # configparser's messages span lines: one line here
        raise ConfigError(f"invalid --log-config {path}: {type(exc).__name__}: {detail}") from None


def _numeric(level: str) -> int:
    if level.lower() == "trace":
        return TRACE
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ConfigError(f"unknown log level {level!r} (use {', '.join(LEVELS[:-1])})")
    return numeric
