"""The ``unbroken`` command line.

    unbroken serve [APP] [--ingress-bind HOST:PORT] [--admin-bind HOST:PORT]
                       [--data-dir DIR] [--config FILE] [--log-level LEVEL]
                       [--log-format text|json]
    unbroken dev APP [same options]
    unbroken --version

Operating a running server (over its admin API and ingress, see ``invocations.py``, ``state.py``,
``services.py``, ``calls.py``, ``explain.py``):

    unbroken invoke TARGET [JSON] [--send] [--delay D] [--idempotency-key K] [--header k:v]
    unbroken invocations list|describe|cancel|kill|purge|pause|resume ...
    unbroken invocations export ID --data-dir DIR|--store URL [-o FILE]
    unbroken replay-check APP --data-dir DIR|--store URL   # would the new code replay the in-flight journals?
    unbroken explain ID
    unbroken state keys|get|set|clear ...
    unbroken services list|describe|config ...
    unbroken awakeables resolve|reject ID ...
    unbroken sql "SELECT ..."
    unbroken deployments register|list|describe|remove ...
    unbroken cluster status                       # nodes sharing the store, partitions each leads

Start-up time matters, so this module imports only typer at import time; the
config loader, app loader, the runtime, the HTTP client and rich are imported
inside the commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from unbroken.config import Config

__all__ = ["cli", "main"]

EXIT_USAGE = 2


def _hide_flag_placeholders() -> None:
    """typer's rich help prints ``<bool>`` after every flag (``--json <bool>``) as if it took a value; its plain
    help does not. Show flags bare: nothing is displayed for a flag's type unless it has a metavar."""
    import typer.core

    option = getattr(typer.core, "TyperOption", None)
    original = getattr(option, "display_type_rich", None)
    if option is None or original is None:  # an older typer: flags show no placeholder there
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        result: str | None = original(self, ctx)
        return result

    option.display_type_rich = display_type_rich


_hide_flag_placeholders()

cli = typer.Typer(
    name="unbroken",
    help="Durable execution for Python: Restate's programming model, zero servers to start.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("unbroken")
    except PackageNotFoundError:
        return "unknown"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"unbroken {_package_version()}")
        raise typer.Exit()


@cli.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Durable execution for Python: Restate's programming model, zero servers to start."""


# Shared option declarations for `serve` and `dev`.
# `serve` without an APP runs the engine alone (a drop-in for restate-server): its services are remote
# deployments registered with `unbroken deployments register URL`.
OptionalAppArg = Annotated[
    str | None,
    typer.Argument(
        metavar="APP",
        help="App to run: a file, a module or 'module:attr'. None: only registered remote deployments.",
        show_default=False,
    ),
]
IngressBindOpt = Annotated[
    str | None,
    typer.Option(
        "--ingress-bind", metavar="HOST:PORT", help="Ingress (HTTP API) address (default 127.0.0.1:8080)."
    ),
]
AdminBindOpt = Annotated[
    str | None,
    typer.Option("--admin-bind", metavar="HOST:PORT", help="Admin API address (default 127.0.0.1:9070)."),
]
DataDirOpt = Annotated[
    str | None,
    typer.Option("--data-dir", metavar="DIR", help="Directory for the SQLite data (default ./.unbroken)."),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="URL",
        help="postgresql://USER@HOST:PORT/DB[?schema=NAME]: keep the data in PostgreSQL instead of SQLite. "
        "Also: [store] url, $UNBROKEN_STORE__URL.",
    ),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "--config-file",  # Restate's spelling
        metavar="FILE",
        help="TOML config file (Restate layout). Also: $UNBROKEN_CONFIG / $RESTATE_CONFIG.",
    ),
]
LogLevelOpt = Annotated[
    str | None,
    typer.Option("--log-level", metavar="LEVEL", help="trace, debug, info, warning, error (default info)."),
]

LogFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        metavar="FORMAT",
        help="text or json (one JSON object a line). Also: [log-format] in the config, $UNBROKEN_LOG_FORMAT.",
    ),
]


