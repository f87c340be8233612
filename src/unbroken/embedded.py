"""An App served by any ASGI server (``hypercorn.asyncio.serve(app, conf)``, ``uvicorn mod:app``) runs a
whole Unbroken node: the lifespan starts the embedded engine (configuration as ``unbroken serve`` reads it:
defaults, the ``UNBROKEN_CONFIG`` file, ``UNBROKEN_…``/``RESTATE_…`` environment; data in ``./.unbroken`` by
default) and the app answers the ingress routes (``/Service/handler``, ``/restate/...``). The admin API is
``unbroken serve``'s; this mode has none.

Part of the composition root: ``sdk/asgi.py`` reaches it only through the factory ``unbroken/__init__.py``
installs, so the SDK imports nothing of the engine, the ingress or the store.
"""

from __future__ import annotations

import asyncio
import logging

from unbroken.config import load_config
from unbroken.core.storage import Store
from unbroken.ingress.app import IngressApp
from unbroken.runtime.node import Node
from unbroken.sdk import tracing
from unbroken.sdk.app import App
from unbroken.sdk.asgi import Receive, Scope, Send
from unbroken.wiring import build_from_config

log = logging.getLogger("unbroken")


class EmbeddedNode:
    """The engine one App runs under an ASGI server: started by the lifespan (or the first request)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.engine: Node | None = None
        self.store: Store | None = None
        self.ingress: IngressApp | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> IngressApp:
        async with self._lock:
            if self.ingress is None:
                config = load_config()
                tracing.configure_from_env()
                self.engine, self.store = build_from_config(self.app, config)
                self.engine.start()
                self.ingress = IngressApp(
                    self.engine, config.request_size_limit_bytes, token=config.ingress_token
                )
                log.info(
                    "unbroken engine started under an ASGI server: %d services, data %s",
                    len(self.engine.schemas.services),
                    config.data_dir,
                )
            return self.ingress

    async def stop(self) -> None:
        async with self._lock:
            if self.engine is not None:
                await self.engine.stop()
            if self.store is not None:
                self.store.close()
            self.engine = self.store = self.ingress = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        ingress = self.ingress or await self.start()
        await ingress(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:  # the server reports it and exits: nothing was started
                    log.exception("unbroken could not start")
                    await send(
                        {"type": "lifespan.startup.failed", "message": f"unbroken could not start: {exc}"}
                    )
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
