"""What every serde shares: the :class:`Serde` base, :class:`SerdeError`, reading a type hint, and JSON out.

The helpers here are private to the ``unbroken.sdk.serde`` package (its modules import them); users import
the public names from ``unbroken.sdk.serde`` (or ``unbroken.serde``).
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import decimal
import enum
import inspect
import json
import sys
import typing
import uuid
from typing import Any, Generic, TypeVar

import msgspec
import orjson

T = TypeVar("T")

_NoneType: type[None] = type(None)


class SerdeError(ValueError):
    """A value could not be (de)serialized.

    The message names the expected type (when there is one) and what went wrong.
    """


class Serde(Generic[T], abc.ABC):
    """Serializer / deserializer for values of type ``T``."""

    @abc.abstractmethod
    def deserialize(self, buf: bytes) -> T | None:
        """Turn bytes into a value. Raises :class:`SerdeError` on invalid input."""

    @abc.abstractmethod
    def serialize(self, obj: T | None) -> bytes:
        """Turn a value into bytes."""


# ---------------------------------------------------------------------------
# Low level JSON helpers
# ---------------------------------------------------------------------------


def _pydantic_base_model() -> type[Any] | None:
    """``pydantic.BaseModel`` if pydantic has been imported, else None.

    pydantic is imported lazily: if nobody imported it, no value or type can be a pydantic model,
    so there is no need to pay its import cost.
    """
    mod = sys.modules.get("pydantic.main")
    if mod is None:
        return None
    base: type[Any] | None = getattr(mod, "BaseModel", None)
    return base


def _is_pydantic_model_type(tp: object) -> bool:
    base = _pydantic_base_model()
    return base is not None and isinstance(tp, type) and issubclass(tp, base)


def _is_msgspec_struct_type(tp: object) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _default(obj: Any) -> Any:
    """``default=`` hook for orjson (and for the stdlib json fallback).

    orjson natively handles dataclasses, enums, datetimes, UUIDs and tuples; the stdlib fallback
    needs those too, so they are handled here as well (after the cases orjson needs).
    """
    base = _pydantic_base_model()
    if base is not None and isinstance(obj, base):
        return obj.model_dump(mode="json")
    if isinstance(obj, msgspec.Struct):
        return msgspec.to_builtins(obj)
    if isinstance(obj, set | frozenset | tuple):  # tuple: namedtuples (orjson rejects them)
        return list(obj)
    if isinstance(obj, decimal.Decimal):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, datetime.date | datetime.time):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def _dumps_slow(obj: Any, err: Exception) -> bytes:
    """Fallback when orjson refuses a value (non-str dict keys, ints beyond 64 bits, ...)."""
    try:
        return json.dumps(
            obj, default=_default, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as e:
        raise SerdeError(f"cannot serialize {type(obj).__name__} as JSON: {err}") from e


def _dumps(obj: Any) -> bytes:
    if obj is None:
        return b""
    try:
        return orjson.dumps(obj, default=_default)
    except orjson.JSONEncodeError as e:
        return _dumps_slow(obj, e)


def _type_name(tp: object) -> str:
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        return tp.__qualname__
    return repr(tp).replace("typing.", "").replace("typing_extensions.", "")


def _invalid_json(err: Exception, tp: object | None) -> SerdeError:
    if tp is None:
        return SerdeError(f"invalid JSON: {err}")
    return SerdeError(f"invalid JSON: {err} (expected {_type_name(tp)})")


def _json_type(data: Any) -> str:
    if data is None:
        return "null"
    if isinstance(data, bool):
        return "boolean"
    if isinstance(data, int | float):
        return "number"
    if isinstance(data, str):
        return "string"
    if isinstance(data, list):
        return "array"
    if isinstance(data, dict):
        return "object"
    return type(data).__name__


def _pydantic_errors(exc: Any) -> tuple[bool, str]:
    """(is_invalid_json, compact message) for a pydantic ValidationError."""
    errors = exc.errors(include_url=False)
    if any(e.get("type") == "json_invalid" for e in errors):
        msgs = [str(e.get("ctx", {}).get("error", e.get("msg"))) for e in errors]
        return True, "; ".join(msgs)
    count = len(errors)
    return False, f"{count} validation error{'s' if count != 1 else ''}: " + _pydantic_problems(errors)


def _pydantic_problems(errors: list[Any]) -> str:
    """``field.path: what is wrong; ...`` for the ``errors()`` of a pydantic ValidationError."""
    parts = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts)


# ---------------------------------------------------------------------------
# Type hints
# ---------------------------------------------------------------------------


def _is_untyped(tp: object) -> bool:
    return tp is None or tp is _NoneType or tp is Any or tp is object or tp is inspect.Parameter.empty


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated[...]`` and ``NewType`` wrappers."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif isinstance(tp, typing.NewType):
            tp = tp.__supertype__
        else:
            return tp
