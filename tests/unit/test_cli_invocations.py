"""``unbroken invocations list --status``: the statuses it takes are the engine's (``core.invocation.Status``,
spelled as ``sys_invocation.status``); Restate's ``ready``, a state Unbroken never has, is refused with why.

Before: the CLI kept its own list, with ``ready``, whose filter could never match anything.
"""

from __future__ import annotations

import pytest

from unbroken.cli.common import EXIT_USAGE, CliError
from unbroken.cli.invocations import STATUSES, _where
from unbroken.core.invocation import Status


def test_every_engine_status_filters_and_nothing_else_is_listed() -> None:
    assert STATUSES == tuple(status.value for status in Status)
    for status in Status:
        assert _where(status.value, None, None) == [f"status = '{status.value}'"]


def test_ready_is_refused_with_why() -> None:
    with pytest.raises(CliError) as raised:
        _where("ready", None, None)
    assert raised.value.code == EXIT_USAGE
    assert "unknown status 'ready'" in raised.value.message and "never happens" in raised.value.message
