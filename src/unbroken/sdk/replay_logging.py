"""``restate.getLogger`` / ``RestateLoggingFilter``: log lines written while a handler replays are dropped.

A handler re-runs from the top on every attempt after a suspension or failure; without the filter, each
``log.info`` before the point it resumes at would be printed again on each attempt.
"""

from __future__ import annotations

import contextvars
import logging
import weakref
from typing import Any

# A weak reference to the attempt's session while its handler (and the ctx.run tasks it starts) run; set in
# the handler's task, which copies it into the tasks it creates. Weak: the session holds that task, and a
# strong reference from the task's context would make a cycle per attempt for the garbage collector.
current_session: contextvars.ContextVar[weakref.ref[Any] | None] = contextvars.ContextVar(
    "unbroken_current_session", default=None
)


# True in the task (and executor thread) of a ``ctx.run`` action: an action runs only when its result was
# not journaled, so what it logs is new even while the handler around it still replays later commands.
in_run_action: contextvars.ContextVar[bool] = contextvars.ContextVar("unbroken_in_run_action", default=False)


def is_replaying() -> bool:
    """Whether the handler running in this task is still re-issuing journaled commands."""
    ref = current_session.get()
    session = ref() if ref is not None else None
    return bool(session is not None and session.replaying and not in_run_action.get())


class RestateLoggingFilter(logging.Filter):
    """Drops records logged while the current handler replays its journal."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not super().filter(record):
            return False
        return not is_replaying()


def getLogger(name: str | None = None) -> logging.Logger:  # noqa: N802 - restate-sdk's (and logging's) name
    """``logging.getLogger(name)`` with a :class:`RestateLoggingFilter`."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RestateLoggingFilter) for f in logger.filters):
        logger.addFilter(RestateLoggingFilter())
    return logger
