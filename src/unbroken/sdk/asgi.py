"""``unbroken.app([...])`` as an ASGI application: ``hypercorn.asyncio.serve(app, conf)``, ``uvicorn mod:app``.

restate-sdk's app is an ASGI endpoint that a Restate server drives over its service protocol. Until
Unbroken speaks that protocol, the App served by any ASGI server is a whole Unbroken node instead
(``unbroken/embedded.py``). The SDK does not build it: the composition root installs the factory here
(``unbroken/__init__.py``), so nothing in ``sdk/`` imports the engine, the ingress or the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_node_factory: Callable[[Any], AsgiApp] | None = None


def install_node_factory(factory: Callable[[Any], AsgiApp]) -> None:
    """Called once by the composition root: how an App served over ASGI builds its node."""
    global _node_factory
    _node_factory = factory


def embedded_node(app: Any) -> AsgiApp:
    if _node_factory is None:
        raise RuntimeError(
            "no node factory installed: import unbroken (the package) to serve an App over ASGI"
        )
    return _node_factory(app)
