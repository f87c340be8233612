"""``unbroken explain ID`` (why is this invocation not progressing) and ``unbroken sql "SELECT ..."``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from unbroken.cli.common import DEFAULT_ADMIN_URL, AdminUrlOpt, JsonOpt, check_invocation_id, command


@command
def explain(
    invocation_id: Annotated[str, typer.Argument(metavar="ID", help="Invocation id (inv_1…).")],
    json_: JsonOpt = False,
    admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL,
) -> None:
    """Why an invocation is not progressing: what it waits on, and what that is doing (the chain)."""
    from unbroken.cli.client import Admin
    from unbroken.cli.output import echo, print_json

    inv_id = check_invocation_id(invocation_id)
    with Admin(admin_url) as admin:
        answer = admin.explain(inv_id)
    if json_:
        print_json(answer)
        return
    for line in render(answer):
        echo(line)


def render(answer: dict[str, Any]) -> list[str]:
    """The summary line, then each invocation of the chain indented by its depth."""
    lines = [
        f"{answer['invocation_id']} ({answer['target']}) is {answer['status']}",
        f"  {answer['summary']}",
    ]
    for reason in answer.get("reasons", []):
        detail = str(reason.get("error_detail") or "").rstrip()
        if "\n" in detail:  # the last failure's traceback
            lines.append("  last failure:")
            lines.extend(f"    {line}" for line in detail.splitlines())
    for hop in answer.get("chain", []):
        pad = "    " * hop["depth"]
        target = f" ({hop['target']})" if hop.get("target") else ""
        status = f" is {hop['status']}" if hop.get("status") else ""
        lines.append(f"{pad}└─ {hop['invocation_id']}{target}{status}")
        lines.append(f"{pad}     {hop['summary']}")
    return lines


@command
def sql(
    query: Annotated[str, typer.Argument(metavar="QUERY", help="One read-only SQLite statement.")],
    json_: JsonOpt = False,
    admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL,
) -> None:
    """Run read-only SQL over the engine's state (sys_invocation, sys_journal, state, sys_inbox,
    sys_keyed_service_status, sys_promise, sys_service, sys_deployment)."""
    from unbroken.cli.client import Admin
    from unbroken.cli.output import print_json, table

    with Admin(admin_url) as admin:
        answer = admin.query_answer(query)
    rows: list[dict[str, Any]] = answer["rows"]
    if json_:
        print_json(rows)
    elif not rows:
        typer.echo("(no rows)")
    else:
        columns = list(rows[0])
        table(columns, [[row.get(c) for c in columns] for row in rows], upper=False)
        typer.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    if answer.get("truncated"):
        typer.echo(f"note: truncated to the first {len(rows)} rows", err=True)
