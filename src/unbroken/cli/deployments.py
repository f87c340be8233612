"""``unbroken deployments register|list|describe|remove``: remote deployments (Restate SDK services)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from unbroken.cli.common import DEFAULT_ADMIN_URL, AdminUrlOpt, JsonOpt, command

app = typer.Typer(
    help="Register services served by a Restate SDK endpoint, list and remove them.", no_args_is_help=True
)

UrlArg = Annotated[str, typer.Argument(metavar="URL", help="The endpoint, e.g. http://localhost:9080.")]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="Deployment id (dp_...).")]


@app.command()
@command
def register(
    url: UrlArg,
    force: Annotated[
        bool, typer.Option("--force", help="Register again an endpoint already registered (new services).")
    ] = False,
    header: Annotated[
        list[str] | None,
        typer.Option("--header", metavar="NAME:VALUE", help="Header to send on every request to it."),
    ] = None,
    use_http_11: Annotated[
        bool,
        typer.Option(
            "--use-http1.1",
            help="Talk HTTP/1.1 to it (request/response; e.g. an SDK behind uvicorn), not HTTP/2 streams.",
        ),
    ] = False,
    json_: JsonOpt = False,
    admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL,
) -> None:
    """Discover the services at URL and serve them (POST /deployments; kept across restarts)."""
    from unbroken.cli.client import Admin
    from unbroken.cli.common import EXIT_USAGE, CliError
    from unbroken.cli.output import echo, print_json, table

    headers: dict[str, str] = {}
    for item in header or []:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise CliError(f"bad --header '{item}': expected NAME:VALUE", EXIT_USAGE)
        headers[name.strip()] = value.strip()
    body: dict[str, Any] = {"uri": url, "force": force, "use_http_11": use_http_11}
    if headers:
        body["additional_headers"] = headers
    with Admin(admin_url) as admin:
        answer = admin.call("POST", "/deployments", json=body).json()
    if json_:
        print_json(answer)
        return
    echo(f"deployment {answer['id']} ({answer.get('sdk_version') or 'unknown SDK'}): {url}")
    table(
        ["service", "type", "handlers"],
        [(s["name"], s["ty"], ", ".join(_handler(h) for h in s["handlers"])) for s in answer["services"]],
    )


@app.command("list")
@command
def list_(json_: JsonOpt = False, admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL) -> None:
    """Every deployment: in-process and remote."""
    from unbroken.cli.client import Admin
    from unbroken.cli.output import print_json, table

    with Admin(admin_url) as admin:
        found = admin.get("/deployments")["deployments"]
    if json_:
        print_json(found)
        return
    table(
        ["id", "uri", "services", "created"],
        [(d["id"], d["uri"], ", ".join(s["name"] for s in d["services"]), d["created_at"]) for d in found],
    )


@app.command()
@command
def describe(
    deployment_id: IdArg, json_: JsonOpt = False, admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL
) -> None:
    """One deployment and its services."""
    from unbroken.cli.client import Admin, segment
    from unbroken.cli.output import echo, print_json, table

    with Admin(admin_url) as admin:
        dep = admin.get(
            f"/deployments/{segment(deployment_id)}", not_found=f"deployment '{deployment_id}' not found"
        )
    if json_:
        print_json(dep)
        return
    echo(
        f"{dep['id']}  {dep['uri']}  (protocol v{dep['min_protocol_version']}-v{dep['max_protocol_version']})"
    )
    table(
        ["service", "type", "handlers"],
        [(s["name"], s["ty"], ", ".join(_handler(h) for h in s["handlers"])) for s in dep["services"]],
    )


@app.command()
@command
def remove(deployment_id: IdArg, admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL) -> None:
    """Stop serving a deployment's services (DELETE /deployments/ID)."""
    from unbroken.cli.client import Admin, segment
    from unbroken.cli.output import echo

    with Admin(admin_url) as admin:
        admin.call(
            "DELETE",
            f"/deployments/{segment(deployment_id)}",
            not_found=f"deployment '{deployment_id}' not found",
        )
    echo(f"deployment {deployment_id} removed")


def _handler(h: dict[str, Any]) -> str:
    return f"{h['name']} ({h['ty']})" if h.get("ty") else str(h["name"])
