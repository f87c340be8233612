"""Serialization / deserialization of handler inputs, outputs and state values.

The public names mirror ``restate.serde`` from restate-sdk 1.2.0:

* :class:`Serde` -- the abstract base class (``serialize`` / ``deserialize``).
* :class:`JsonSerde` -- plain JSON (via ``orjson``).
* :class:`BytesSerde` -- raw bytes, identity.
* :class:`PydanticJsonSerde` -- a pydantic model, via ``model_dump_json`` / ``model_validate_json``.
* :class:`DefaultSerde` -- picks one of the above (or a dataclass / TypedDict / msgspec aware JSON
  serde) from a type hint.

Conventions shared by all serdes (as in restate-sdk): ``serialize(None)`` returns ``b""`` and
``deserialize(b"")`` returns ``None`` (``BytesSerde`` returns the buffer unchanged).

Helpers used by the SDK internals:

* :func:`serde_for_type` -- the right serde for a type hint, computed once per type and cached.
* :func:`json_schema_for` -- a JSON schema for a type hint, for service discovery metadata.

Deserialization failures raise :class:`SerdeError` (a ``ValueError``) whose message names the
expected type and what went wrong; the engine turns it into a 400 / ``TerminalError``.

The package, one concept a module: :mod:`.base` (the base class, hint reading, JSON out), :mod:`.serdes` (the
fixed-format serdes), :mod:`.convert` (the type-directed converter compiler), :mod:`.select` (choosing a serde
from a hint) and :mod:`.input_check` (a handler's input checked at the ingress).
"""

from __future__ import annotations

from unbroken.sdk.serde.base import Serde, SerdeError
from unbroken.sdk.serde.select import DefaultSerde, json_schema_for, serde_for_type
from unbroken.sdk.serde.serdes import BytesSerde, JsonSerde, PydanticJsonSerde

__all__ = [
    "BytesSerde",
    "DefaultSerde",
    "JsonSerde",
    "PydanticJsonSerde",
    "Serde",
    "SerdeError",
    "json_schema_for",
    "serde_for_type",
]
