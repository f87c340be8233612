"""``unbroken.client_types``: the same module path as ``restate.client_types``."""

from unbroken.sdk.client_types import HttpError, RestateClient, RestateClientSendHandle, RestateScopedClient

__all__ = ["HttpError", "RestateClient", "RestateClientSendHandle", "RestateScopedClient"]
