"""``unbroken serve``: engine + ingress + admin + in-process handlers in one process, on SQLite.

Part of the composition root (above every layer): it wires the ingress and the admin API to the node
``unbroken.wiring`` builds."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import hashlib
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable, Generator
from typing import Any

import orjson
import uvicorn

from unbroken.admin.app import AdminApp
from unbroken.config import Config
from unbroken.core import limits
from unbroken.core.ids import deployment_id
from unbroken.core.storage import Store
from unbroken.http.wire import ErrorBody, bounded_protocol
from unbroken.ingress.app import IngressApp
from unbroken.runtime.node import Node
from unbroken.runtime.startup import StartupError, bind_listeners, lock_data_dir
from unbroken.sdk import log_records, tracing
from unbroken.sdk.app import App
from unbroken.wiring import advertise, build_from_config, cluster_parts, read_model

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


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one where the OS allows (the common default of 1,024 is
    exhausted by ~1,000 idle connections); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    for target in (wanted, 10240):  # macOS refuses more than OPEN_MAX (10,240) whatever the hard limit
        if target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            continue
    return soft


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_MMAP_THRESHOLD_BYTES = 1024 * 1024


def return_large_blocks_to_the_os() -> None:
    """Fix glibc's mmap threshold, so blocks of 1 MiB and more (request bodies, results) are mapped on their
    own and unmapped when freed. Left dynamic, the threshold rises to the largest block freed (up to 32 MiB):
    the next 30 MiB bodies then come from the heap, whose fragments stay resident (16 concurrent 30 MiB
    calls left 359 MiB of RSS behind, 218-315 MiB with this in 5 runs; scripts/ingress_body_rss.py)."""
    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc (macOS has no mallopt): nothing to tune
        pass


def connections_max(open_files: int) -> int:
    """Connections per listener: the named bound, lowered so both listeners fit under the file limit."""
    return max(16, min(limits.http_connections_max, (open_files - limits.fds_reserved_count) // 2))


def _uvicorn(
    app: Any,
    bind: tuple[str, int],
    error_body: ErrorBody,
    error_headers: bytes = b"",
    conns: int = 1024,
    channel_body_limit: int | None = None,
) -> _Server:
    config = uvicorn.Config(
        # httptools, with the request head (time, size) and the connections bounded (http/wire.py)
        app,
        host=bind[0],
        port=bind[1],
        http=bounded_protocol(error_body, error_headers, conns, channel_body_limit),
        loop="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
        proxy_headers=False,
        timeout_keep_alive=60,
        backlog=4096,
        # A call or attach can wait on an invocation for days: don't let it hold up SIGTERM forever
        # (the invocation is durable; the client re-attaches after the restart).
        timeout_graceful_shutdown=2,
    )
    return _Server(config)


def _url(bind: tuple[str, int]) -> str:
    """The URL another node reaches a listener at: a wildcard bind is reached at this host's name."""
    host = bind[0] if bind[0] not in ("", "0.0.0.0", "::") else socket.gethostname()
    return f"http://{f'[{host}]' if ':' in host else host}:{bind[1]}"


