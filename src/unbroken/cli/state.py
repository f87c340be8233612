"""``unbroken state keys|get|set|clear``: the durable state of virtual objects and workflows.

Reads go through ``POST /query`` (the ``state`` view, exact bytes); writes through the admin API, which
replaces the whole state of one key (``POST /services/{name}/state``): ``set`` reads the key's state,
changes one entry and writes it back (a handler writing the same key at that moment may be overwritten).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from unbroken.cli.common import (
    DEFAULT_ADMIN_URL,
    AdminUrlOpt,
    CliError,
    JsonOpt,
    YesOpt,
    command,
    parse_json_arg,
    sql_literal,
)

if TYPE_CHECKING:
    from unbroken.cli.client import Admin

app = typer.Typer(help="Read and change the state of virtual objects and workflows.", no_args_is_help=True)

ServiceArg = Annotated[str, typer.Argument(metavar="SERVICE", help="Virtual object or workflow name.")]
KeyArg = Annotated[str, typer.Argument(metavar="KEY", help="Object or workflow key.")]


def _keyed(admin: Admin, service: str) -> None:
    meta = admin.service(service)
    if meta["ty"] == "Service":
        raise CliError(f"'{service}' is a service: only virtual objects and workflows have state")


def _read(admin: Admin, service: str, key: str) -> dict[str, bytes]:
    rows = admin.query(
        f"SELECT key, value FROM state WHERE service_name = {sql_literal(service)} "
        f"AND service_key = {sql_literal(key)} ORDER BY key"
    )
    return {r["key"]: bytes.fromhex(r["value"]) for r in rows}


def _decoded(value: bytes) -> Any:
    """A state value as JSON: the decoded JSON value, else the UTF-8 text, else ``{"hex": ...}``."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": value.hex()}
    try:
        return json.loads(text)
    except ValueError:
        return text


def _text(value: bytes) -> str:
    """A state value as stored (JSON text for the default serde), or ``0x…`` when it is not UTF-8."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + value.hex()


@app.command()
@command
def keys(service: ServiceArg, json_: JsonOpt = False, admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL) -> None:
    """The keys of SERVICE that have state."""
    from unbroken.cli.client import Admin
    from unbroken.cli.output import print_json, table

    with Admin(admin_url) as admin:
        _keyed(admin, service)
        rows = admin.query(
            "SELECT service_key AS key, count(*) AS entries FROM state "
            f"WHERE service_name = {sql_literal(service)} GROUP BY service_key ORDER BY service_key"
        )
    if json_:
        print_json(rows)
    elif not rows:
        typer.echo(f"no key of {service} has state")
    else:
        table(["key", "entries"], [(r["key"], r["entries"]) for r in rows])


@app.command()
@command
def get(
    service: ServiceArg, key: KeyArg, json_: JsonOpt = False, admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL
) -> None:
    """The state of one key: name -> value."""
    from unbroken.cli.client import Admin
    from unbroken.cli.output import print_json, table

    with Admin(admin_url) as admin:
        _keyed(admin, service)
        state = _read(admin, service, key)
    if json_:
        print_json({name: _decoded(value) for name, value in state.items()})
    elif not state:
        typer.echo(f"{service}/{key} has no state")
    else:
        table(["name", "value"], [(name, _text(value)) for name, value in state.items()], limit=1000)


@app.command("set")
@command
def set_(
    service: ServiceArg,
    key: KeyArg,
    name: Annotated[str, typer.Argument(metavar="NAME", help="State entry name.")],
    value: Annotated[str, typer.Argument(metavar="JSON", help="The new value, as JSON.")],
    admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL,
) -> None:
    """Set one state entry of one key to a JSON value."""
    from unbroken.cli.client import Admin, segment

    parsed = parse_json_arg(value, "value")
    encoded = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
    with Admin(admin_url) as admin:
        _keyed(admin, service)
        state = _read(admin, service, key)
        state[name] = encoded
        new_state = {n: list(v) for n, v in state.items()}
        admin.call(
            "POST", f"/services/{segment(service)}/state", json={"object_key": key, "new_state": new_state}
        )
    typer.echo(f"set {name} of {service}/{key}")


@app.command()
@command
def clear(
    service: ServiceArg,
    key: Annotated[
        str | None, typer.Argument(metavar="KEY", help="Only this key (default: every key).")
    ] = None,
    yes: YesOpt = False,
    admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL,
) -> None:
    """Delete the state of one key, or of every key of SERVICE (asks first)."""
    from unbroken.cli.client import Admin, segment

    with Admin(admin_url) as admin:
        _keyed(admin, service)
        if key is not None:
            keys_ = [key]
        else:
            rows = admin.query(
                f"SELECT DISTINCT service_key FROM state WHERE service_name = {sql_literal(service)}"
            )
            keys_ = sorted(r["service_key"] for r in rows)
            if not keys_:
                typer.echo(f"no key of {service} has state")
                return
            if not yes and not typer.confirm(
                f"Clear the state of {len(keys_)} key(s) of {service}?", default=False
            ):
                raise CliError("aborted: nothing was changed")
        for k in keys_:
            admin.call("DELETE", f"/services/{segment(service)}/state/{segment(k)}")
            typer.echo(f"cleared the state of {service}/{k}")
