"""``unbroken.client``: the same module path as ``restate.client``."""

from unbroken.sdk.client import Client, ScopedClient, create_client

__all__ = ["Client", "ScopedClient", "create_client"]
