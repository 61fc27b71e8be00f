"""Logs of a running ``hostsdn up``: the standard ``logging`` module, two formats.

* ``text`` (default): the message alone, one line (``hostsdn up: reloaded ...``), as the
  status lines always were.
* ``json``: one JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
  ``event`` (a stable tag: ``ready``, ``status``, ``reload``, ``reload_refused``,
  ``policy_changed``, ``limit``, ``bug``, ``stopped``, ``api``...), ``msg``, and the
  event's own fields; ``exc`` holds a traceback when there is one.

``log_event(logger, level, event, msg, **fields)`` is how the runtime logs: the fields go
into the JSON object and are left out of the text line.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any, TextIO

__all__ = ["LOG_FORMATS", "JsonFormatter", "log_event", "setup_logging", "up_logger"]

LOG_FORMATS = ("text", "json")
LOGGER = "hostsdn.up"


def up_logger() -> logging.Logger:
    return logging.getLogger(LOGGER)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", "message"),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for k, v in fields.items():
                obj.setdefault(k, v)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str, sort_keys=False)


def setup_logging(fmt: str, stream: TextIO | None) -> logging.Handler | None:
    """Send the ``hostsdn.up`` logger to ``stream`` in ``fmt``; returns the handler (to
    remove with ``teardown_logging``), None when ``stream`` is None."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (choose from {', '.join(LOG_FORMATS)})")
    logger = up_logger()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if stream is None:
        return None
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return handler


def teardown_logging(handler: logging.Handler | None) -> None:
    if handler is not None:
        handler.flush()
        up_logger().removeHandler(handler)


def log_event(logger: logging.Logger, level: int, event: str, msg: str, *,
              exc_info: bool = False, **fields: Any) -> None:
    logger.log(level, msg, exc_info=exc_info, extra={"event": event, "fields": fields})
