"""``unbroken invocations list|describe|cancel|kill|purge|pause|resume``.

Listing and selection by filter go through ``POST /query`` (``sys_invocation``, ``sys_journal``); the
control commands call ``PATCH /invocations/{id}/{action}`` once per invocation.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from unbroken.cli.common import (
    DEFAULT_ADMIN_URL,
    EXIT_FAILURE,
    EXIT_USAGE,
    AdminUrlOpt,
    CliError,
    JsonOpt,
    YesOpt,
    check_invocation_id,
    command,
    sql_literal,
)
from unbroken.core import limits
from unbroken.core.invocation import Status

app = typer.Typer(help="List, inspect and control invocations.", no_args_is_help=True)

# The statuses ``sys_invocation.status`` can hold: the engine's own (Restate's CLI also takes ``ready``, waiting
# for an invoker slot, which Unbroken never is in: a due invocation starts at once).
STATUSES = tuple(status.value for status in Status)
_COLUMNS = (
    "id, target, status, created_at, modified_at, retry_count, last_failure, next_retry_at, scheduled_at, "
    "completion_result, completion_failure, idempotency_key, invoked_by_id"
)

StatusOpt = Annotated[str | None, typer.Option("--status", help=f"One of: {', '.join(STATUSES)}.")]
ServiceOpt = Annotated[str | None, typer.Option("--service", help="Only invocations of this service.")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="Only invocations of this object/workflow key.")]


def _where(status: str | None, service: str | None, key: str | None) -> list[str]:
    if status is not None and status not in STATUSES:
        never = (
            " (Restate's 'ready' never happens here: a due invocation starts at once)"
            if status == "ready"
            else ""
        )
        raise CliError(f"unknown status '{status}': expected one of {', '.join(STATUSES)}{never}", EXIT_USAGE)
    conds = []
    if status is not None:
        conds.append(f"status = {sql_literal(status)}")
    if service is not None:
        conds.append(f"target_service_name = {sql_literal(service)}")
    if key is not None:
        conds.append(f"target_service_key = {sql_literal(key)}")
    return conds


def _info(row: dict[str, Any]) -> str:
    """One short phrase on where an invocation stands."""
    match row["status"]:
        case "completed":
            return row["completion_failure"] or "ok"
        case "scheduled":
            return f"starts at {row['scheduled_at']}"
        case "backing-off":
            return f"retry {row['retry_count']} at {row['next_retry_at']}: {_first_line(row['last_failure'])}"
        case "paused":
            return f"after {row['retry_count']} failures: {_first_line(row['last_failure'])}"
    return ""


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0]


@app.command("list")
@command
def list_(
    status: StatusOpt = None,
    service: ServiceOpt = None,
    key: KeyOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many (newest first).")] = 50,
    json_: JsonOpt = False,
    admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL,
) -> None:
    """List invocations, newest first."""
    from unbroken.cli.client import Admin
    from unbroken.cli.output import print_json, table

    conds = _where(status, service, key)
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    with Admin(admin_url) as admin:
        # One row past the limit says whether there are more, without counting them all every time.
        order = f"ORDER BY created_at DESC, id LIMIT {limit + 1}"
        rows = admin.query(f"SELECT {_COLUMNS} FROM sys_invocation{where} {order}")
        more = _count_more(admin, where, limit) if len(rows) > limit else 0
    rows = rows[:limit]
    if json_:
        print_json(rows)
        return
    if not rows:
        typer.echo("no invocations")
        return
    table(
        ["id", "target", "status", "created", "info"],
        [(r["id"], r["target"], r["status"], r["created_at"], _info(r)) for r in rows],
        no_wrap=["id"],
    )
    if more > limits.cli_count_rows_max:
        narrow = "narrow with --status/--service/--key, or raise --limit"
        typer.echo(f"… and more than {limits.cli_count_rows_max} older ones not shown: {narrow}")
    elif more:
        ones = "ones" if more > 1 else "one"
        typer.echo(f"… and {more} older {ones} not shown: --limit {limit + more} shows all")


def _count_more(admin: Any, where: str, limit: int) -> int:
    """How many match past the first ``limit`` (at most ``limits.cli_count_rows_max + 1``)."""
    bounded = f"SELECT 1 FROM sys_invocation{where} LIMIT {limit + limits.cli_count_rows_max + 1}"
    return int(admin.query(f"SELECT count(*) AS n FROM ({bounded})")[0]["n"]) - limit


FAILURE_FIELD_CHARS = 300  # what the ``last failure`` field shows (``output.fields`` clips there)


@app.command()
@command
def describe(
    invocation_id: Annotated[str, typer.Argument(metavar="ID", help="Invocation id (inv_1…).")],
    json_: JsonOpt = False,
    admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL,
) -> None:
    """Status, target, attempts, last failure, why it waits, and the journal as a timeline."""
    from unbroken.cli.client import Admin
    from unbroken.cli.output import echo, fields, print_json, table

    inv_id = check_invocation_id(invocation_id)
    with Admin(admin_url) as admin:
        rows = admin.query(f"SELECT * FROM sys_invocation WHERE id = '{inv_id}'")
        if not rows:
            raise CliError(f"invocation '{inv_id}' not found")
        journal = admin.query(
            'SELECT "index", entry_type, name, completed, invoked_id, invoked_target, sleep_wakeup_at, '
            f"promise_name, entry_json, appended_at FROM sys_journal WHERE id = '{inv_id}' ORDER BY \"index\""
        )
        why = admin.explain(inv_id)
    inv = rows[0]
    if json_:
        print_json({"invocation": inv, "attempts": why.get("attempts"), "journal": journal, "explain": why})
        return
    echo(f"{inv['id']}  {inv['target']}")
    failure = f"[{inv['last_failure_error_code']}] {inv['last_failure']}" if inv["last_failure"] else None
    fields(
        [
            ("status", inv["status"]),
            ("why", why["summary"]),
            ("attempts", f"{why.get('attempts', 0)} ({inv['retry_count']} failed)"),
            ("last failure", failure),
            ("next retry", inv["next_retry_at"]),
            ("result", inv["completion_failure"] or inv["completion_result"]),
            ("idempotency key", inv["idempotency_key"]),
            ("invoked by", inv["invoked_by_id"] and f"{inv['invoked_by_id']} ({inv['invoked_by_target']})"),
            ("created", inv["created_at"]),
            ("scheduled at", inv["scheduled_at"]),
            ("modified", inv["modified_at"]),
            ("completed", inv["completed_at"]),
        ]
    )
    echo("")
    full = (inv["last_failure"] or "").rstrip()
    if "\n" in full or len(full) > FAILURE_FIELD_CHARS:  # a traceback, or a long message: shown whole
        echo("last failure, in full:")
        for line in full.splitlines():
            echo(f"  {line}")
        echo("")
    if not journal:
        echo("journal: (none: not kept after completion, see journal retention)")
        return
    table(
        ["#", "entry", "name", "result / detail", "appended"],
        [(e["index"], e["entry_type"], e["name"], entry_detail(e), e["appended_at"]) for e in journal],
        title=f"journal ({len(journal)} entries)",
    )


def entry_detail(row: dict[str, Any]) -> str:
    """What one ``sys_journal`` row says, in a few words (the result for notifications)."""
    from unbroken.cli.output import cell, result_text

    e = json.loads(row["entry_json"])
    kind = row["entry_type"].split(": ", 1)[-1]
    if row["entry_type"].startswith("Notification"):
        if e.get("signal_idx") or e.get("signal_name"):
            sig = (
                "CANCEL" if e.get("signal_idx") == 1 else f"signal {e.get('signal_name') or e['signal_idx']}"
            )
            return f"{sig}: {result_text(e.get('result'))}"
        if kind == "CallId":
            return f"callee {e.get('invocation_id') or result_text(e.get('result'))}"
        return result_text(e.get("result"))
    detail = {
        "Input": lambda: cell(e.get("value")),
        "Output": lambda: result_text(e.get("result")),
        "Sleep": lambda: f"until {row['sleep_wakeup_at']}",
        "Call": lambda: f"{row['invoked_target']} {row['invoked_id'] or ''}".strip(),
        "OneWayCall": lambda: f"{row['invoked_target']} {row['invoked_id'] or ''}".strip(),
        "GetEagerState": lambda: (
            f"{e.get('key')} = {cell(e.get('value'))}" if e.get("value") else f"{e.get('key')} (empty)"
        ),
        "SetState": lambda: f"{e.get('key')} = {cell(e.get('value'))}",
        "ClearState": lambda: str(e.get("key")),
        "GetPromise": lambda: f"promise '{row['promise_name']}'",
        "PeekPromise": lambda: f"promise '{row['promise_name']}'",
        "CompletePromise": lambda: f"promise '{row['promise_name']}': {result_text(e.get('completion'))}",
        "CompleteAwakeable": lambda: f"{e.get('awakeable_id')}: {result_text(e.get('result'))}",
        "SendSignal": lambda: f"signal {e.get('idx')} to {e.get('target_invocation_id')}",
        "AttachInvocation": lambda: str(e.get("invocation_id")),
        "GetInvocationOutput": lambda: str(e.get("invocation_id")),
    }.get(kind, lambda: "")()
    if not row["completed"]:
        detail = f"{detail} (pending)".strip()
    return detail


# --------------------------------------------------------------------------------------------- control
_ACTIONS = {
    # action: (what it does, the word printed for each invocation, statuses selected by a filter by default)
    "cancel": (
        "Cancel invocations: the handler gets a cancellation and its compensations run.",
        "cancelled",
        "status != 'completed'",
    ),
    "kill": (
        "Kill invocations: completed as failed at once, no compensations run.",
        "killed",
        "status != 'completed'",
    ),
    "purge": (
        "Forget completed invocations (result, journal, idempotency key).",
        "purged",
        "status = 'completed'",
    ),
    "pause": (
        "Pause invocations: no attempt runs until they are resumed.",
        "paused",
        "status != 'completed'",
    ),
    "resume": (
        "Resume paused (or backing-off, suspended) invocations now.",
        "resumed",
        "status IN ('paused', 'backing-off', 'suspended')",
    ),
}

IdsArg = Annotated[
    list[str] | None, typer.Argument(metavar="ID", help="Invocation ids; or select them with the filters.")
]


def _control(
    action: str,
    ids: list[str] | None,
    status: str | None,
    service: str | None,
    key: str | None,
    yes: bool,
    admin_url: str,
) -> None:
    from unbroken.cli.client import Admin, error_message

    _, done_word, default_filter = _ACTIONS[action]
    conds = _where(status, service, key)
    if ids and conds:
        raise CliError("give invocation ids or filters (--status/--service/--key), not both", EXIT_USAGE)
    if not ids and not conds:
        raise CliError(
            f"nothing to {action}: give invocation ids or filters (--status/--service/--key)", EXIT_USAGE
        )
    targets = [check_invocation_id(i) for i in ids or []]
    with Admin(admin_url) as admin:
        if conds:
            if status is None:
                conds.append(default_filter)
            rows = admin.query(
                f"SELECT id FROM sys_invocation WHERE {' AND '.join(conds)} ORDER BY created_at"
            )
            targets = [r["id"] for r in rows]
            if not targets:
                typer.echo(f"no invocations to {action}")
                return
            if not yes:
                shown = "\n".join(f"  {t}" for t in targets[:10])
                more = f"\n  … and {len(targets) - 10} more" if len(targets) > 10 else ""
                typer.echo(f"{len(targets)} invocation(s) match:\n{shown}{more}")
                if not typer.confirm(f"{action.capitalize()} {len(targets)} invocation(s)?", default=False):
                    raise CliError("aborted: nothing was changed")
        failed = 0
        for inv_id in targets:
            resp = admin.request("PATCH", f"/invocations/{inv_id}/{action}")
            if resp.status_code < 300:
                word = (
                    "cancellation requested for"
                    if action == "cancel" and resp.status_code == 202
                    else done_word
                )
                typer.echo(f"{word} {inv_id}")
                continue
            if conds and resp.status_code == 409 and action != "purge":
                typer.echo(f"skipped {inv_id}: it completed in the meantime")  # selected, then it finished
                continue
            failed += 1
            message = f"invocation '{inv_id}' not found" if resp.status_code == 404 else error_message(resp)
            typer.echo(f"error: {message}", err=True)
    if failed:
        raise typer.Exit(EXIT_FAILURE)


def _make_control(action: str) -> None:
    def run(
        ids: IdsArg = None,
        status: StatusOpt = None,
        service: ServiceOpt = None,
        key: KeyOpt = None,
        yes: YesOpt = False,
        admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL,
    ) -> None:
        _control(action, ids, status, service, key, yes, admin_url)

    run.__doc__ = _ACTIONS[action][0]
    app.command(action)(command(run))


for _action in _ACTIONS:
    _make_control(_action)
