"""Choosing a serde from a type hint: :class:`DefaultSerde`, :func:`serde_for_type` (cached per type) and
:func:`json_schema_for` (for discovery metadata)."""

from __future__ import annotations

import inspect
import typing
import warnings
from typing import Any, TypeVar, overload

import msgspec

from unbroken.sdk.serde.base import (
    Serde,
    T,
    _is_msgspec_struct_type,
    _is_pydantic_model_type,
    _is_untyped,
    _NoneType,
    _type_name,
    _unwrap,
)
from unbroken.sdk.serde.convert import _converter_for
from unbroken.sdk.serde.serdes import (
    BytesSerde,
    JsonSerde,
    PydanticJsonSerde,
    _ConvertingJsonSerde,
    _MsgspecJsonSerde,
)

U = TypeVar("U")


class DefaultSerde(Serde[T]):
    """The serde used when none is given: chosen from the type hint.

    * pydantic ``BaseModel`` subclass -> :class:`PydanticJsonSerde`
    * dataclass -> JSON of its fields out, the dataclass (recursively) constructed in
    * ``TypedDict`` -> JSON object
    * ``bytes`` -> raw bytes (:class:`BytesSerde`)
    * ``msgspec.Struct`` subclass -> ``msgspec.json``
    * anything else (``int``, ``str``, ``list[int]``, ``Optional[...]``, ...) -> JSON; values are
      checked against the hint (nested dataclasses / models inside generics are constructed).
    * no hint -> JSON of any value; plain Python values out of ``deserialize``.
    """

    @overload
    def __init__(self: DefaultSerde[Any], type_hint: None = None) -> None: ...
    @overload
    def __init__(self, type_hint: type[T]) -> None: ...
    @overload
    def __init__(self: DefaultSerde[Any], type_hint: object) -> None: ...
    def __init__(self, type_hint: object = None) -> None:
        self.type_hint = type_hint
        self._serde: Serde[Any] = serde_for_type(type_hint)

    @overload
    def with_maybe_type(self, type_hint: None = None) -> DefaultSerde[Any]: ...
    @overload
    def with_maybe_type(self, type_hint: type[U]) -> DefaultSerde[U]: ...
    @overload
    def with_maybe_type(self, type_hint: object) -> DefaultSerde[Any]: ...
    def with_maybe_type(self, type_hint: object = None) -> DefaultSerde[Any]:
        """A ``DefaultSerde`` for ``type_hint`` (restate-sdk API)."""
        return DefaultSerde(type_hint)

    def deserialize(self, buf: bytes) -> T | None:
        return self._serde.deserialize(buf)

    def serialize(self, obj: T | None) -> bytes:
        return self._serde.serialize(obj)

    def __repr__(self) -> str:
        if self.type_hint is None:
            return "DefaultSerde()"
        return f"DefaultSerde({_type_name(self.type_hint)})"


_UNTYPED_JSON: JsonSerde[Any] = JsonSerde()
_SERDES: dict[Any, Serde[Any]] = {}


def _make_serde(tp: Any) -> Serde[Any]:
    if _is_untyped(tp):
        return _UNTYPED_JSON
    base = _unwrap(tp)
    if _is_untyped(base):
        return _UNTYPED_JSON
    if base is bytes:
        return BytesSerde()
    if _is_pydantic_model_type(base):
        return PydanticJsonSerde(base)
    if _is_msgspec_struct_type(base):
        return _MsgspecJsonSerde(base)
    conv = _converter_for(tp)
    if conv is None:
        return JsonSerde(tp)
    return _ConvertingJsonSerde(tp, conv)


def pick_serde(given: Serde[Any] | None, type_hint: Any, *, hint_wins: bool = True) -> Serde[Any]:
    """The serde to use: ``given``, unless it is None or a ``DefaultSerde`` without a hint: then the one for
    ``type_hint``. A ``DefaultSerde(X)`` keeps ``X`` unless ``hint_wins`` (restate-sdk's rules: the
    ``type_hint=`` of a ``ctx`` call replaces it, as its ``with_maybe_type`` does; a handler's signature
    does not replace the serde given to its decorator, ``hint_wins=False``)."""
    if given is None:
        return serde_for_type(type_hint)
    if type(given) is DefaultSerde and (given.type_hint is None or (hint_wins and type_hint is not None)):
        return serde_for_type(type_hint)
    return given


def serde_for_type(tp: object | None) -> Serde[Any]:
    """The serde :class:`DefaultSerde` uses for type hint ``tp`` (cached per type).

    ``None`` (or ``typing.Any``, ``object``, ``inspect.Parameter.empty``) means "no hint":
    any value is serialized as JSON and JSON is deserialized to plain Python values.
    """
    try:
        return _SERDES[tp]
    except KeyError:
        serde = _SERDES[tp] = _make_serde(tp)
        return serde
    except TypeError:  # unhashable hint
        return _make_serde(tp)


def json_schema_for(tp: object | None) -> dict[str, Any] | None:
    """A JSON schema for type hint ``tp``, or None when there is none (no hint, ``bytes``) or it
    cannot be generated."""
    if tp is None or tp is _NoneType or tp is inspect.Parameter.empty:
        return None
    base = _unwrap(tp)
    if base is bytes:
        return None
    if not _is_msgspec_struct_type(base):
        try:
            from pydantic import TypeAdapter

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                schema: dict[str, Any] = TypeAdapter(typing.cast(Any, tp)).json_schema()
            return schema
        except Exception:
            pass
    try:
        msgspec_schema: dict[str, Any] = msgspec.json.schema(tp)
        return msgspec_schema
    except Exception:
        return None
