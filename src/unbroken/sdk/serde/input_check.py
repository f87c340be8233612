"""A handler's input, checked against its type hint before the invocation is accepted.

Without it an empty body or ``null`` reached ``greet(ctx, name: str)`` as ``None`` ("Hello None!"), and a
bad input made the handler raise inside the invocation, which was then retried for an hour while it held
its object's key. The ingress calls :func:`input_validator`'s result (through ``HandlerSchema``, so the
ingress does not import the SDK) and answers 400 naming the handler, the expected type and what is wrong;
nothing is stored and nothing runs.

The check is a strict ``msgspec`` decode built once per handler, at start-up (~0.1 µs for a string, ~1 µs
for a small dataclass, on top of the ~100 µs a request costs):
``null`` is refused wherever the hint does not allow it, at any depth, and required fields of dataclasses,
TypedDicts and msgspec structs must be there. Types msgspec does not know (pydantic models, inside
containers too) go through ``dec_hook`` to their own validation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from unbroken.sdk.serde.base import (
    Serde,
    SerdeError,
    _is_pydantic_model_type,
    _is_untyped,
    _pydantic_problems,
    _type_name,
    _unwrap,
)
from unbroken.sdk.serde.convert import _ConvError, _converter_for
from unbroken.sdk.serde.select import DefaultSerde, serde_for_type
from unbroken.sdk.serde.serdes import JsonSerde, PydanticJsonSerde

__all__ = ["InputValidator", "input_validator"]

_JSON_SERDES: tuple[type[Serde[Any]], ...] = (
    DefaultSerde,
    JsonSerde,
    PydanticJsonSerde,
)  # given explicitly: JSON
InputValidator = Callable[[bytes], "str | None"]  # the body -> None when it is valid, else what is wrong


def input_validator(handler: str, tp: Any, serde: Serde[Any]) -> InputValidator | None:
    """The check for the input of ``handler`` (``Service/handler``), or None when nothing can be checked.

    Nothing is checked for an untyped input, ``bytes``, or a serde of the user's own (its wire format
    need not be JSON): those handlers see the body exactly as sent.
    """
    if _is_untyped(tp) or _is_untyped(_unwrap(tp)) or _unwrap(tp) is bytes:
        return None
    if serde is not serde_for_type(tp) and type(serde) not in _JSON_SERDES:
        return None
    return _build(handler, tp, serde)


def _build(handler: str, tp: Any, serde: Serde[Any]) -> InputValidator:
    expects = f"{handler} expects {_type_name(tp)}"
    if _is_pydantic_model_type(_unwrap(tp)):
        return _pydantic_check(expects, _unwrap(tp))
    try:
        decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(tp, dec_hook=_dec_hook)
    except (TypeError, ValueError):  # a hint msgspec cannot read (unresolved forward reference, ...)
        return _fallback(expects, serde)
    none_ok = _accepts_none(decoder)

    def check(body: bytes) -> str | None:
        if not body:
            return None if none_ok else f"{expects}, got an empty body"
        try:
            decoder.decode(body)
        except msgspec.ValidationError as exc:
            return f"{expects}: {_describe(exc)}"
        except msgspec.DecodeError as exc:
            return f"{expects}: the body is not valid JSON ({exc})"
        return None

    return check


def _pydantic_check(expects: str, model: Any) -> InputValidator:
    """A pydantic model validates the body itself, as its serde will (twice as fast as via msgspec)."""
    from pydantic import ValidationError

    def check(body: bytes) -> str | None:
        if not body:
            return f"{expects}, got an empty body"
        try:
            model.model_validate_json(body)
        except ValidationError as exc:
            return f"{expects}: {_pydantic_message(exc)}"
        return None

    return check


def _accepts_none(decoder: msgspec.json.Decoder[Any]) -> bool:
    try:
        decoder.decode(b"null")
    except msgspec.ValidationError:
        return False
    return True


def _fallback(expects: str, serde: Serde[Any]) -> InputValidator:
    """The handler's own deserialization, plus: no ``None`` at the top (the hint did not allow it)."""

    def check(body: bytes) -> str | None:
        try:
            value = serde.deserialize(body)
        except SerdeError as exc:
            return f"{expects}: {exc}"
        return f"{expects}, got {'null' if body else 'an empty body'}" if value is None else None

    return check


def _dec_hook(tp: Any, obj: Any) -> Any:
    """Values of types msgspec has no decoder for: pydantic models validate themselves; other classes go
    through the SDK's converter when it has one, and pass unchecked otherwise (the handler's serde
    decides)."""
    if _is_pydantic_model_type(tp):
        from pydantic import ValidationError

        try:
            return tp.model_validate(obj)
        except ValidationError as exc:
            raise ValueError(_pydantic_message(exc)) from None
    convert = _converter_for(tp)
    if convert is None:
        return obj
    try:
        return convert(obj)
    except _ConvError as exc:
        raise ValueError(exc.describe()) from None


def _pydantic_message(exc: Any) -> str:
    return _pydantic_problems(exc.errors(include_url=False))


def _describe(exc: msgspec.ValidationError) -> str:
    # msgspec says "Expected `str`, got `null` - at `$.name`": keep it, in plain quotes.
    return str(exc).replace("`", "'")
