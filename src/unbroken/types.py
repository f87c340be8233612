"""``unbroken.types``: the same module path as ``restate.types``.

``HarnessEnvironment`` is what restate-sdk's test harness yields; the harness itself is not built yet
(see the README), the type is here so annotations importing it keep working.
"""

from __future__ import annotations

from dataclasses import dataclass

from unbroken.sdk.client_types import RestateClient


@dataclass
class HarnessEnvironment:
    ingress_url: str
    admin_api_url: str
    client: RestateClient


__all__ = ["HarnessEnvironment"]
