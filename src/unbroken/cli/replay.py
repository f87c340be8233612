"""``unbroken replay-check APP --data-dir DIR | --store URL`` and ``unbroken invocations export ID
--data-dir DIR | --store URL``.

Both read the store directly through its read model, never opening it as a node does: read-only
connections to the SQLite file or to PostgreSQL, no partition lease taken and no epoch bumped (a running
server may hold the store meanwhile, and keeps leading it). The replay check replays the journals of the invocations not completed against APP's code, with no side effect
(``unbroken.testing.replay``), and lists each that would diverge; the export writes one invocation's journal
as JSON, which a test replays with ``unbroken.testing.check_journal``.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated

import typer

from unbroken.cli.common import EXIT_FAILURE, EXIT_USAGE, CliError, check_invocation_id, command

if TYPE_CHECKING:
    from unbroken.core.read_model import ReadModel
DataDirOpt = Annotated[
    str | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        help="The SQLite store: the server's data dir (its unbroken.db is read, never written).",
    ),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="URL",
        help="The PostgreSQL store: postgresql://USER@HOST:PORT/DB[?schema=NAME] as given to serve "
        "(read only: no lease is taken from the running node).",
    ),
]


def _check_source(data_dir: str | None, store: str | None) -> None:
    """Exactly one of ``--data-dir`` and ``--store``, checked before any user code is imported."""
    if (data_dir is None) == (store is None):
        raise CliError(
            "give exactly one of --data-dir DIR (a SQLite store) or --store URL (a PostgreSQL store)",
            EXIT_USAGE,
        )
    if store is not None and not store.startswith(("postgresql://", "postgres://")):
        raise CliError(
            f"--store: a PostgreSQL URL like postgresql://USER@HOST:PORT/DB, got {store!r}", EXIT_USAGE
        )


def _open(data_dir: str | None, store: str | None) -> ReadModel:
    """The read model of the store given by exactly one of ``--data-dir`` and ``--store``; a one-line
    error when it cannot be found or read."""
    from unbroken.core.read_model import NoStoreError
    from unbroken.core.storage import StoreError
    from unbroken.runtime.startup import StartupError
    from unbroken.wiring import read_model_beside

    _check_source(data_dir, store)
    try:
        return read_model_beside(data_dir, store)
    except (NoStoreError, ValueError) as exc:  # nothing there, a bad URL
        raise CliError(str(exc), EXIT_USAGE) from None
    except (StoreError, StartupError) as exc:  # unreachable, unreadable, a newer schema, no driver
        raise CliError(str(exc)) from None


@command
def replay_check(
    app: Annotated[
        str, typer.Argument(metavar="APP", help="The new code: a file path, module or module:attr.")
    ],
    data_dir: DataDirOpt = None,
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Replay the journals of in-flight invocations against APP's code (no side effect) and list every one
    that would diverge: exit 1 if any does."""
    from unbroken.cli.app_loader import AppLoadError, load_app
    from unbroken.sdk.app import App
    from unbroken.testing.replay import replay_reads

    _check_source(data_dir, store)
    try:
        loaded = load_app(app)
    except AppLoadError as exc:
        raise CliError(f"cannot load app {app!r}: {exc}", EXIT_USAGE) from None
    if not isinstance(loaded, App):
        raise CliError(f"{app!r} is not an unbroken App", EXIT_USAGE)
    reads = _open(data_dir, store)
    try:
        total, diverging = asyncio.run(replay_reads(loaded, reads))
    finally:
        reads.close()
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
    data_dir: DataDirOpt = None,
    store: StoreOpt = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to FILE (default: stdout).")
    ] = None,
) -> None:
    """Export an invocation's journal as JSON (replay it in a test with unbroken.testing.check_journal)."""
    from unbroken.testing.replay import export_from

    inv = check_invocation_id(invocation_id)
    reads = _open(data_dir, store)
    try:
        doc = asyncio.run(export_from(reads, inv)).to_json()
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None
    finally:
        reads.close()
    text = json.dumps(doc, indent=2)
    if output is None:
        typer.echo(text)
    else:
        with open(output, "w") as out:
            out.write(text + "\n")
        typer.echo(f"{inv}: {len(doc['entries'])} journal entries written to {output}")
