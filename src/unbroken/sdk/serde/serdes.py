"""The serdes with a fixed wire format: raw bytes, plain JSON, pydantic models, msgspec structs, and JSON
checked by a compiled converter (see :mod:`unbroken.sdk.serde.convert`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, overload

import msgspec
import orjson

from unbroken.sdk.serde.base import Serde, SerdeError, T, _dumps, _invalid_json, _pydantic_errors, _type_name
from unbroken.sdk.serde.convert import _Conv, _ConvError

if TYPE_CHECKING:
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")


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
        return _dumps(obj)

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
        return _dumps(obj)

    def __repr__(self) -> str:
        return f"_ConvertingJsonSerde({_type_name(self.type_hint)})"
