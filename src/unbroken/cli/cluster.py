"""``unbroken cluster status``: the nodes sharing the store and the partitions each leads (``GET /cluster``)."""

from __future__ import annotations

from typing import Any

import typer

from unbroken.cli.common import DEFAULT_ADMIN_URL, AdminUrlOpt, JsonOpt, command

app = typer.Typer(help="Inspect the nodes sharing one store.", no_args_is_help=True)


def ranges(parts: list[int]) -> str:
    """``0-31, 40`` for [0, 1, ..., 31, 40]."""
    out: list[list[int]] = []
    for part in sorted(parts):
        if out and out[-1][1] == part - 1:
            out[-1][1] = part
        else:
            out.append([part, part])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def _age(seconds: Any) -> str:
    if seconds is None:
        return "-"
    return "never" if seconds == float("inf") else f"{seconds:.1f}s"


@app.command()
@command
def status(json_: JsonOpt = False, admin_url: AdminUrlOpt = DEFAULT_ADMIN_URL) -> None:
    """Every node (addresses, heartbeat age, alive) and the partitions it leads, with their epochs and leases."""
    from unbroken.cli.client import Admin
    from unbroken.cli.output import echo, print_json, table

    with Admin(admin_url) as admin:
        view = admin.get("/cluster")
    if json_:
        print_json(view)
        return
    led: dict[str | None, list[dict[str, Any]]] = {}
    for leader in view["leaders"]:
        led.setdefault(leader["node"], []).append(leader)
    rows = []
    for node in view["nodes"]:
        mine = led.get(node["name"], [])
        epochs = sorted({p["epoch"] for p in mine})
        leases = [p["lease_expires_in_s"] for p in mine if p["lease_expires_in_s"] is not None]
        rows.append(
            (
                node["name"] + (" *" if node["name"] == view.get("node") else ""),
                "alive" if node["alive"] else "dead",
                _age(node["heartbeat_age_s"]),
                len(mine),
                ranges([p["partition"] for p in mine]) or "-",
                ", ".join(map(str, epochs[:3])) + (" ..." if len(epochs) > 3 else "") or "-",
                f"{min(leases):.1f}s" if leases else "-",
                str(node.get("backlog", "-")),
                node["ingress_url"],
                node["admin_url"],
            )
        )
    table(
        [
            "node",
            "state",
            "heartbeat",
            "partitions",
            "led",
            "epochs",
            "lease left",
            "backlog",
            "ingress",
            "admin",
        ],
        rows,
        no_wrap=["led"],
    )
    unled = [p["partition"] for p in led.get(None, [])]
    echo(f"{view['partitions']} partitions" + (f"; without a leader: {ranges(unled)}" if unled else ""))
