"""``unbroken.endpoint``: the same module path as ``restate.endpoint`` (``Endpoint`` is the App)."""

from unbroken.sdk.app import App, app

Endpoint = App

__all__ = ["App", "Endpoint", "app"]
