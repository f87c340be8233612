"""``unbroken serve``: engine + ingress + admin + in-process handlers in one process, on SQLite.

Part of the composition root (above every layer): it wires the ingress and the admin API to the node
``unbroken.wiring`` builds."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import sys
from collections.abc import Generator
from typing import Any

import orjson
import uvicorn

from unbroken.admin.app import AdminApp
from unbroken.config import Config
from unbroken.core.ids import deployment_id
from unbroken.http.wire import ErrorBody, bounded_protocol
from unbroken.ingress.app import IngressApp
from unbroken.runtime.node import Node
from unbroken.sdk.app import App
from unbroken.storage.sqlite import SqliteStore
from unbroken.storage.sqlite_reads import SqliteReadModel
from unbroken.wiring import build_from_config

log = logging.getLogger("unbroken")


class _Server(uvicorn.Server):
    """uvicorn server whose signals we handle ourselves (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _ingress_error(status: int, message: str) -> bytes:
    return orjson.dumps({"code": status, "message": message, "source": "ingress"})


def _admin_error(status: int, message: str) -> bytes:
    return orjson.dumps({"message": message, "restate_code": None})


def _uvicorn(app: Any, bind: tuple[str, int], error_body: ErrorBody, error_headers: bytes = b"") -> _Server:
    config = uvicorn.Config(
        # httptools, with the request head bounded while it is parsed (http/wire.py)
        app, host=bind[0], port=bind[1], http=bounded_protocol(error_body, error_headers), loop="none",
        lifespan="off",
        access_log=False, log_level="warning", server_header=False, date_header=False, proxy_headers=False,
        timeout_keep_alive=60, backlog=4096,
        # A call or attach can wait on an invocation for days: don't let it hold up SIGTERM forever
        # (the invocation is durable; the client re-attaches after the restart).
        timeout_graceful_shutdown=2,
    )  # fmt: skip
    return _Server(config)


def _setup_logging(config: Config) -> None:
    level = getattr(logging, config.log_level.upper(), logging.INFO)
    fmt = "%(asctime)s %(levelname)-5s %(message)s" if config.dev else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, datefmt="%H:%M:%S", stream=sys.stderr)


def build_engine(app: App, config: Config) -> tuple[Node, SqliteStore]:
    """The node of ``app`` on its SQLite data dir (``unbroken.wiring``: the one place nodes are built)."""
    return build_from_config(app, config)


async def run(app: App, config: Config, started: asyncio.Event | None = None) -> None:
    engine, store = build_engine(app, config)
    engine.start()
    ingress_bind, admin_bind = config.ingress_host_port, config.admin_host_port
    dep = deployment_id(hashlib.sha256(b"local:" + ",".join(sorted(engine.schemas.services)).encode()).digest()[:16])
    ingress_app = IngressApp(engine, config.request_size_limit_bytes, token=config.ingress_token)
    ingress = _uvicorn(ingress_app, ingress_bind, _ingress_error, b"x-restate-error-source: ingress\r\n")
    admin_app = AdminApp(
        engine, SqliteReadModel(store.path), config.data_dir, dep, f"http://{ingress_bind[0]}:{ingress_bind[1]}/",
        body_limit_bytes=config.request_size_limit_bytes, token=config.admin_token,
    )  # fmt: skip
    admin = _uvicorn(admin_app, admin_bind, _admin_error)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        ingress.should_exit = True
        admin.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
    serving = asyncio.gather(ingress._serve(), admin._serve())
    await asyncio.sleep(0)
    log.info(
        "unbroken serving %d services: ingress http://%s:%d, admin http://%s:%d, data %s",
        len(engine.schemas.services), *ingress_bind, *admin_bind, config.data_dir,
    )  # fmt: skip
    if started is not None:
        started.set()
    try:
        await serving
    finally:
        await engine.stop()
        admin_app.close()
        store.close()
        log.info("unbroken stopped")


def serve(app: object, config: Config) -> None:
    """Run until SIGTERM/SIGINT (blocking)."""
    if not isinstance(app, App):
        raise TypeError(f"expected an unbroken App (from unbroken.app([...])), got {type(app).__name__}")
    _setup_logging(config)
    try:
        import uvloop

        uvloop.run(run(app, config))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        asyncio.run(run(app, config))
