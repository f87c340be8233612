"""The server's log lines: which invocation a line belongs to, no line twice across replays, text or JSON.

``InvocationFilter`` sits on the server's log handler, so it sees the lines of every logger (the user's
``logging.getLogger(...)`` included, not only ``restate.getLogger``). A line logged inside a handler (its
task or a ``ctx.run`` task it started: they carry the attempt's session in ``current_session``) gets the
invocation id, the target and the attempt number; while that handler is replaying its journal, the lines
of the user's loggers are dropped, since they were printed when the step first ran. The engine's own
lines (``unbroken.*``) are always kept: a non-determinism error is found while replaying.

``JsonFormatter`` writes one JSON object a line (``--log-format json``): ``time``, ``level``, ``logger``,
``message``, the invocation fields when there are any, ``exception`` when there is one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from unbroken.sdk.replay_logging import current_session, is_replaying

_FIELDS = ("invocation_id", "target", "attempt")


class InvocationFilter(logging.Filter):
    """Adds ``invocation_id``, ``target``, ``attempt`` to the lines of a handler; drops the user's lines
    while it replays."""

    def filter(self, record: logging.LogRecord) -> bool:
        ref = current_session.get()
        session = ref() if ref is not None else None
        if session is None:
            return True
        if not record.name.startswith("unbroken") and is_replaying():
            return False
        start = session.start
        record.invocation_id = start.invocation_id
        record.target = str(start.target)
        record.attempt = start.attempt
        return True


class TextFormatter(logging.Formatter):
    """``fmt``, with ``[inv_… Service/handler attempt N]`` before the message of a handler's line."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        invocation_id = getattr(record, "invocation_id", None)
        if invocation_id is None:
            return super().formatMessage(record)
        plain = record.message
        record.message = f"[{invocation_id} {record.target} attempt {record.attempt}] {plain}"  # type: ignore[attr-defined]
        try:
            return super().formatMessage(record)
        finally:
            record.message = plain


class JsonFormatter(logging.Formatter):
    """One JSON object a line (the invocation fields from :class:`InvocationFilter`, when set)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def install(level: int, log_format: str, text_format: str, datefmt: str, stream: Any) -> logging.Handler:
    """The root logger's handler, writing ``log_format`` ("text" or "json") lines to ``stream``; like
    ``logging.basicConfig``, it adds nothing if the root logger has a handler already (the embedding
    program configured logging itself)."""
    handler = logging.StreamHandler(stream)
    formatter: logging.Formatter = (
        JsonFormatter() if log_format == "json" else TextFormatter(text_format, datefmt=datefmt)
    )
    handler.setFormatter(formatter)
    handler.addFilter(InvocationFilter())
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)
    root.setLevel(level)
    return handler
