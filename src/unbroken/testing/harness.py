"""restate-sdk's test harness, without Docker: ``unbroken.test_harness`` and ``unbroken.create_test_harness``.

restate-sdk 1.2.0's harness starts restate-server in a container and the app on an ASGI server. Here the
whole engine runs in a thread of the test process: a :class:`~unbroken.testing.engine.TestEngine` (a
temporary SQLite store, virtual time that jumps to the next timer when every invocation waits on one) with
the real ingress and admin API served over HTTP on free loopback ports. The names, the parameters and what
they yield are restate-sdk's, so a test written for its harness runs unchanged with ``import unbroken as
restate``; ``restate_image`` is accepted and ignored (there is no container).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn

from unbroken.admin.app import AdminApp
from unbroken.core import limits
from unbroken.core.ids import deployment_id
from unbroken.ingress.app import IngressApp
from unbroken.sdk.app import App
from unbroken.sdk.client import create_client
from unbroken.storage.sqlite_reads import SqliteReadModel
from unbroken.testing.engine import TestEngine
from unbroken.types import HarnessEnvironment

log = logging.getLogger("unbroken.testing")

DEFAULT_IMAGE = "docker.io/restatedev/restate:latest"  # restate-sdk's default, accepted and unused


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _server(app: Any) -> uvicorn.Server:
    config = uvicorn.Config(
        app, loop="none", lifespan="off", access_log=False, log_level="warning", timeout_graceful_shutdown=1
    )
    return uvicorn.Server(config)  # off the main thread: uvicorn leaves the signals alone


class RestateTestHarness:
    """The engine, its ingress and its admin API, in a background thread (restate-sdk's class of that name:
    ``start``/``stop``, a context manager, ``ingress_client()``)."""

    def __init__(
        self,
        app: App,
        *,
        follow_logs: bool = False,
        always_replay: bool = False,
        disable_retries: bool = False,
    ) -> None:
        self.app = app
        self.follow_logs = follow_logs
        self.always_replay = always_replay
        self.disable_retries = disable_retries
        self.ingress_url = ""
        self.admin_api_url = ""
        self.engine: TestEngine | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._clients: list[httpx.Client] = []
        self._logs: _FollowLogs | None = None

    # ------------------------------------------------------------------------------------- lifecycle
    def start(self) -> RestateTestHarness:
        if self.follow_logs:
            self._logs = _FollowLogs()
            self._logs.__enter__()
        self._thread = threading.Thread(target=self._run, name="unbroken-test-harness", daemon=True)
        self._thread.start()
        if not self._ready.wait(limits.testkit_harness_start_s_max):
            raise TimeoutError(f"the test engine did not start within {limits.testkit_harness_start_s_max}s")
        if self._error is not None:
            raise RuntimeError(f"the test engine could not start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended already
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(limits.testkit_harness_stop_s_max)
            self._thread = None
        if self._logs is not None:
            self._logs.__exit__()
            self._logs = None

    def __enter__(self) -> RestateTestHarness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def ingress_client(self) -> httpx.Client:
        """An httpx client on the ingress (as restate-sdk's harness gives); closed by ``stop()``, so a test
        that never closes it leaks no socket."""
        return self._keep(httpx.Client(base_url=self.ingress_url))

    def admin_client(self) -> httpx.Client:
        return self._keep(httpx.Client(base_url=self.admin_api_url))

    def _keep(self, client: httpx.Client) -> httpx.Client:
        self._clients.append(client)
        return client

    # ------------------------------------------------------------------------------------- the thread
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the thread that waits for the start
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        engine = TestEngine(
            self.app,
            always_replay=self.always_replay,
            disable_retries=self.disable_retries,
            dev=self.follow_logs,
        )
        await engine.start()
        self.engine = engine
        node, store = engine.node, engine.store
        assert node is not None and store is not None
        ingress_sock, admin_sock = _listener(), _listener()
        self.ingress_url = f"http://127.0.0.1:{ingress_sock.getsockname()[1]}"
        self.admin_api_url = f"http://127.0.0.1:{admin_sock.getsockname()[1]}"
        ingress_app = IngressApp(node)
        services = ",".join(sorted(node.schemas.services)).encode()
        admin_app = AdminApp(
            node,
            SqliteReadModel(store.path),
            deployment_id(hashlib.sha256(b"test:" + services).digest()[:16]),
            self.ingress_url + "/",
        )
        ingress, admin = _server(ingress_app), _server(admin_app)
        serving = asyncio.gather(ingress.serve([ingress_sock]), admin.serve([admin_sock]))
        try:
            while not (ingress.started and admin.started):
                if serving.done():
                    serving.result()  # raises why they could not start
                await asyncio.sleep(0.001)
            self._ready.set()
            await self._stop.wait()
        finally:
            ingress_app.close()
            ingress.should_exit = admin.should_exit = True
            with contextlib.suppress(Exception):
                await serving
            admin_app.close()
            await engine.stop()


class _FollowLogs:
    """``follow_logs``: the engine's log (every step of every attempt) on stderr while the harness runs."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("unbroken")
        self.handler = logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s"))
        self.level = self.logger.level

    def __enter__(self) -> None:
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)


def test_harness(
    app: App,
    follow_logs: bool = False,
    restate_image: str = DEFAULT_IMAGE,
    always_replay: bool = False,
    disable_retries: bool = False,
) -> RestateTestHarness:
    """restate-sdk's ``test_harness``: ``with test_harness(app) as harness: harness.ingress_client()...``"""
    del restate_image  # no container: the engine runs in this process
    return RestateTestHarness(
        app, follow_logs=follow_logs, always_replay=always_replay, disable_retries=disable_retries
    )


test_harness.__test__ = False  # type: ignore[attr-defined]  # a function named test_*: not a pytest test


@contextlib.asynccontextmanager
async def create_test_harness(
    app: App,
    follow_logs: bool = False,
    restate_image: str = DEFAULT_IMAGE,
    always_replay: bool = False,
    disable_retries: bool = False,
    journal_value_codec: Any = None,
) -> AsyncIterator[HarnessEnvironment]:
    """restate-sdk's ``create_test_harness``: ``async with create_test_harness(app) as env: await
    env.client.service_call(handler, arg=...)``; ``env.ingress_url`` and ``env.admin_api_url`` too."""
    harness = test_harness(
        app,
        follow_logs=follow_logs,
        restate_image=restate_image,
        always_replay=always_replay,
        disable_retries=disable_retries,
    )
    await asyncio.to_thread(harness.start)
    try:
        async with create_client(harness.ingress_url, journal_value_codec=journal_value_codec) as client:
            yield HarnessEnvironment(
                ingress_url=harness.ingress_url, admin_api_url=harness.admin_api_url, client=client
            )
    finally:
        await asyncio.to_thread(harness.stop)