def _setup_logging(config: Config) -> None:
    level = getattr(logging, config.log_level.upper(), logging.INFO)
    fmt = (
        "%(asctime)s %(levelname)-5s %(message)s"
        if config.dev
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log_records.install(level, config.log_format, fmt, "%H:%M:%S", sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request to a remote deployment


def build_engine(app: App, config: Config) -> tuple[Node, Store]:
    """The node of ``app`` on its store (``unbroken.wiring``: the one place nodes are built)."""
    return build_from_config(app, config)


def _listeners(config: Config) -> tuple[list[socket.socket], list[socket.socket]]:
    """Both listeners' sockets, bound before anything says "serving" (a port in use: StartupError)."""
    ingress = bind_listeners(
        *config.ingress_host_port, "ingress", "--ingress-bind", limits.listen_backlog_connections_max
    )
    try:
        admin = bind_listeners(
            *config.admin_host_port, "admin API", "--admin-bind", limits.listen_backlog_connections_max
        )
    except StartupError:
        for sock in ingress:
            sock.close()
        raise
    return ingress, admin


async def run(
    app: App,
    config: Config,
    listeners: tuple[list[socket.socket], list[socket.socket]],
    started: asyncio.Event | None = None,
) -> None:
    tracing.configure_from_env()  # the OTEL_ variables; off (nothing imported) when they ask for nothing
    engine, store = build_engine(app, config)
    engine.start()
    # The ports bound (they differ from the config's when it asked for port 0).
    ingress_bind = (config.ingress_host_port[0], listeners[0][0].getsockname()[1])
    admin_bind = (config.admin_host_port[0], listeners[1][0].getsockname()[1])
    partitions = engine.partitions
    advertise(  # where the other nodes reach this one, and its lag for GET /cluster
        store, _url(ingress_bind), _url(admin_bind), lambda: sum(p.processor.queued() for p in partitions)
    )
    dep = deployment_id(
        hashlib.sha256(b"local:" + ",".join(sorted(engine.schemas.services)).encode()).digest()[:16]
    )
    conns = connections_max(raise_open_file_limit())
    return_large_blocks_to_the_os()
    admin_url = _url(admin_bind)
    clustered = cluster_parts(store, engine)
    forwarder = clustered[0] if clustered is not None else None
    if clustered is not None:
        clustered[1].start()
    ingress_app = IngressApp(
        engine, config.request_size_limit_bytes, token=config.ingress_token, cluster=forwarder
    )
    ingress = _uvicorn(  # clustered: the other nodes' channel rides on it (cluster/channel.py)
        ingress_app,
        ingress_bind,
        _ingress_error,
        b"x-restate-error-source: ingress\r\n",
        conns,
        config.request_size_limit_bytes if forwarder is not None else None,
    )
    admin_app = AdminApp(
        engine,
        read_model(store),
        dep,
        f"http://{ingress_bind[0]}:{ingress_bind[1]}/",
        body_limit_bytes=config.request_size_limit_bytes,
        token=config.admin_token,
        cluster=forwarder,
        node_name=forwarder.node if forwarder is not None else (config.node_name or socket.gethostname()),
        admin_url=admin_url,
    )
    admin = _uvicorn(admin_app, admin_bind, _admin_error, conns=conns)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        ingress_app.close()  # requests waiting on invocations answer 503 now, not a traceback at the deadline
        ingress.should_exit = True
        admin.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
    serving = asyncio.gather(ingress._serve(listeners[0]), admin._serve(listeners[1]))
    await asyncio.sleep(0)
    log.info(
        "unbroken serving %d services: ingress http://%s:%d, admin http://%s:%d, data %s",
        len(engine.schemas.services),
        *ingress_bind,
        *admin_bind,
        config.data_dir,
    )
    if started is not None:
        started.set()
    # What start-up built (modules, the engine, the schemas) lives as long as the process: out of the
    # collector's view (gc.freeze), the full collections that steady load triggers now and then no longer
    # traverse it: ~9M instructions each over the whole heap, ~40k per echo call over 480 calls in which one
    # fell (bench/instructions.py). Start-up's garbage is collected first.
    gc.collect()
    gc.freeze()
    try:
        await serving
    finally:
        if clustered is not None:
            await clustered[1].stop()
            await clustered[0].aclose()
        await engine.stop()
        admin_app.close()
        store.close()
        tracing.shutdown()  # flush the spans still buffered
        log.info("unbroken stopped")


def serve(app: object, config: Config, on_listening: Callable[[], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT (blocking).

    Raises :class:`StartupError` (before anything is announced) when another server holds the data dir
    or a port is in use; ``on_listening`` runs once both ports are bound (the dev banner).
    """
    if not isinstance(app, App):
        raise TypeError(f"expected an unbroken App (from unbroken.app([...])), got {type(app).__name__}")
    lock_fd = lock_data_dir(config.data_dir, config.ingress_bind, config.admin_bind)
    try:
        listeners = _listeners(config)
        if on_listening is not None:
            on_listening()
        _setup_logging(config)
        try:
            import uvloop

            uvloop.run(run(app, config, listeners))
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
            asyncio.run(run(app, config, listeners))
    finally:
        os.close(lock_fd)  # the kernel would release it at exit anyway; this is for in-process callers
