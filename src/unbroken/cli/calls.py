"""``unbroken invoke TARGET [JSON]`` and ``unbroken awakeables resolve|reject``: through the ingress."""

from __future__ import annotations

from typing import Annotated

import typer

from unbroken.cli.common import (
    DEFAULT_INGRESS_URL,
    EXIT_USAGE,
    CliError,
    IngressUrlOpt,
    command,
    parse_json_arg,
)


def _path(target: str) -> str:
    from unbroken.cli.client import segment

    parts = target.strip("/").split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise CliError(f"bad target '{target}': expected Service/handler or Object/key/handler", EXIT_USAGE)
    return "/" + "/".join(segment(p) for p in parts)


def _headers(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise CliError(f"bad --header '{item}': expected NAME:VALUE", EXIT_USAGE)
        out[name.strip()] = value.strip()
    return out


@command
def invoke(
    target: Annotated[str, typer.Argument(metavar="TARGET", help="Service/handler or Object/key/handler.")],
    argument: Annotated[
        str | None, typer.Argument(metavar="JSON", help="The handler's input, as JSON.")
    ] = None,
    send: Annotated[bool, typer.Option("--send", help="Do not wait: print the invocation id.")] = False,
    delay: Annotated[
        str | None,
        typer.Option("--delay", metavar="DURATION", help="With --send: start later ('10s', '1h')."),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", metavar="KEY", help="Same key, same invocation.")
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option("--header", "-H", metavar="NAME:VALUE", help="An extra request header (repeatable)."),
    ] = None,
    ingress_url: IngressUrlOpt = DEFAULT_INGRESS_URL,
) -> None:
    """Call a handler and print its result (JSON), or with --send print the new invocation's id."""
    from unbroken.cli.client import Ingress, error_message

    path = _path(target)
    if argument is not None:
        parse_json_arg(argument)
    if delay is not None and not send:
        raise CliError("--delay only works with --send (a call waits for its result)", EXIT_USAGE)
    headers = {"content-type": "application/json", **_headers(header or [])}
    if idempotency_key is not None:
        headers["idempotency-key"] = idempotency_key
    params = {"delay": delay} if delay is not None else None
    body = (argument or "").encode()
    with Ingress(ingress_url) as ingress:
        resp = ingress.request(
            "POST", path + ("/send" if send else ""), content=body, headers=headers, params=params
        )
    if resp.status_code >= 400:
        inv = resp.headers.get("x-restate-id")
        try:
            code = resp.json().get("code", resp.status_code)
        except (ValueError, AttributeError):
            code = resp.status_code
        raise CliError(f"[{code}] {error_message(resp)}" + (f" (invocation {inv})" if inv else ""))
    if send:
        answer = resp.json()
        typer.echo(answer["invocationId"])
        if answer.get("status") == "PreviouslyAccepted":
            typer.echo("note: previously accepted (same idempotency key)", err=True)
        return
    typer.echo(resp.text if resp.content else "null")


awakeables = typer.Typer(
    help="Complete awakeables (sign_1… ids) from outside a handler.", no_args_is_help=True
)
AwakeableArg = Annotated[str, typer.Argument(metavar="ID", help="Awakeable id (sign_1…).")]


def _complete(ingress_url: str, awakeable_id: str, action: str, body: bytes, content_type: str) -> None:
    from unbroken.cli.client import Ingress, error_message, segment

    with Ingress(ingress_url) as ingress:
        resp = ingress.request(
            "POST",
            f"/restate/awakeables/{segment(awakeable_id)}/{action}",
            content=body,
            headers={"content-type": content_type},
        )
    if resp.status_code == 404:
        raise CliError(f"awakeable '{awakeable_id}' not found: its invocation does not exist")
    if resp.status_code >= 400:
        raise CliError(error_message(resp))
    typer.echo(f"{'resolved' if action == 'resolve' else 'rejected'} {awakeable_id}")


@awakeables.command()
@command
def resolve(
    awakeable_id: AwakeableArg,
    value: Annotated[
        str | None, typer.Argument(metavar="JSON", help="The value the handler gets (default: null).")
    ] = None,
    ingress_url: IngressUrlOpt = DEFAULT_INGRESS_URL,
) -> None:
    """Resolve an awakeable with a JSON value."""
    parse_json_arg(value, "value")
    _complete(ingress_url, awakeable_id, "resolve", (value or "null").encode(), "application/json")


@awakeables.command()
@command
def reject(
    awakeable_id: AwakeableArg,
    message: Annotated[
        str, typer.Argument(metavar="MESSAGE", help="The failure message the handler gets.")
    ] = "rejected",
    ingress_url: IngressUrlOpt = DEFAULT_INGRESS_URL,
) -> None:
    """Reject an awakeable: the handler's await raises a TerminalError with MESSAGE."""
    _complete(ingress_url, awakeable_id, "reject", message.encode(), "text/plain")
