"""What every operator command shares: connection and ``--json`` options, one-line errors, exit codes.

Imported when the CLI starts, so it imports only typer and the standard library (the HTTP client and
rich are imported by the commands when they run).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer

DEFAULT_ADMIN_URL = "http://127.0.0.1:9070"
DEFAULT_INGRESS_URL = "http://127.0.0.1:8080"

EXIT_FAILURE = 1  # the operation failed (unreachable server, unknown invocation, error answer)
EXIT_USAGE = 2  # the command line is wrong (bad JSON argument, bad target, bad option value)

AdminUrlOpt = Annotated[
    str,
    typer.Option(
        "--admin-url",
        metavar="URL",
        envvar=["UNBROKEN_ADMIN_URL", "RESTATE_ADMIN_URL"],
        help="Admin API of the server ($UNBROKEN_ADMIN_URL or $RESTATE_ADMIN_URL).",
    ),
]
IngressUrlOpt = Annotated[
    str,
    typer.Option(
        "--ingress-url",
        metavar="URL",
        envvar=["UNBROKEN_INGRESS_URL", "RESTATE_INGRESS_URL"],
        help="Ingress (HTTP API) of the server ($UNBROKEN_INGRESS_URL or $RESTATE_INGRESS_URL).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


class CliError(Exception):
    """A failure reported as ``error: <message>`` on one line, with exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def one_line(text: str) -> str:
    """Collapse a (possibly multi-line) message onto one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


_F = TypeVar("_F", bound=Callable[..., Any])


def command(fn: _F) -> _F:
    """Wrap a command: a :class:`CliError` becomes ``error: ...`` on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CliError as exc:
            fail(exc.message, exc.code)

    return wrapper  # type: ignore[return-value]


def parse_json_arg(text: str | None, what: str = "argument") -> Any:
    """A JSON command-line argument (None when absent); a usage error if it is not valid JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (a JSON string needs quotes: '\"text\"')" if text[:1] not in '"[{' else ""
        raise CliError(f"the {what} is not valid JSON: {exc}{hint}", EXIT_USAGE) from None


def check_invocation_id(text: str) -> str:
    from unbroken.core.ids import InvalidId, InvocationId

    try:
        return str(InvocationId.parse(text))
    except InvalidId:
        raise CliError(f"'{text}' is not an invocation id (expected inv_1…)", EXIT_USAGE) from None


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
