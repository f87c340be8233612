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
"""

from __future__ import annotations

import abc
import collections
import collections.abc
import dataclasses
import datetime
import decimal
import enum
import inspect
import json
import sys
import threading
import types
import typing
import uuid
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import msgspec
import orjson
import typing_extensions

if TYPE_CHECKING:
    from pydantic import BaseModel

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

T = TypeVar("T")
U = TypeVar("U")
M = TypeVar("M", bound="BaseModel")

_NoneType: type[None] = type(None)


class SerdeError(ValueError):
    """A value could not be (de)serialized.

    The message names the expected type (when there is one) and what went wrong.
    """


# ---------------------------------------------------------------------------
# Abstract base
# ---------------------------------------------------------------------------


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
    parts = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    count = len(errors)
    return False, f"{count} validation error{'s' if count != 1 else ''}: " + "; ".join(parts)


# ---------------------------------------------------------------------------
# Public serdes
# ---------------------------------------------------------------------------


class BytesSerde(Serde[bytes]):
    """Identity serde for raw bytes (``None`` serializes to ``b""``)."""

    def deserialize(self, buf: bytes) -> bytes | None:
        return buf

    def serialize(self, obj: bytes | None) -> bytes:
        if obj is None:
            return b""
        return obj

    def __repr__(self) -> str:
        return "BytesSerde()"


class JsonSerde(Serde[T]):
    """Plain JSON (via orjson). ``serialize(None) == b""``; ``deserialize(b"") is None``.

    Values are deserialized to plain Python values (dict, list, str, int, float, bool, None);
    the optional ``type_hint`` is only used in error messages. Pydantic models, dataclasses and
    msgspec structs are converted automatically on serialize.
    """

    @overload
    def __init__(self: JsonSerde[Any], type_hint: None = None) -> None: ...
    @overload
    def __init__(self, type_hint: type[T]) -> None: ...
    @overload
    def __init__(self: JsonSerde[Any], type_hint: object) -> None: ...
    def __init__(self, type_hint: object = None) -> None:
        self.type_hint = type_hint

    def deserialize(self, buf: bytes) -> T | None:
        if not buf:
            return None
        try:
            value: T | None = orjson.loads(buf)
        except orjson.JSONDecodeError as e:
            raise _invalid_json(e, self.type_hint) from None
        return value

    def serialize(self, obj: T | None) -> bytes:
        if obj is None:
            return b""
        try:
            return orjson.dumps(obj, default=_default)
        except orjson.JSONEncodeError as e:
            return _dumps_slow(obj, e)

    def __repr__(self) -> str:
        if self.type_hint is None:
            return "JsonSerde()"
        return f"JsonSerde({_type_name(self.type_hint)})"


class PydanticJsonSerde(Serde[M]):
    """A pydantic model: ``model_dump_json`` out, ``model_validate_json`` in."""

    def __init__(self, model: type[M]) -> None:
        from pydantic import ValidationError

        self.model = model
        self._validation_error: type[Exception] = ValidationError

    def deserialize(self, buf: bytes) -> M | None:
        if not buf:
            return None
        try:
            return self.model.model_validate_json(buf)
        except self._validation_error as e:
            invalid_json, msg = _pydantic_errors(e)
            if invalid_json:
                raise SerdeError(f"invalid JSON: {msg} (expected {self.model.__qualname__})") from None
            raise SerdeError(f"cannot deserialize {self.model.__qualname__}: {msg}") from None

    def serialize(self, obj: M | None) -> bytes:
        if obj is None:
            return b""
        if isinstance(obj, self.model):
            return obj.model_dump_json().encode("utf-8")
        return _dumps(obj)  # e.g. a plain dict returned where a model was declared

    def __repr__(self) -> str:
        return f"PydanticJsonSerde({self.model.__qualname__})"


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


# ---------------------------------------------------------------------------
# Internal serdes
# ---------------------------------------------------------------------------


class _MsgspecJsonSerde(Serde[Any]):
    """A ``msgspec.Struct`` subclass via ``msgspec.json``."""

    def __init__(self, tp: type[msgspec.Struct]) -> None:
        self.type_hint = tp
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(tp)
        self._encoder = msgspec.json.Encoder()

    def deserialize(self, buf: bytes) -> Any:
        if not buf:
            return None
        try:
            return self._decoder.decode(buf)
        except msgspec.ValidationError as e:
            raise SerdeError(f"cannot deserialize {_type_name(self.type_hint)}: {e}") from None
        except msgspec.DecodeError as e:
            raise _invalid_json(e, self.type_hint) from None

    def serialize(self, obj: Any) -> bytes:
        if obj is None:
            return b""
        try:
            return self._encoder.encode(obj)
        except (TypeError, msgspec.EncodeError):
            return _dumps(obj)

    def __repr__(self) -> str:
        return f"_MsgspecJsonSerde({_type_name(self.type_hint)})"


class _ConvertingJsonSerde(Serde[Any]):
    """JSON, then a precompiled converter (type checks, dataclass construction, ...)."""

    def __init__(self, tp: object, convert: _Conv) -> None:
        self.type_hint = tp
        self._convert = convert

    def deserialize(self, buf: bytes) -> Any:
        if not buf:
            return None
        try:
            data = orjson.loads(buf)
        except orjson.JSONDecodeError as e:
            raise _invalid_json(e, self.type_hint) from None
        try:
            return self._convert(data)
        except _ConvError as e:
            raise SerdeError(f"cannot deserialize {_type_name(self.type_hint)}: {e.describe()}") from None

    def serialize(self, obj: Any) -> bytes:
        if obj is None:
            return b""
        try:
            return orjson.dumps(obj, default=_default)
        except orjson.JSONEncodeError as e:
            return _dumps_slow(obj, e)

    def __repr__(self) -> str:
        return f"_ConvertingJsonSerde({_type_name(self.type_hint)})"


# ---------------------------------------------------------------------------
# Converters: JSON-decoded plain values -> values of the hinted type
# ---------------------------------------------------------------------------

_Conv = Callable[[Any], Any]


class _ConvError(Exception):
    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg
        self.path: list[str | int] = []

    def at(self, seg: str | int) -> _ConvError:
        self.path.insert(0, seg)
        return self

    def describe(self) -> str:
        if not self.path:
            return self.msg
        loc = "$" + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in self.path)
        return f"at {loc}: {self.msg}"


_SEQUENCE_ORIGINS: frozenset[Any] = frozenset(
    {
        list,
        collections.abc.Sequence,
        collections.abc.MutableSequence,
        collections.abc.Iterable,
        collections.abc.Collection,
    }
)
_SET_ORIGINS: frozenset[Any] = frozenset({set, frozenset, collections.abc.Set, collections.abc.MutableSet})
_MAPPING_ORIGINS: frozenset[Any] = frozenset(
    {dict, collections.abc.Mapping, collections.abc.MutableMapping, collections.OrderedDict}
)


def _check_int(data: Any) -> Any:
    if data is None or (isinstance(data, int) and not isinstance(data, bool)):
        return data
    if isinstance(data, float) and data.is_integer():
        return int(data)  # orjson decodes integers beyond 64 bits as floats
    raise _ConvError(f"expected integer, got {_json_type(data)}")


def _check_float(data: Any) -> Any:
    if data is None or isinstance(data, float):
        return data
    if isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    raise _ConvError(f"expected number, got {_json_type(data)}")


def _check_str(data: Any) -> Any:
    if data is None or isinstance(data, str):
        return data
    raise _ConvError(f"expected string, got {_json_type(data)}")


def _check_bool(data: Any) -> Any:
    if data is None or isinstance(data, bool):
        return data
    raise _ConvError(f"expected boolean, got {_json_type(data)}")


def _check_dict(data: Any) -> Any:
    if data is None or isinstance(data, dict):
        return data
    raise _ConvError(f"expected object, got {_json_type(data)}")


def _check_list(data: Any) -> Any:
    if data is None or isinstance(data, list):
        return data
    raise _ConvError(f"expected array, got {_json_type(data)}")


_PRIMITIVE_CONVERTERS: dict[Any, _Conv] = {
    int: _check_int,
    float: _check_float,
    str: _check_str,
    bool: _check_bool,
    dict: _check_dict,
    list: _check_list,
}


def _is_untyped(tp: object) -> bool:
    return tp is None or tp is _NoneType or tp is Any or tp is object or tp is inspect.Parameter.empty


class _Builder:
    """Builds converters for one top-level type; results are published when complete.

    Publishing only complete results keeps the lock-free cache lookups safe while recursive
    dataclasses (whose converters refer to themselves) are being built.
    """

    def __init__(self) -> None:
        self.done: dict[Any, _Conv | None] = {}

    def get(self, tp: Any) -> _Conv | None:
        try:
            if tp in _CONVERTERS:
                return _CONVERTERS[tp]
            if tp in self.done:
                return self.done[tp]
        except TypeError:  # unhashable hint (e.g. Annotated with unhashable metadata)
            return self.build(tp)
        conv = self.build(tp)
        self.done[tp] = conv
        return conv

    def build(self, tp: Any) -> _Conv | None:
        if _is_untyped(tp) or isinstance(tp, TypeVar | str | typing.ForwardRef):
            return None
        origin = typing.get_origin(tp)
        if origin is not None:
            return self._generic(tp, origin, typing.get_args(tp))
        if isinstance(tp, typing.NewType):
            return self.get(tp.__supertype__)
        if not isinstance(tp, type):
            return None
        prim = _PRIMITIVE_CONVERTERS.get(tp)
        if prim is not None:
            return prim
        if tp is tuple or tp is set or tp is frozenset:
            return self._generic(tp, tp, ())
        if _is_pydantic_model_type(tp):
            return _pydantic_converter(tp)
        if issubclass(tp, msgspec.Struct):
            return _msgspec_converter(tp)
        if dataclasses.is_dataclass(tp):
            return self._dataclass(tp)
        if typing_extensions.is_typeddict(tp):
            return _check_dict
        if issubclass(tp, enum.Enum):
            return _enum_converter(tp)
        if issubclass(tp, datetime.date | datetime.time):
            return _isoformat_converter(tp)
        if issubclass(tp, uuid.UUID):
            return _uuid_converter
        if issubclass(tp, decimal.Decimal):
            return _decimal_converter
        if issubclass(tp, tuple) and hasattr(tp, "_fields"):
            return self._namedtuple(tp)
        return None

    # -- generics -----------------------------------------------------------

    def _generic(self, tp: Any, origin: Any, args: tuple[Any, ...]) -> _Conv | None:
        if origin is typing.Annotated:
            return self.get(args[0])
        if origin is typing.Union or origin is types.UnionType:
            return self._union(tp, args)
        if origin is typing.Literal:
            return _literal_converter(tp, args)
        if origin in _SEQUENCE_ORIGINS:
            return self._sequence(args[0] if args else Any)
        if origin in _SET_ORIGINS:
            return self._set(frozenset if origin is frozenset else set, args[0] if args else Any)
        if origin is tuple:
            return self._tuple(args)
        if origin in _MAPPING_ORIGINS:
            return self._mapping(args[0] if args else Any, args[1] if len(args) > 1 else Any)
        if isinstance(origin, type) and (dataclasses.is_dataclass(origin) or _is_pydantic_model_type(origin)):
            if _is_pydantic_model_type(tp):  # parametrized pydantic generic models are classes
                return _pydantic_converter(tp)
            return self.get(origin)
        return None

    def _union(self, tp: Any, args: tuple[Any, ...]) -> _Conv | None:
        arms = [a for a in args if a is not _NoneType]
        convs = [self.get(a) for a in arms]
        structured = [c for c in convs if c is not None]
        if not structured:
            return None
        if len(arms) == 1:
            return structured[0]  # Optional[X]: every converter lets None through
        lenient = len(structured) != len(convs)
        name = _type_name(tp)

        def convert(data: Any) -> Any:
            if data is None:
                return None
            for conv in structured:
                try:
                    return conv(data)
                except _ConvError:
                    pass
            if lenient:
                return data
            raise _ConvError(f"expected {name}, got {_json_type(data)}")

        return convert

    def _sequence(self, elem: Any) -> _Conv:
        conv = self.get(elem)
        if conv is None:
            return _check_list
        item_conv: _Conv = conv

        def convert(data: Any) -> Any:
            if data is None:
                return None
            if not isinstance(data, list):
                raise _ConvError(f"expected array, got {_json_type(data)}")
            out = []
            for i, item in enumerate(data):
                try:
                    out.append(item_conv(item))
                except _ConvError as e:
                    raise e.at(i) from None
            return out

        return convert

    def _set(self, factory: type[set[Any]] | type[frozenset[Any]], elem: Any) -> _Conv:
        conv = self.get(elem)

        def convert(data: Any) -> Any:
            if data is None:
                return None
            if not isinstance(data, list | set | frozenset):
                raise _ConvError(f"expected array, got {_json_type(data)}")
            if conv is None:
                return factory(data)
            items = []
            for i, item in enumerate(data):
                try:
                    items.append(conv(item))
                except _ConvError as e:
                    raise e.at(i) from None
            return factory(items)

        return convert

    def _tuple(self, args: tuple[Any, ...]) -> _Conv:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            variadic = self.get(args[0]) if args else None

            def convert_variadic(data: Any) -> Any:
                if data is None:
                    return None
                if not isinstance(data, list | tuple):
                    raise _ConvError(f"expected array, got {_json_type(data)}")
                if variadic is None:
                    return tuple(data)
                items = []
                for i, item in enumerate(data):
                    try:
                        items.append(variadic(item))
                    except _ConvError as e:
                        raise e.at(i) from None
                return tuple(items)

            return convert_variadic
        if args == ((),):  # tuple[()]
            args = ()
        convs = [self.get(a) for a in args]
        size = len(convs)

        def convert_fixed(data: Any) -> Any:
            if data is None:
                return None
            if not isinstance(data, list | tuple):
                raise _ConvError(f"expected array, got {_json_type(data)}")
            if len(data) != size:
                raise _ConvError(f"expected array of {size} items, got {len(data)}")
            items = []
            for i, (conv, item) in enumerate(zip(convs, data, strict=True)):
                try:
                    items.append(item if conv is None else conv(item))
                except _ConvError as e:
                    raise e.at(i) from None
            return tuple(items)

        return convert_fixed

    def _mapping(self, key: Any, value: Any) -> _Conv:
        key_conv = _int_key if key is int else None
        val_conv = self.get(value)
        if key_conv is None and val_conv is None:
            return _check_dict

        def convert(data: Any) -> Any:
            if data is None:
                return None
            if not isinstance(data, dict):
                raise _ConvError(f"expected object, got {_json_type(data)}")
            out = {}
            for k, v in data.items():
                try:
                    out[k if key_conv is None else key_conv(k)] = v if val_conv is None else val_conv(v)
                except _ConvError as e:
                    raise e.at(str(k)) from None
            return out

        return convert

    # -- classes ------------------------------------------------------------

    def _dataclass(self, cls: type[Any]) -> _Conv:
        holder: list[_Conv] = []

        def forward(data: Any) -> Any:  # for self-referencing dataclasses
            return holder[0](data)

        self.done[cls] = forward
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # unresolvable forward references: use what is there
            hints = {}
        specs: list[tuple[str, _Conv | None]] = []
        required: list[str] = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            hint = hints.get(f.name, Any if isinstance(f.type, str) else f.type)
            specs.append((f.name, self.get(hint)))
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        name = cls.__qualname__

        def convert(data: Any) -> Any:
            if data is None or isinstance(data, cls):
                return data
            if not isinstance(data, dict):
                raise _ConvError(f"expected object for {name}, got {_json_type(data)}")
            missing = [n for n in required if n not in data]
            if missing:
                fields = ", ".join(repr(n) for n in missing)
                raise _ConvError(
                    f"missing required field{'s' if len(missing) > 1 else ''} {fields} for {name}"
                )
            kwargs: dict[str, Any] = {}
            for fname, conv in specs:
                if fname in data:
                    value = data[fname]
                    if conv is not None:
                        try:
                            value = conv(value)
                        except _ConvError as e:
                            raise e.at(fname) from None
                    kwargs[fname] = value
            try:
                return cls(**kwargs)
            except (TypeError, ValueError) as e:
                raise _ConvError(f"cannot construct {name}: {e}") from e

        holder.append(convert)
        self.done[cls] = convert
        return convert

    def _namedtuple(self, cls: type[Any]) -> _Conv:
        name = cls.__qualname__

        def convert(data: Any) -> Any:
            if data is None or isinstance(data, cls):
                return data
            try:
                if isinstance(data, list):
                    return cls(*data)
                if isinstance(data, dict):
                    return cls(**data)
            except TypeError as e:
                raise _ConvError(f"cannot construct {name}: {e}") from e
            raise _ConvError(f"expected array for {name}, got {_json_type(data)}")

        return convert


def _int_key(key: Any) -> Any:
    if isinstance(key, str):
        try:
            return int(key)
        except ValueError:
            raise _ConvError(f"expected integer key, got {key!r}") from None
    return key


def _literal_converter(tp: Any, values: tuple[Any, ...]) -> _Conv:
    allowed = set()
    for v in values:
        allowed.add((type(v.value) if isinstance(v, enum.Enum) else type(v), v))
    name = _type_name(tp)

    def convert(data: Any) -> Any:
        if data is None or (type(data), data) in allowed:
            return data
        for v in values:  # enum members arrive as their values
            if isinstance(v, enum.Enum) and v.value == data and type(v.value) is type(data):
                return v
        raise _ConvError(f"expected {name}, got {data!r}")

    return convert


def _pydantic_converter(model: Any) -> _Conv:
    from pydantic import ValidationError

    name = _type_name(model)

    def convert(data: Any) -> Any:
        if data is None or isinstance(data, model):
            return data
        try:
            return model.model_validate(data)
        except ValidationError as e:
            raise _ConvError(f"invalid {name}: {_pydantic_errors(e)[1]}") from None

    return convert


def _msgspec_converter(tp: Any) -> _Conv:
    name = _type_name(tp)

    def convert(data: Any) -> Any:
        if data is None or isinstance(data, tp):
            return data
        try:
            return msgspec.convert(data, tp)
        except msgspec.ValidationError as e:
            raise _ConvError(f"invalid {name}: {e}") from None

    return convert


def _enum_converter(tp: type[enum.Enum]) -> _Conv:
    name = tp.__qualname__

    def convert(data: Any) -> Any:
        if data is None or isinstance(data, tp):
            return data
        try:
            return tp(data)
        except ValueError:
            raise _ConvError(f"{data!r} is not a valid {name}") from None

    return convert


def _isoformat_converter(tp: type[datetime.date] | type[datetime.time]) -> _Conv:
    name = tp.__qualname__
    parse: Callable[[str], Any] = tp.fromisoformat

    def convert(data: Any) -> Any:
        if data is None or isinstance(data, tp):
            return data
        if isinstance(data, str):
            try:
                return parse(data)
            except ValueError as e:
                raise _ConvError(f"invalid {name}: {e}") from None
        raise _ConvError(f"expected ISO 8601 string for {name}, got {_json_type(data)}")

    return convert


def _uuid_converter(data: Any) -> Any:
    if data is None or isinstance(data, uuid.UUID):
        return data
    if isinstance(data, str):
        try:
            return uuid.UUID(data)
        except ValueError as e:
            raise _ConvError(f"invalid UUID: {e}") from None
    raise _ConvError(f"expected string for UUID, got {_json_type(data)}")


def _decimal_converter(data: Any) -> Any:
    if data is None or isinstance(data, decimal.Decimal):
        return data
    if isinstance(data, str | int | float) and not isinstance(data, bool):
        try:
            return decimal.Decimal(str(data))
        except decimal.InvalidOperation:
            raise _ConvError(f"invalid Decimal: {data!r}") from None
    raise _ConvError(f"expected string or number for Decimal, got {_json_type(data)}")


_CONVERTERS: dict[Any, _Conv | None] = {}
_BUILD_LOCK = threading.RLock()


def _converter_for(tp: Any) -> _Conv | None:
    try:
        return _CONVERTERS[tp]
    except KeyError:
        pass
    except TypeError:
        with _BUILD_LOCK:
            return _Builder().build(tp)
    with _BUILD_LOCK:
        builder = _Builder()
        conv = builder.get(tp)
        _CONVERTERS.update(builder.done)
        return conv


# ---------------------------------------------------------------------------
# Per-type serde selection
# ---------------------------------------------------------------------------

_UNTYPED_JSON: JsonSerde[Any] = JsonSerde()
_SERDES: dict[Any, Serde[Any]] = {}


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated[...]`` and ``NewType`` wrappers."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif isinstance(tp, typing.NewType):
            tp = tp.__supertype__
        else:
            return tp


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
