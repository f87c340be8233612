"""The operator's routes of the admin server: ``GET /metrics`` (Prometheus) and the web UI at ``/ui``.

The UI is static HTML, JavaScript and CSS shipped in the package (``admin/ui/``: no build step, no CDN,
works offline); in the browser it calls the admin API itself (``/query``, ``/services``, the invocation
controls), sending the admin token the operator typed in as ``authorization: Bearer``.
"""

from __future__ import annotations

from importlib import resources
from typing import Protocol

from unbroken.admin import metrics
from unbroken.core.read_model import ReadModel
from unbroken.http.asgi import HttpError, Send, respond
from unbroken.runtime.node import Node

_CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
# The page runs only its own files: no inline script, nothing from another origin.
_UI_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache"),
]


class _Request(Protocol):
    send: Send
    params: dict[str, str]


def _load_assets() -> dict[str, tuple[bytes, bytes]]:
    """name -> (content type, bytes) of every file shipped in ``admin/ui`` (read once)."""
    folder = resources.files("unbroken.admin").joinpath("ui")
    out: dict[str, tuple[bytes, bytes]] = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in _CONTENT_TYPES:
            out[item.name] = (_CONTENT_TYPES[suffix], item.read_bytes())
    return out


class OperatorRoutes:
    """Mixed into ``AdminApp`` (which sets ``engine`` and ``reads``)."""

    engine: Node
    reads: ReadModel
    _ui_assets: dict[str, tuple[bytes, bytes]] | None = None

    async def metrics(self, req: _Request) -> None:
        body = await metrics.render(self.engine, self.reads)
        await respond(req.send, 200, body, [(b"content-type", metrics.CONTENT_TYPE.encode())])

    async def ui_page(self, req: _Request) -> None:
        await self._ui_file(req, "index.html")

    async def ui_asset(self, req: _Request) -> None:
        await self._ui_file(req, req.params["asset"])

    async def _ui_file(self, req: _Request, name: str) -> None:
        if self._ui_assets is None:
            self._ui_assets = _load_assets()
        found = self._ui_assets.get(name)
        if found is None:
            raise HttpError(404, f"not found: /ui/{name}")
        content_type, body = found
        await respond(req.send, 200, body, [(b"content-type", content_type), *_UI_HEADERS])
