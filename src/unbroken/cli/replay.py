"""``unbroken replay-check APP --data-dir DIR`` and ``unbroken invocations export ID --data-dir DIR``.

Both read the data dir directly, on a read-only connection (a running server may hold it meanwhile): the
replay check replays the journals of the invocations not completed against APP's code, with no side effect
(``unbroken.testing.replay``), and lists each that would diverge; the export writes one invocation's journal
as JSON, which a test replays with ``unbroken.testing.check_journal``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from unbroken.cli.common import EXIT_FAILURE, EXIT_USAGE, CliError, check_invocation_id, command

DataDirOpt = Annotated[
    str, typer.Option("--data-dir", help="The server's data dir (its unbroken.db is read, never written).")
]


@command
def replay_check(
    app: Annotated[
        str, typer.Argument(metavar="APP", help="The new code: a file path, module or module:attr.")
    ],
    data_dir: DataDirOpt = "./.unbroken",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Replay the journals of in-flight invocations against APP's code (no side effect) and list every one
    that would diverge: exit 1 if any does."""
    import asyncio

    from unbroken.cli.app_loader import AppLoadError, load_app
    from unbroken.sdk.app import App
    from unbroken.testing.replay import replay_check as check

    try:
        loaded = load_app(app)
    except AppLoadError as exc:
        raise CliError(f"cannot load app {app!r}: {exc}", EXIT_USAGE) from None
    if not isinstance(loaded, App):
        raise CliError(f"{app!r} is not an unbroken App", EXIT_USAGE)
    try:
        total, diverging = asyncio.run(check(loaded, data_dir))
    except FileNotFoundError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if as_json:
        rows = [
            {
                "invocation_id": d.invocation_id,
                "target": d.target,
                "index": d.index,
                "expected": d.expected,
                "actual": d.actual,
                "message": d.message,
            }
            for d in diverging
        ]
        typer.echo(json.dumps({"replayed": total, "diverging": rows}, indent=2))
    else:
        for d in diverging:
            typer.echo(f"{d.invocation_id} {d.target}: {d.message}")
        typer.echo(f"replayed {total} in-flight invocation(s): {len(diverging)} would diverge")
    if diverging:
        raise typer.Exit(EXIT_FAILURE)


@command
def export(
    invocation_id: Annotated[str, typer.Argument(metavar="ID")],
    data_dir: DataDirOpt = "./.unbroken",
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to FILE (default: stdout).")
    ] = None,
) -> None:
    """Export an invocation's journal as JSON (replay it in a test with unbroken.testing.check_journal)."""
    from unbroken.testing.replay import export_invocation

    inv = check_invocation_id(invocation_id)
    try:
        doc = export_invocation(data_dir, inv).to_json()
    except FileNotFoundError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None
    text = json.dumps(doc, indent=2)
    if output is None:
        typer.echo(text)
    else:
        with open(output, "w") as out:
            out.write(text + "\n")
        typer.echo(f"{inv}: {len(doc['entries'])} journal entries written to {output}")