# Override errors name the Config field; show the flag the user typed instead.
_FLAG_FOR_FIELD = {
    "ingress_bind": "--ingress-bind",
    "admin_bind": "--admin-bind",
    "data_dir": "--data-dir",
    "store_url": "--store",
    "log_level": "--log-level",
    "log_format": "--log-format",
}


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    # Plain echo, not rich: the message must stay on one line whatever the terminal width.
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _run(
    app_spec: str | None,
    *,
    dev: bool,
    ingress_bind: str | None,
    admin_bind: str | None,
    data_dir: str | None,
    store: str | None,
    config_file: str | None,
    log_level: str | None,
    log_format: str | None = None,
) -> None:
    from unbroken.cli.app_loader import AppLoadError, load_app
    from unbroken.config import ConfigError, load_config

    # Configuration first: bad flags or a broken config file are reported
    # before any user code is imported.
    try:
        config = load_config(
            config_file,
            overrides={
                "ingress_bind": ingress_bind,
                "admin_bind": admin_bind,
                "data_dir": data_dir,
                "store_url": store,
                "log_level": log_level,
                "log_format": log_format,
                "dev": True if dev else None,
            },
        )
    except ConfigError as e:
        message = str(e)
        for field, flag in _FLAG_FOR_FIELD.items():
            if message.startswith(field + ":"):
                message = flag + message[len(field) :]
                break
        _fail(f"invalid configuration: {message}")

    try:
        app = load_app(app_spec) if app_spec is not None else _no_app()
    except AppLoadError as e:
        _fail(f"cannot load app {app_spec!r}: {e}")
    except Exception as e:
        # The app module itself raised while importing: show where.
        import traceback

        traceback.print_exc()
        _fail(f"cannot load app {app_spec!r}: {type(e).__name__}: {e}", code=1)

    from unbroken.runtime.startup import StartupError
    from unbroken.server import serve

    banner = (lambda: _print_dev_banner(app_spec or "(none)", config)) if config.dev else None
    try:
        serve(app, config, on_listening=banner)
    except StartupError as e:
        _fail(str(e), code=1)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _print_dev_banner(app_spec: str, config: Config) -> None:
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    console.print(f"[bold]unbroken dev[/bold] {_package_version()} — app [cyan]{app_spec}[/cyan]")
    console.print(f"  ingress  http://{config.ingress_bind}")
    console.print(f"  admin    http://{config.admin_bind}")
    console.print(f"  data dir {config.data_dir}")


def _no_app() -> Any:
    from unbroken.sdk.app import App

    return App([])


@cli.command()
def serve(
    app: OptionalAppArg = None,
    ingress_bind: IngressBindOpt = None,
    admin_bind: AdminBindOpt = None,
    data_dir: DataDirOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Run APP: engine, ingress and admin API in this process, until SIGTERM/SIGINT. Without APP: the engine
    alone, serving the deployments registered with `unbroken deployments register URL`."""
    _run(
        app,
        dev=False,
        ingress_bind=ingress_bind,
        admin_bind=admin_bind,
        data_dir=data_dir,
        store=store,
        config_file=config,
        log_level=log_level,
        log_format=log_format,
    )


@cli.command()
def dev(
    app: OptionalAppArg = None,
    ingress_bind: IngressBindOpt = None,
    admin_bind: AdminBindOpt = None,
    data_dir: DataDirOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Like `serve`, with human-friendly logs for local development (no APP: registered deployments only)."""
    _run(
        app,
        dev=True,
        ingress_bind=ingress_bind,
        admin_bind=admin_bind,
        data_dir=data_dir,
        store=store,
        config_file=config,
        log_level=log_level,
        log_format=log_format,
    )


def _add_operator_commands() -> None:
    from unbroken.cli import calls, cluster, deployments, explain, invocations, replay, services, state

    cli.command("invoke")(calls.invoke)
    invocations.app.command("export")(replay.export)
    cli.add_typer(invocations.app, name="invocations")
    cli.command("replay-check")(replay.replay_check)
    cli.command("explain")(explain.explain)
    cli.add_typer(state.app, name="state")
    cli.add_typer(services.app, name="services")
    cli.add_typer(calls.awakeables, name="awakeables")
    cli.command("sql")(explain.sql)
    cli.add_typer(deployments.app, name="deployments")
    cli.add_typer(cluster.app, name="cluster")


_add_operator_commands()


def main() -> None:
    """Console-script entry point (``unbroken``)."""
    cli(prog_name="unbroken")


if __name__ == "__main__":
    main()
