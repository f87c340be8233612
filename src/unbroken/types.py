"""``unbroken.types``: the same module path as ``restate.types``.

``HarnessEnvironment`` is what ``create_test_harness`` yields (``unbroken.testing.harness``), as restate-sdk's
test harness does.
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
