"""``unbroken services list|describe|config``: the registered services and their configuration."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from unbroken.cli.common import DEFAULT_ADMIN_URL, EXIT_USAGE, AdminUrlOpt, CliError, JsonOpt, command

app = typer.Typer(help="Inspect services and change their configuration.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Service name.")]
_CONFIG_KEYS = (
    "public",
    "idempotency_retention",
    "workflow_completion_retention",
    "journal_retention",
    "inactivity_timeout",
    "abort_timeout",
    "retry_policy",
)


@app.command("list")
@command
def list_(json_: JsonOpt = False, admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL) -> None:
    """All services: type, handlers, visibility, revision."""
    from unbroken.cli.client import Admin
    from unbroken.cli.output import print_json, table

    with Admin(admin_url) as admin:
        services = sorted(admin.get("/services")["services"], key=lambda s: s["name"])
    if json_:
        print_json(services)
        return
    table(
        ["name", "type", "handlers", "public", "revision"],
        [
            (s["name"], s["ty"], ", ".join(h["name"] for h in s["handlers"]), s["public"], s["revision"])
            for s in services
        ],
    )


@app.command()
@command
def describe(name: NameArg, json_: JsonOpt = False, admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL) -> None:
    """One service: its configuration and its handlers."""
    from unbroken.cli.client import Admin
    from unbroken.cli.output import echo, fields, print_json, table

    with Admin(admin_url) as admin:
        meta = admin.service(name)
    if json_:
        print_json(meta)
        return
    echo(f"{meta['name']}  ({meta['ty']}, revision {meta['revision']}, deployment {meta['deployment_id']})")
    fields(_flat(_config(meta)))
    echo("")
    table(
        ["handler", "type", "public", "retry policy"],
        [
            (h["name"], h.get("ty") or "", h["public"], _retry_text(h.get("retry_policy")))
            for h in meta["handlers"]
        ],
    )


@app.command()
@command
def config(
    name: NameArg,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Change one setting, e.g. idempotency_retention=1h, public=false, retry_policy.max_attempts=5.",
        ),
    ] = None,
    json_: JsonOpt = False,
    admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL,
) -> None:
    """Print a service's configuration, or change it with --set (PATCH /services/NAME; kept across restarts)."""
    from unbroken.cli.client import Admin, segment
    from unbroken.cli.output import fields, print_json

    change = _parse_sets(set_ or [])
    with Admin(admin_url) as admin:
        if change:
            admin.service(name)  # a clear "not found" before the PATCH
            meta = admin.call("PATCH", f"/services/{segment(name)}", json=change).json()
        else:
            meta = admin.service(name)
    settings = _config(meta)
    if json_:
        print_json(settings)
    else:
        fields(_flat(settings))


def _config(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in _CONFIG_KEYS if k in meta}


def _flat(settings: dict[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in settings.items():
        if isinstance(v, dict):
            out.extend((f"{k}.{sub}", val) for sub, val in v.items())
        else:
            out.append((k, v))
    return out


def _retry_text(policy: dict[str, Any] | None) -> str:
    if not policy or policy.get("max_attempts") is None:
        return "(service default)"
    return ", ".join(f"{k}={v}" for k, v in policy.items())


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """``key=value`` (dotted keys nest: ``retry_policy.max_attempts=5``); values are JSON if they parse
    (``false``, ``5``), text otherwise (``1h``)."""
    change: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"bad --set '{item}': expected KEY=VALUE", EXIT_USAGE)
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw.strip()
        node = change
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CliError(f"bad --set '{item}': '{part}' is not a group of settings", EXIT_USAGE)
        node[leaf] = value
    return change
