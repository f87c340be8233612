"""The type-directed converter compiler: JSON-decoded plain values -> values of the hinted type.

:func:`_converter_for` compiles a type hint once into a function that checks a decoded JSON value and builds
the hinted value from it (dataclasses, named tuples, enums, dates, UUIDs, decimals, generics of those),
raising :class:`_ConvError` with the path of the bad part. Used by the JSON serdes and the input check.
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import datetime
import decimal
import enum
import threading
import types
import typing
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import msgspec
import typing_extensions

from unbroken.sdk.serde.base import (
    _is_pydantic_model_type,
    _is_untyped,
    _json_type,
    _NoneType,
    _pydantic_errors,
    _type_name,
)

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


def _type_check(py_type: type[Any], json_type: str) -> _Conv:
    """A converter that lets ``null`` and values of ``py_type`` through as they are."""

    def check(data: Any) -> Any:
        if data is None or isinstance(data, py_type):
            return data
        raise _ConvError(f"expected {json_type}, got {_json_type(data)}")

    return check


_check_str = _type_check(str, "string")
_check_bool = _type_check(bool, "boolean")
_check_dict = _type_check(dict, "object")
_check_list = _type_check(list, "array")


def _convert_items(conv: _Conv, items: Iterable[Any]) -> list[Any]:
    """``conv`` of each item, in order; a failure names the item's index."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append(conv(item))
        except _ConvError as e:
            raise e.at(i) from None
    return out


_PRIMITIVE_CONVERTERS: dict[Any, _Conv] = {
    int: _check_int,
    float: _check_float,
    str: _check_str,
    bool: _check_bool,
    dict: _check_dict,
    list: _check_list,
}


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
            return _convert_items(item_conv, data)

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
            return factory(_convert_items(conv, data))

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
                return tuple(_convert_items(variadic, data))

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
